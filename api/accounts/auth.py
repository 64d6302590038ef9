"""Who is asking: the session of a request (``Authorization: Bearer <token>``, or the
``tandem_session`` cookie a browser got at sign-in), and the second factor that actions touching
secrets also need (a TOTP code in the ``Tandem-TOTP`` header, never usable twice)."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Annotated

import pyotp
from fastapi import Depends, Header, Request
from sqlalchemy import Connection, Engine, select, update

from api.accounts.crypto import Box, token_hash
from api.problems import ProblemException
from tandem.db import accounts as t

COOKIE = "tandem_session"
STEP = 30  # seconds per TOTP code (RFC 6238's default, what authenticator apps use)


@dataclass(frozen=True)
class Session:
    address: str
    token_hash: str
    expires_at: float


def _unauthorized(detail: str) -> ProblemException:
    return ProblemException(401, "unauthorized", "Sign-in required", detail)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(COOKIE) or None


def current_session(request: Request) -> Session:
    token = bearer_token(request)
    if token is None:
        raise _unauthorized(
            "This route needs a session: sign in (POST /v1/auth/nonce, then POST "
            "/v1/auth/sign-in) and send the token as `Authorization: Bearer <token>`."
        )
    engine: Engine = request.app.state.engine
    hashed = token_hash(token)
    with engine.connect() as conn:
        row = conn.execute(
            select(t.sessions.c.address, t.sessions.c.expires_at).where(
                t.sessions.c.token_hash == hashed,
                t.sessions.c.revoked_at.is_(None),
                t.sessions.c.expires_at > time.time(),
            )
        ).first()
    if row is None:
        raise _unauthorized("The session is unknown, signed out or expired. Sign in again.")
    return Session(row.address, hashed, row.expires_at)


SignedIn = Annotated[Session, Depends(current_session)]

TotpHeader = Annotated[
    str | None,
    Header(
        alias="Tandem-TOTP",
        description="the current code of the address's authenticator (routes touching secrets)",
    ),
]


def _matching_step(seed: str, code: str, now: float) -> int | None:
    """The time step whose code is ``code`` (this one, or one step either side)."""
    totp = pyotp.TOTP(seed, interval=STEP)
    here = int(now // STEP)
    for step in (here, here - 1, here + 1):
        if hmac.compare_digest(totp.at(step * STEP), code):
            return step
    return None


def check_second_factor(
    conn: Connection, box: Box, address: str, code: str | None, now: float
) -> None:
    """Refuses unless ``code`` is a fresh TOTP code of the address's enrolled authenticator;
    a code, once accepted, is spent (a later request cannot replay it)."""
    row = conn.execute(
        select(t.second_factors).where(t.second_factors.c.address == address)
    ).first()
    if row is None or row.confirmed_at is None:
        raise ProblemException(
            403,
            "second-factor-not-enrolled",
            "Second factor required",
            "This action touches secrets and needs a second factor, which this address has not "
            "enrolled. Enrol one (POST /v1/account/totp, then POST /v1/account/totp/confirm).",
        )
    if not code or not code.isdigit():
        raise ProblemException(
            403,
            "second-factor-required",
            "Second factor required",
            "This action touches secrets: send the authenticator's current code in the "
            "Tandem-TOTP header.",
        )
    step = _matching_step(box.open(row.seed), code, now)
    if step is None or (row.last_step is not None and step <= row.last_step):
        raise ProblemException(
            403,
            "second-factor-refused",
            "Second factor refused",
            "The code is wrong, too old or used already. Wait for the next code and try again.",
        )
    conn.execute(
        update(t.second_factors).where(t.second_factors.c.address == address).values(last_step=step)
    )


def confirm_code(seed: str, code: str, now: float) -> int | None:
    return _matching_step(seed, code, now) if code.isdigit() else None

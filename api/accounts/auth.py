"""Who is asking: the session of a request (``Authorization: Bearer <token>``, or the
``tandem_session`` cookie a browser got at sign-in), and the second factor that actions touching
secrets also need (a TOTP code in the ``Tandem-TOTP`` header, never usable twice).

A request authenticated by the cookie alone that changes something must also carry the
``Tandem-CSRF`` header (any value; a cross-site form cannot add one) or an ``Origin`` the
sign-in accepts: SameSite=Strict is the first defence against cross-site requests, this the
second.

Wrong TOTP codes are counted per address in the database (every worker sees the same count):
after ``api.totp_max_failures`` of them in a row, codes are refused with a 429 for
``api.totp_lockout_seconds``, doubling with each further wrong code, until a right one."""

from __future__ import annotations

import hmac
import math
import re
import time
from dataclasses import dataclass
from typing import Annotated

import pyotp
from fastapi import Depends, Header, Request
from sqlalchemy import Engine, or_, select, update

from api.accounts.crypto import Box, token_hash
from api.problems import ProblemException
from tandem.config import ApiSettings
from tandem.db import accounts as t

COOKIE = "tandem_session"
CSRF_HEADER = "Tandem-CSRF"
STEP = 30  # seconds per TOTP code (RFC 6238's default, what authenticator apps use)
CODE = re.compile(r"[0-9]{6}")  # ASCII digits only: str.isdigit() takes '²' too
LONGEST_LOCKOUT = 86_400.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    address: str
    token_hash: str
    expires_at: float


def _unauthorized(detail: str) -> ProblemException:
    return ProblemException(401, "unauthorized", "Sign-in required", detail)


def bearer_token(request: Request) -> tuple[str, bool] | None:
    """The request's token, and whether it came from the cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else None


def _check_cross_site(request: Request) -> None:
    """A state-changing request carried by the cookie alone needs the custom header or an
    accepted Origin."""
    if request.method in SAFE_METHODS or request.headers.get(CSRF_HEADER):
        return
    origin = request.headers.get("origin")
    allowed: frozenset[str] = request.app.state.csrf_origins
    if origin is not None and origin.rstrip("/").lower() in allowed:
        return
    raise ProblemException(
        403,
        "cross-site-refused",
        "Cross-site request refused",
        "This request changes something and carries the session cookie alone: send the "
        f"{CSRF_HEADER} header (any value) from the dApp, or send the token as "
        "`Authorization: Bearer <token>`.",
    )


def current_session(request: Request) -> Session:
    found = bearer_token(request)
    if found is None:
        raise _unauthorized(
            "This route needs a session: sign in (POST /v1/auth/nonce, then POST "
            "/v1/auth/sign-in) and send the token as `Authorization: Bearer <token>`."
        )
    token, by_cookie = found
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
    if by_cookie:
        _check_cross_site(request)
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
        if hmac.compare_digest(totp.at(step * STEP).encode(), code.encode()):
            return step
    return None


def _locked(until: float, now: float) -> ProblemException:
    wait = max(1, math.ceil(until - now))
    return ProblemException(
        429,
        "second-factor-locked",
        "Second factor locked",
        f"Too many wrong codes: no code is checked for {wait} s. Wait, then send the "
        "authenticator's current code (each further wrong code doubles the wait).",
        headers={"Retry-After": str(wait)},
    )


def lockout_seconds(failures: int, settings: ApiSettings) -> float:
    over = failures - settings.totp_max_failures
    return float(min(settings.totp_lockout_seconds * 2 ** min(over, 32), LONGEST_LOCKOUT))


def check_second_factor(
    engine: Engine,
    box: Box,
    address: str,
    code: str | None,
    now: float,
    settings: ApiSettings,
    *,
    spend: bool = True,
) -> None:
    """Refuses unless ``code`` is a fresh TOTP code of the address's enrolled authenticator;
    a code, once accepted, is spent (a later or concurrent request cannot use it again).
    ``spend=False`` checks a code without spending it, for an action that asks something else
    first (an exchange, for a key) and then spends it with ``spend=True`` as it acts.

    Each attempt is counted before its code is checked, in a transaction of its own (so a
    refusal does not undo it): the attempt that reaches the limit locks the second factor at
    once, so concurrent guesses cannot slip past the limit; a right code unlocks it."""
    f = t.second_factors
    with engine.connect() as conn:
        row = conn.execute(select(f).where(f.c.address == address)).first()
    if row is None or row.confirmed_at is None:
        raise ProblemException(
            403,
            "second-factor-not-enrolled",
            "Second factor required",
            "This action touches secrets and needs a second factor, which this address has not "
            "enrolled. Enrol one (POST /v1/account/totp with a signed message, then POST "
            "/v1/account/totp/confirm).",
        )
    if row.locked_until is not None and row.locked_until > now:
        raise _locked(row.locked_until, now)
    if code is None or not CODE.fullmatch(code):
        raise ProblemException(
            403,
            "second-factor-required",
            "Second factor required",
            "This action touches secrets: send the authenticator's current code (6 digits) in "
            "the Tandem-TOTP header.",
        )
    with engine.begin() as conn:
        # The update takes the row's write lock first: concurrent attempts wait here and then
        # see the lockout this one may set.
        charged = conn.execute(
            update(f)
            .where(f.c.address == address, or_(f.c.locked_until.is_(None), f.c.locked_until <= now))
            .values(failures=f.c.failures + 1)
        )
        if charged.rowcount != 1:
            until = conn.execute(select(f.c.locked_until).where(f.c.address == address)).scalar()
            raise _locked(float(until or now + 1), now)
        failures = int(
            conn.execute(select(f.c.failures).where(f.c.address == address)).scalar_one()
        )
        if failures >= settings.totp_max_failures:
            conn.execute(
                update(f)
                .where(f.c.address == address)
                .values(locked_until=now + lockout_seconds(failures, settings))
            )
    step = _matching_step(box.open(row.seed), code, now)
    refused = ProblemException(
        403,
        "second-factor-refused",
        "Second factor refused",
        "The code is wrong, too old or used already. Wait for the next code and try again.",
    )
    if step is None:
        raise refused
    fresh = or_(f.c.last_step.is_(None), f.c.last_step < step)
    with engine.begin() as conn:
        # Spent with one conditional update: of concurrent requests with one code, one wins.
        # Checked only, the code is left unspent (the failures it was counted as cleared).
        values = {"failures": 0, "locked_until": None} | ({"last_step": step} if spend else {})
        spent = conn.execute(update(f).where(f.c.address == address, fresh).values(**values))
    if spent.rowcount != 1:
        raise refused


def confirm_code(seed: str, code: str, now: float) -> int | None:
    return _matching_step(seed, code, now) if CODE.fullmatch(code) else None

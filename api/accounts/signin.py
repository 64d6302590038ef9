"""Sign-In with Ethereum (EIP-4361): single-use nonces kept in the database (any worker may
issue one and another check it), and every check of a signed message done here, explicitly:
the ``siwe`` package parses the message, but its ``verify`` skips the domain, nonce and chain
id unless told, and rebuilds the text it checks the signature of; the signature is checked
here on the exact text the wallet signed."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import secrets
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.messages import encode_defunct
from sqlalchemy import Connection, delete, func, insert, select, update

from api.problems import ProblemException
from tandem.db import accounts as t

with warnings.catch_warnings():
    # abnf 2.8 warns about the grammar siwe 4.4 ships; the grammar works as it is.
    warnings.simplefilter("ignore")
    from siwe import SiweMessage

# How far a wallet's clock may run ahead of the server's.
CLOCK_SKEW = 60.0
# The longest message and signature read. The EIP-4361 parser's time grows with the square of
# the message's length (2 kB: a few tenths of a second; 10 kB: seconds), so a message is also
# parsed only when its nonce is one this server gave and nobody used yet.
MAX_MESSAGE = 2048
MAX_SIGNATURE = 132  # 0x and 65 bytes in hexadecimal
NONCE_LINE = re.compile(r"^Nonce: ([A-Za-z0-9]{8,64})$", re.MULTILINE)

# What a signed message for an action (not a sign-in) must state, exactly: the wallet shows it.
ACTIONS = {
    "enrol-totp": "Enrol a new TOTP authenticator as the second factor of this address on "
    "Tandem. Every other session of this address is signed out.",
    "reset-totp": "Remove the TOTP authenticator of this address on Tandem. Every other "
    "session of this address is signed out.",
}


@dataclass(frozen=True)
class Expected:
    """What a message must name to be accepted here: one of the (domain, origin) pairs of the
    settings (never a request's Host), and the chain id."""

    origins: tuple[tuple[str, str], ...]  # (domain, scheme://host[:port]); the first is told
    chain_id: int

    @property
    def domain(self) -> str:
        return self.origins[0][0]

    @property
    def origin(self) -> str:
        return self.origins[0][1]


def client_key(host: str | None) -> str:
    """Who asks for nonces, hashed: an IPv4 address, or the /64 of an IPv6 address (one
    subscriber's usual share)."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        name = host or "unknown"
    else:
        if ip.version == 6 and ip.ipv4_mapped is None:
            name = str(ipaddress.ip_network(f"{ip}/64", strict=False))
        else:
            name = str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)
    return hashlib.sha256(f"tandem-nonce-client:{name}".encode()).hexdigest()


def issue_nonce(
    conn: Connection, now: float, lifetime: int, client: str, max_pending: int
) -> tuple[str, float]:
    """A new nonce and when it expires, unless ``client`` holds ``max_pending`` unused ones
    already (a 429 that says when the oldest expires); expired nonces are forgotten on the way."""
    n = t.nonces
    conn.execute(delete(n).where(n.c.expires_at < now - lifetime))
    pending, oldest = conn.execute(
        select(func.count(), func.min(n.c.expires_at)).where(
            n.c.client == client, n.c.used_at.is_(None), n.c.expires_at > now
        )
    ).one()
    if pending >= max_pending:
        wait = max(1, math.ceil(float(oldest) - now))
        raise ProblemException(
            429,
            "too-many-nonces",
            "Too many unused nonces",
            f"This client holds {pending} nonces it has not signed in with. Use one, or ask "
            f"again in {wait} s when the oldest expires.",
            headers={"Retry-After": str(wait)},
        )
    nonce = secrets.token_hex(16)  # alphanumeric, as EIP-4361 asks (at least 8 characters)
    expires = now + lifetime
    conn.execute(insert(n).values(nonce=nonce, expires_at=expires, used_at=None, client=client))
    return nonce, expires


def _refused(why: str, status: int = 401) -> ProblemException:
    if status == 401:
        return ProblemException(
            401,
            "sign-in-refused",
            "Sign-in refused",
            f"{why}. Ask for a new nonce (POST /v1/auth/nonce), sign a new message and try again.",
        )
    return ProblemException(
        status,
        "signature-refused",
        "Signed message refused",
        f"{why}. Ask for a new nonce (POST /v1/auth/nonce), sign a new message and try again.",
    )


def _not_a_message() -> ProblemException:
    return ProblemException(
        400,
        "invalid-message",
        "Not a sign-in message",
        "The message is not an EIP-4361 (Sign-In with Ethereum) message with an EIP-55 "
        "checksummed address. Build it with a SIWE library and sign it as it is.",
    )


def _time(value: Any) -> float:
    text = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def verify(
    conn: Connection,
    message: str,
    signature: str,
    expected: Expected,
    now: float,
    lifetime: int,
    *,
    action: str | None = None,
) -> str:
    """The address that signed ``message``, once every check passed and its nonce is spent.

    ``action`` None: a sign-in, whose statement may be anything but an action's; otherwise the
    statement must be ``ACTIONS[action]`` exactly, and refusals are 403s (the session stays)."""
    status = 401 if action is None else 403
    if len(message) > MAX_MESSAGE or len(signature) > MAX_SIGNATURE:
        raise _not_a_message()
    # Before the (costly) parse: the nonce must be one given out, unused and unexpired.
    found = NONCE_LINE.search(message)
    if found is None:
        raise _not_a_message()
    outstanding = conn.execute(
        select(t.nonces.c.nonce).where(
            t.nonces.c.nonce == found.group(1),
            t.nonces.c.used_at.is_(None),
            t.nonces.c.expires_at > now,
        )
    ).first()
    if outstanding is None:
        raise _refused("The nonce is unknown, used already or expired", status)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = SiweMessage.from_message(message)
    except Exception:  # the parser raises many kinds; all mean "not an EIP-4361 message"
        raise _not_a_message() from None
    if parsed.nonce != found.group(1):
        raise _not_a_message()
    origins = dict(expected.origins)
    if parsed.domain not in origins:
        raise _refused(f"The message is for {parsed.domain}, not {expected.domain}", status)
    uri = urlsplit(str(parsed.uri))
    if f"{uri.scheme}://{uri.netloc}" != origins[parsed.domain]:
        raise _refused(f"The message's URI is not on {origins[parsed.domain]}", status)
    if parsed.chain_id != expected.chain_id:
        raise _refused(
            f"The message is for chain {parsed.chain_id}, not {expected.chain_id}", status
        )
    statement = parsed.statement or ""
    if action is None and statement in ACTIONS.values():
        raise _refused("The message states an account action, not a sign-in", status)
    if action is not None and statement != ACTIONS[action]:
        raise _refused(f"The message's statement must be exactly: {ACTIONS[action]!r}", status)
    issued = _time(parsed.issued_at)
    if issued > now + CLOCK_SKEW:
        raise _refused("The message was issued in the future", status)
    if issued < now - lifetime:
        raise _refused("The message was issued too long ago", status)
    if parsed.expiration_time is not None and _time(parsed.expiration_time) <= now:
        raise _refused("The message has expired", status)
    if parsed.not_before is not None and _time(parsed.not_before) > now + CLOCK_SKEW:
        raise _refused("The message is not valid yet", status)
    try:
        signer = Account.recover_message(encode_defunct(text=message), signature=signature)
    except Exception:  # a malformed signature: wrong length, bad hex, bad v
        signer = None
    if signer != parsed.address:
        raise _refused("The signature is not the message's address's", status)
    spent = conn.execute(
        update(t.nonces)
        .where(
            t.nonces.c.nonce == parsed.nonce,
            t.nonces.c.used_at.is_(None),
            t.nonces.c.expires_at > now,
        )
        .values(used_at=now)
    )
    if spent.rowcount != 1:
        raise _refused("The nonce is unknown, used already or expired", status)
    return str(parsed.address)

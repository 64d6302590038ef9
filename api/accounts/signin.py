"""Sign-In with Ethereum (EIP-4361): single-use nonces kept in the database (any worker may
issue one and another check it), and every check of a signed message done here, explicitly:
the ``siwe`` package parses the message, but its ``verify`` skips the domain, nonce and chain
id unless told, and rebuilds the text it checks the signature of; the signature is checked
here on the exact text the wallet signed."""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.messages import encode_defunct
from sqlalchemy import Connection, delete, insert, update

from api.problems import ProblemException
from tandem.db import accounts as t

with warnings.catch_warnings():
    # abnf 2.8 warns about the grammar siwe 4.4 ships; the grammar works as it is.
    warnings.simplefilter("ignore")
    from siwe import SiweMessage

# How far a wallet's clock may run ahead of the server's.
CLOCK_SKEW = 60.0


@dataclass(frozen=True)
class Expected:
    """What a message must name to sign in here."""

    domain: str
    origin: str  # scheme://host[:port]; the message's URI must be on it
    chain_id: int


def issue_nonce(conn: Connection, now: float, lifetime: int) -> tuple[str, float]:
    """A new nonce and when it expires; expired nonces are forgotten on the way."""
    conn.execute(delete(t.nonces).where(t.nonces.c.expires_at < now - lifetime))
    nonce = secrets.token_hex(16)  # alphanumeric, as EIP-4361 asks (at least 8 characters)
    expires = now + lifetime
    conn.execute(insert(t.nonces).values(nonce=nonce, expires_at=expires, used_at=None))
    return nonce, expires


def _refused(why: str) -> ProblemException:
    return ProblemException(
        401,
        "sign-in-refused",
        "Sign-in refused",
        f"{why}. Ask for a new nonce (POST /v1/auth/nonce), sign a new message and try again.",
    )


def _time(value: Any) -> float:
    text = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def verify(
    conn: Connection, message: str, signature: str, expected: Expected, now: float, lifetime: int
) -> str:
    """The address that signed ``message``, once every check passed and its nonce is spent."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = SiweMessage.from_message(message)
    except Exception:  # the parser raises many kinds; all mean "not an EIP-4361 message"
        raise ProblemException(
            400,
            "invalid-message",
            "Not a sign-in message",
            "The message is not an EIP-4361 (Sign-In with Ethereum) message with an EIP-55 "
            "checksummed address. Build it with a SIWE library and sign it as it is.",
        ) from None
    if parsed.domain != expected.domain:
        raise _refused(f"The message is for {parsed.domain}, not {expected.domain}")
    uri = urlsplit(str(parsed.uri))
    if f"{uri.scheme}://{uri.netloc}" != expected.origin:
        raise _refused(f"The message's URI is not on {expected.origin}")
    if parsed.chain_id != expected.chain_id:
        raise _refused(f"The message is for chain {parsed.chain_id}, not {expected.chain_id}")
    issued = _time(parsed.issued_at)
    if issued > now + CLOCK_SKEW:
        raise _refused("The message was issued in the future")
    if issued < now - lifetime:
        raise _refused("The message was issued too long ago")
    if parsed.expiration_time is not None and _time(parsed.expiration_time) <= now:
        raise _refused("The message has expired")
    if parsed.not_before is not None and _time(parsed.not_before) > now + CLOCK_SKEW:
        raise _refused("The message is not valid yet")
    try:
        signer = Account.recover_message(encode_defunct(text=message), signature=signature)
    except Exception:  # a malformed signature: wrong length, bad hex, bad v
        signer = None
    if signer != parsed.address:
        raise _refused("The signature is not the message's address's")
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
        raise _refused("The nonce is unknown, used already or expired")
    return str(parsed.address)

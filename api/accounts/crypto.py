"""Secrets at rest: session tokens are stored as SHA-256 hashes (a token is 32 random bytes, so
a plain hash is enough), TOTP seeds and webhook signing secrets are encrypted with a Fernet key
from the settings (``api.secret_key``), which is never stored in the database."""

from __future__ import annotations

import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken

from api.problems import ProblemException


def new_token() -> str:
    """A bearer token or a webhook signing secret: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Box:
    """Encrypts and decrypts small secrets with the settings' key."""

    def __init__(self, key: str | None) -> None:
        self._fernet: Fernet | None = None
        if key:
            try:
                self._fernet = Fernet(key.encode())
            except ValueError as exc:
                # The message names the setting, never the key.
                raise ValueError(
                    "api.secret_key is not a Fernet key (urlsafe base64 of 32 bytes); make one "
                    "with `python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'`"
                ) from exc

    @property
    def ready(self) -> bool:
        return self._fernet is not None

    def _need(self) -> Fernet:
        if self._fernet is None:
            raise ProblemException(
                503,
                "secrets-unavailable",
                "Secrets are not configured",
                "This server has no api.secret_key, so it cannot keep second factors or webhook "
                "secrets. Ask the operator to set TANDEM_API__SECRET_KEY.",
            )
        return self._fernet

    def seal(self, secret: str) -> str:
        return self._need().encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._need().decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ProblemException(
                503,
                "secrets-unavailable",
                "Secret cannot be read",
                "A stored secret does not open with this server's api.secret_key (was the key "
                "changed?). Ask the operator.",
            ) from None

"""Envelope encryption of exchange secrets at rest (AES-256-GCM).

Each record gets its own random data key, which encrypts the secret; the data key is stored
wrapped (encrypted) by a key-encryption key (KEK) that never enters the database: it comes from
a file or the ``TANDEM_BRIDGE_KEK`` variable, one ``<id>:<base64 of 32 bytes>`` a line, the
newest last. Rotating the KEK re-wraps the data keys (``Keyring.rewrap``): the secrets'
ciphertexts stay as they are and nobody registers a key again. The record's identity (who,
which exchange, which API key) is bound in as associated data, so a sealed secret moved to
another record does not open.

The API seals (it has the secret in the registration request anyway); only the bridge worker
opens.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tandem.errors import ConfigError

KEK_ENV = "TANDEM_BRIDGE_KEK"
NONCE = 12


@dataclass(frozen=True)
class Sealed:
    """What the database keeps: the KEK's id, the wrapped data key and the ciphertext (each
    nonce || AES-GCM output, base64)."""

    kek_id: str
    wrapped_key: str
    ciphertext: str


@dataclass(frozen=True)
class Credentials:
    api_key: str
    secret: str
    passphrase: str | None = None

    def __repr__(self) -> str:  # never print a secret by accident
        return f"Credentials(api_key={self.api_key!r}, secret=***)"

    __str__ = __repr__


def new_kek() -> str:
    """A fresh key-encryption key, base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> str:
    nonce = secrets.token_bytes(NONCE)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, aad)).decode()


def _open(key: bytes, sealed: str, aad: bytes) -> bytes:
    raw = base64.b64decode(sealed)
    return AESGCM(key).decrypt(raw[:NONCE], raw[NONCE:], aad)


class Keyring:
    """The KEKs by id; the last one seals, any opens."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ConfigError(
                "no key-encryption key for exchange secrets",
                f"set bridge.kek_file or {KEK_ENV} (`<id>:<base64 of 32 bytes>` a line; make "
                "one with `tandem bridge new-kek`)",
            )
        self.keys = dict(keys)
        self.active = keys[-1][0]

    @classmethod
    def parse(cls, text: str, source: str) -> Keyring:
        keys: list[tuple[str, bytes]] = []
        for number, line in enumerate(text.replace(";", "\n").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            kek_id, sep, encoded = line.partition(":")
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                key = b""
            if not sep or not kek_id or len(key) != 32:
                # Never echo the line: it holds a key.
                raise ConfigError(
                    f"{source}, line {number}: not `<id>:<base64 of 32 bytes>`",
                    "make a key with `tandem bridge new-kek`",
                )
            keys.append((kek_id.strip(), key))
        return cls(keys)

    @classmethod
    def load(cls, kek_file: Path | None) -> Keyring:
        if kek_file is not None:
            try:
                return cls.parse(kek_file.read_text(), str(kek_file))
            except OSError as exc:
                raise ConfigError(
                    f"cannot read bridge.kek_file {kek_file}: {exc.strerror}"
                ) from exc
        return cls.parse(os.environ.get(KEK_ENV, ""), KEK_ENV)

    def seal(self, credentials: Credentials, aad: str) -> Sealed:
        data_key = AESGCM.generate_key(bit_length=256)
        body = json.dumps({"secret": credentials.secret, "passphrase": credentials.passphrase})
        ciphertext = _seal(data_key, body.encode(), aad.encode())
        wrapped = _seal(self.keys[self.active], data_key, f"kek:{aad}".encode())
        return Sealed(self.active, wrapped, ciphertext)

    def _data_key(self, sealed: Sealed, aad: str) -> bytes:
        kek = self.keys.get(sealed.kek_id)
        if kek is None:
            raise ConfigError(
                f"the key-encryption key {sealed.kek_id!r} is not in the keyring",
                "keep retired keys in the keyring until `tandem bridge rotate-kek` has run",
            )
        try:
            return _open(kek, sealed.wrapped_key, f"kek:{aad}".encode())
        except (InvalidTag, ValueError) as exc:
            raise ConfigError(f"a data key does not open with KEK {sealed.kek_id!r}") from exc

    def open(self, sealed: Sealed, api_key: str, aad: str) -> Credentials:
        data_key = self._data_key(sealed, aad)
        try:
            body = json.loads(_open(data_key, sealed.ciphertext, aad.encode()))
        except (InvalidTag, ValueError) as exc:
            raise ConfigError("a sealed exchange secret does not open (moved or damaged)") from exc
        return Credentials(api_key, body["secret"], body["passphrase"])

    def rewrap(self, sealed: Sealed, aad: str) -> Sealed:
        """The same secret under the active KEK (the ciphertext is unchanged)."""
        if sealed.kek_id == self.active:
            return sealed
        data_key = self._data_key(sealed, aad)
        wrapped = _seal(self.keys[self.active], data_key, f"kek:{aad}".encode())
        return Sealed(self.active, wrapped, sealed.ciphertext)

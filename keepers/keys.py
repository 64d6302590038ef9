"""The keeper's key: an encrypted keystore file (the Web3 Secret Storage format of eth-account).

The password comes from a file, the TANDEM_KEEPER_PASSWORD variable, or a prompt, in that order.
Neither the password nor the key is ever logged, printed or put in an error message.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from tandem.errors import ConfigError

PASSWORD_ENV_VAR = "TANDEM_KEEPER_PASSWORD"  # noqa: S105 - the variable's name, not a password
MIN_PASSWORD_LENGTH = 8


def read_password(password_file: Path | None, *, confirm: bool = False) -> str:
    """The keystore password from ``password_file``, else $TANDEM_KEEPER_PASSWORD, else a
    prompt on the terminal (asked twice when ``confirm``, for a new keystore)."""
    if password_file is not None:
        try:
            password = password_file.expanduser().read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the password file {password_file}: {exc.strerror}",
                "check the path in keeper.password_file or --password-file",
            ) from exc
    elif (from_env := os.environ.get(PASSWORD_ENV_VAR)) is not None:
        password = from_env
    elif sys.stdin.isatty():
        password = getpass.getpass("keystore password: ")
        if confirm and getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ", "run the command again")
    else:
        raise ConfigError(
            "no keystore password",
            f"give --password-file, set {PASSWORD_ENV_VAR}, or run on a terminal to be asked",
        )
    if not password:
        raise ConfigError("the keystore password is empty", "use a password file or variable")
    return password


def create_keystore(path: Path, password: str, private_key: str | None = None) -> str:
    """Encrypt a new key (or ``private_key``) into ``path``; returns its address.

    Refuses to overwrite: a keystore may be the only copy of a funded key.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(
            f"the keystore password is shorter than {MIN_PASSWORD_LENGTH} characters",
            "choose a longer one",
        )
    if path.exists():
        raise ConfigError(
            f"{path} already exists", "move it away first, or choose another --keystore path"
        )
    try:
        account = Account.create() if private_key is None else Account.from_key(private_key)
    except (ValueError, TypeError) as exc:
        # Never echo the input: it may be a key with a typo in it.
        raise ConfigError(
            "that is not a private key", "give 32 bytes as 64 hex digits, with or without 0x"
        ) from exc
    keystore = Account.encrypt(account.key, password)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with owner-only permissions, never world-readable even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(keystore, file)
    return str(account.address)


def load_account(path: Path, password: str) -> LocalAccount:
    """Decrypt the keystore at ``path``."""
    try:
        keystore = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"no keystore at {path}", "create one with `tandem keeper new-key` or `import-key`"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the keystore {path}: {exc}") from exc
    if not isinstance(keystore, dict) or "crypto" not in {k.lower() for k in keystore}:
        raise ConfigError(
            f"{path} is not a keystore",
            "give the file `tandem keeper new-key` or `import-key` wrote",
        )
    try:
        key = Account.decrypt(keystore, password)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"cannot decrypt {path}: wrong password or damaged keystore", "check the password"
        ) from exc
    account: LocalAccount = Account.from_key(key)
    return account


def keystore_address(path: Path) -> str | None:
    """The address a keystore holds, read without its password (keystores store it in clear)."""
    try:
        address = json.loads(path.read_text()).get("address")
    except (OSError, ValueError):
        return None
    return f"0x{address}" if address and not address.startswith("0x") else address

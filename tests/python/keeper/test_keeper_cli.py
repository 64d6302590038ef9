"""`tandem keeper ...` as an operator runs it: keys, bad set-ups, a run stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from eth_account import Account

from keepers import keys
from tandem.config import Settings
from tandem.node import free_port
from tandem.protocol import Deployment

from .support import PASSWORD, keeper_env, keeper_settings, make_key, save_book, wait_until

# anvil's first dev key: public knowledge, never funded outside a local chain.
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def tandem(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", *args],
        env=env if env is not None else dict(os.environ),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def password_file(tmp: Path) -> Path:
    path = tmp / "password"
    path.write_text(PASSWORD + "\n")
    return path


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


def test_new_key_writes_an_owner_only_keystore_and_never_overwrites(tmp_path: Path) -> None:
    keystore = tmp_path / "keys" / "keeper.json"
    args = (
        "keeper",
        "new-key",
        "--keystore",
        str(keystore),
        "--password-file",
        str(password_file(tmp_path)),
    )
    result = tandem(*args)
    assert result.returncode == 0, result.stderr
    address = keys.keystore_address(keystore)
    assert address and address.lower() in result.stdout.lower()
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    assert keys.load_account(keystore, PASSWORD).address.lower() == address.lower()
    again = one_error_line(tandem(*args))
    assert "already exists" in again


def test_import_key_from_stdin_and_a_bad_key_is_not_echoed(tmp_path: Path) -> None:
    keystore = tmp_path / "imported.json"
    env = {**os.environ, "TANDEM_KEEPER_PASSWORD": PASSWORD}
    result = tandem(
        "keeper", "import-key", "--keystore", str(keystore), env=env, stdin=DEV_KEY + "\n"
    )
    assert result.returncode == 0, result.stderr
    assert Account.from_key(DEV_KEY).address in result.stdout
    assert DEV_KEY[2:] not in result.stdout + result.stderr
    bad = DEV_KEY[:-4] + "zzzz"
    failed = tandem(
        "keeper", "import-key", "--keystore", str(tmp_path / "bad.json"), env=env, stdin=bad + "\n"
    )
    assert "not a private key" in one_error_line(failed)
    assert bad[2:] not in failed.stdout + failed.stderr


def test_run_refuses_bad_setups_with_one_line(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    rpc_url = dep.w3.provider.endpoint_uri
    _keystore, _ = make_key(tmp_path, dep.w3)
    ks = keeper_settings(settings, rpc_url, tmp_path, dep.hub.address)
    save_book(dep, ks)
    good = keeper_env(ks)

    def run(**changes: str | None) -> str:
        env = dict(good)
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return one_error_line(tandem("keeper", "run", env=env))

    assert "no node answers" in run(TANDEM_RPC_URL=f"http://127.0.0.1:{free_port()}")
    assert "runs chain 31337, not chain 1" in run(TANDEM_CHAIN_ID="1")
    assert "wrong password" in run(TANDEM_KEEPER_PASSWORD="not-the-password")
    assert "batch_size" in run(TANDEM_KEEPER__BATCH_SIZE="0")
    assert "cannot reach Redis" in run(
        TANDEM_KEEPER__REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    assert "no contract at the hub address" in run(TANDEM_KEEPER__HUB="0x" + "12" * 20)
    poor = tmp_path / "poor"
    poor.mkdir()
    poor_keystore = poor / "poor.json"
    keys.create_keystore(poor_keystore, PASSWORD)
    assert "send it ether" in run(TANDEM_KEEPER__KEYSTORE=str(poor_keystore))
    # No password anywhere and no terminal to ask on.
    assert "no keystore password" in run(TANDEM_KEEPER_PASSWORD=None)


def test_run_logs_json_lines_stops_on_sigterm_and_never_logs_secrets(
    dep: Deployment, settings: Settings, tmp_path: Path
) -> None:
    keystore, keeper_address = make_key(tmp_path, dep.w3)
    ks = keeper_settings(
        settings,
        dep.w3.provider.endpoint_uri,
        tmp_path,
        dep.hub.address,
        log_format="json",
        metrics_port=free_port(),
    )
    save_book(dep, ks)
    log = tmp_path / "keeper.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tandem.cli", "keeper", "run"],
            env=keeper_env(ks),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: b"keeper " in log.read_bytes(), 30, "the keeper to start")
        import requests

        # The keeper logs that it is connected, then starts serving metrics.
        url = f"http://127.0.0.1:{ks.keeper.metrics_port}/metrics"
        metrics: list[str] = []

        def served() -> bool:
            try:
                metrics.append(requests.get(url, timeout=5).text)
            except requests.ConnectionError:
                return False
            return True

        wait_until(served, 10, "the metrics endpoint")
        assert "tandem_keeper_rpc_calls_total" in metrics[-1]
        status = tandem("keeper", "status", env=keeper_env(ks))
        assert status.returncode == 0, status.stderr
        assert "Cursor" in status.stdout and keeper_address in status.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert process.returncode == 0
    text = log.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(e["message"] == "stopped" for e in entries)
    private_key = keys.load_account(keystore, PASSWORD).key.hex()
    assert PASSWORD not in text
    assert private_key.removeprefix("0x") not in text


def test_keeper_flags_are_validated() -> None:
    env = {**os.environ, "TANDEM_KEEPER_PASSWORD": PASSWORD}
    line = one_error_line(tandem("keeper", "run", "--redis-url", "ftp://x", env=env))
    assert "--redis-url" in line and "redis://" in line


def test_a_file_that_is_not_a_keystore_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "TANDEM_KEEPER_PASSWORD": PASSWORD}
    for content in ("[]", "{}", '{"crypto": 1}', "not json"):
        keystore = tmp_path / "keystore.json"
        keystore.write_text(content)
        line = one_error_line(tandem("keeper", "run", "--keystore", str(keystore), env=env))
        assert str(keystore) in line

"""`tandem up` as a person runs it: one command prints the URL of a working platform, keeps the
secrets it made to itself, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import requests
from terminal import as_from_a_terminal, sigint_state

ROOT = Path(__file__).resolve().parents[2]
TANDEM = ROOT / ".venv" / "bin" / "tandem"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command may hold spaces and parentheses: the parent follows the last ')'.
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def environment(pid: int) -> dict[str, str]:
    raw = (Path("/proc") / str(pid) / "environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_up_prints_a_working_url_keeps_its_secrets_and_ctrl_c_stops_everything() -> None:
    port = free_port()
    up = subprocess.Popen(
        as_from_a_terminal(
            [str(TANDEM), "up", "--days", "1", "--port", str(port), "--trade-every", "3"]
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 600
        url = None
        while url is None and time.monotonic() < deadline and up.poll() is None:
            found = re.search(r"Tandem is up:\s*(http://\S+?)/?\s*$", "".join(lines), re.M)
            url = found.group(1) if found else None
            time.sleep(0.5)
        assert url, f"no URL printed:\n{''.join(lines)[-3000:]}"
        started = descendants(up.pid)
        names = {_program(pid) for pid in started if alive(pid)}
        assert {"anvil", "redis-server"} <= names, names

        # The URL serves the dApp, and the API behind it the masters the history made.
        page = requests.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        deadline = time.monotonic() + 120
        masters: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(masters) < 3:
            answer = requests.get(f"{url}/v1/masters?ranked_only=false", timeout=10)
            masters = answer.json().get("items", []) if answer.status_code == 200 else []
            time.sleep(1)
        assert len(masters) == 3, masters

        # The secrets made for the run reach the services in their environment only.
        secrets = {
            value
            for pid in started
            if alive(pid)
            for name, value in _safe_environment(pid).items()
            if name in ("TANDEM_API__SECRET_KEY", "TANDEM_BRIDGE_KEK")
        }
        assert secrets, "no service was given the run's secret keys"
        printed = "".join(lines)
        assert not [s for s in secrets if s in printed or s.split(":", 1)[-1] in printed]

        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert up.wait(90) == 0, "".join(lines)[-3000:] + sigint_state()
        reader.join(10)
        assert "Stopped:" in "".join(lines)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in started):
            time.sleep(0.2)
        left = [pid for pid in started if alive(pid)]
        assert left == [], f"still running after Ctrl-C: {left}"
    finally:
        if up.poll() is None:
            for pid in descendants(up.pid):
                os.kill(pid, signal.SIGKILL)
            up.kill()
            up.wait()


def _safe_environment(pid: int) -> dict[str, str]:
    try:
        return environment(pid)
    except OSError:
        return {}


def _program(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "exe").readlink().name
    except OSError:
        return ""

"""A local anvil chain started from node_modules, for development and tests.

LocalNode starts anvil, waits until it answers JSON-RPC, and always stops it again.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tandem.config import Settings, load_settings
from tandem.errors import NodeError

ANVIL_CHAIN_ID = 31337
_STDERR_TAIL_LINES = 15


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def rpc_request(
    url: str, method: str, params: list[Any] | None = None, timeout: float = 2.0
) -> Any:
    """One raw JSON-RPC call, without web3: used to probe a node cheaply."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(  # noqa: S310 - the URL is the node's own http:// address
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        reply = json.loads(response.read())
    if "error" in reply:
        raise NodeError(f"{method} failed at {url}: {reply['error']}")
    return reply["result"]


class LocalNode:
    """An anvil process bound to ``host:port``; use as a context manager.

    ``port=None`` picks a free port; ``port=0`` is not accepted. ``inherit_output`` lets anvil
    print to this terminal (for ``tandem node``); otherwise its output goes to a temporary log
    whose tail is shown when it fails to start. Old blocks' states are dropped, unless
    ``states_in_memory`` keeps that many in memory (for calls at old blocks).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        accounts: int = 10,
        balance_eth: int = 10_000,
        block_time: float | None = None,
        chain_id: int | None = None,
        code_size_limit: int | None = None,
        states_in_memory: int | None = None,
        extra_args: list[str] | None = None,
        inherit_output: bool = False,
        startup_timeout: float = 20.0,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.binary = self.settings.paths.foundry_binary("anvil")
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.accounts = accounts
        self.balance_eth = balance_eth
        self.block_time = block_time
        self.chain_id = chain_id
        self.code_size_limit = code_size_limit
        self.states_in_memory = states_in_memory
        self.extra_args = list(extra_args or [])
        self.inherit_output = inherit_output
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        args = [
            str(self.binary),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--accounts",
            str(self.accounts),
            "--balance",
            str(self.balance_eth),
        ]
        if self.states_in_memory is None:
            # Anvil moves the states of older blocks to a temporary folder in the user's home
            # and, when stopped, leaves them there: gigabytes for a long run such as the gas
            # benchmark. Old states are dropped instead, never written to disk.
            args += ["--max-persisted-states", "0"]
        else:
            args += ["--prune-history", str(self.states_in_memory)]
        if self.block_time is not None:
            args += ["--block-time", str(self.block_time)]
        if self.chain_id is not None:
            args += ["--chain-id", str(self.chain_id)]
        if self.code_size_limit is not None:
            args += ["--code-size-limit", str(self.code_size_limit)]
        return args + self.extra_args

    def start(self) -> LocalNode:
        if self.running:
            return self
        if not self.binary.is_file():
            raise NodeError(
                f"anvil is not installed ({self.binary})", "run `npm install` in the project root"
            )
        if port_in_use(self.port, self.host):
            raise NodeError(
                f"port {self.port} on {self.host} is already in use",
                "stop whatever listens there (another `tandem node`?) or choose another port",
            )
        # anvil's output goes to a file, never a pipe: an unread pipe fills up and then blocks
        # anvil mid-request. The file lives as long as the node; stop() closes it.
        self._log = (
            None if self.inherit_output else tempfile.TemporaryFile(prefix="anvil-")  # noqa: SIM115
        )
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            # Own process group: Ctrl-C reaches only us, and we stop anvil in order.
            start_new_session=True,
        )
        atexit.register(self.stop)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise NodeError(
                    f"anvil exited with code {self._process.returncode} while starting",
                    hint=None,
                    details=self._output_tail(),
                )
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                rpc_request(self.rpc_url, "eth_chainId", timeout=0.5)
                return
            time.sleep(0.05)
        raise NodeError(
            f"anvil did not answer at {self.rpc_url} within {self.startup_timeout:.0f} s",
            details=self._output_tail(),
        )

    def _output_tail(self) -> str | None:
        if self._log is None:
            return None
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-_STDERR_TAIL_LINES:]) or None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate anvil, kill it if it lingers, and reap it so no zombie is left."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait(self) -> int:
        """Block until anvil exits on its own (used by ``tandem node``); returns its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalNode({self.rpc_url}, {state}, binary={Path(self.binary).name})"

"""Starting a command as a terminal starts it, for the tests that stop it with Ctrl-C (SIGINT).

A process inherits whether SIGINT is ignored (and whether it is blocked) from whoever starts it;
a terminal's shell starts every command with SIGINT at its default, which Python turns into
KeyboardInterrupt. The test runner may have been started otherwise, or a library it loaded may
have changed its own: the commands under test get SIGINT as a terminal gives it, so that what
they do on Ctrl-C is what is tested.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

# Put SIGINT back to its default, unblocked, then become the command: exec keeps both.
_SHIM = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def as_from_a_terminal(command: list[str]) -> list[str]:
    """``command`` (its first item a path to an executable) started with SIGINT as a terminal
    gives it."""
    return [sys.executable, "-c", _SHIM, *command]


def sigint_state() -> str:
    """How this process takes SIGINT now (for a failure's message)."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    masks = [line for line in lines if line.startswith(("SigBlk", "SigIgn"))]
    return f"SIGINT handler {signal.getsignal(signal.SIGINT)!r}; " + "; ".join(masks)

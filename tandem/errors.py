"""Errors raised by the Tandem tooling.

Each message says what went wrong and, through its hint, what the user can do about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tandem.reverts import DecodedRevert


class TandemError(Exception):
    """Root of every error the tooling raises on purpose.

    ``message`` says what went wrong, ``hint`` what to do next; ``details`` holds extra lines
    (for example compiler diagnostics) that the command line prints below the error line.
    """

    def __init__(self, message: str, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class ConfigError(TandemError):
    """The settings (tandem.toml or TANDEM_* variables) are invalid."""


class NodeError(TandemError):
    """No node answers, it answers for the wrong chain, or a local node failed to start."""


class CompileError(TandemError):
    """The Solidity compiler reported errors or could not be run."""


class ArtifactError(TandemError):
    """A compiled contract or a Uniswap artifact is missing or unreadable."""


class ExchangeAnswerError(TandemError, ValueError):
    """An exchange answered without what was asked (the account a key belongs to)."""


class DeploymentError(TandemError):
    """A deployment is missing, stale, or failed."""


class RevertError(TandemError):
    """A transaction or call reverted; ``reason`` is the decoded revert (``ProtocolPaused()``),
    and ``decoded`` the same as data (name, arguments by name) when there was revert data."""

    def __init__(
        self,
        message: str,
        reason: str,
        hint: str | None = None,
        decoded: DecodedRevert | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.reason = reason
        self.decoded = decoded

    @property
    def error_name(self) -> str:
        """The bare error name, e.g. ``ERC20InsufficientBalance``, ``Error``, or for a router's
        refusal the protocol error it stands for (``SlippageExceeded``)."""
        if self.decoded is not None and self.decoded.name:
            return self.decoded.name
        return self.reason.split("(", 1)[0]

    @property
    def error_args(self) -> dict[str, object]:
        """The error's arguments by name (empty when there were none or no revert data)."""
        return dict(self.decoded.args) if self.decoded is not None else {}

"""Every revert of the protocol, decoded: one error ABI for all its contracts, and the routers'
bare strings told in the protocol's own words.

A vault calls the hub, its adapters and a DEX router inside one transaction and passes on their
reverts as they are, so a revert from a vault's address may carry any of their errors. The ABI
of one contract (``TandemVault.json``) does not hold the others' errors: ``error_abi()`` does.
It ships with the package (``tandem/abi/TandemErrors.json``), so an integrator decodes without
compiling anything::

    from tandem import reverts

    try:
        vault.functions.trade(...).transact()
    except web3.exceptions.ContractLogicError as exc:
        decoded = reverts.decode(exc.data)
        decoded.name, decoded.args  # "HopNotAllowed", {"token": "0x..."}

Uniswap's routers revert with strings (``UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT``,
``Too little received``): these decode to the protocol error they stand for
(``SlippageExceeded``), with the router's words kept in ``router_reason``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from eth_abi.abi import decode as abi_decode
from eth_typing import ABIError
from eth_utils.abi import abi_to_signature, get_abi_input_names, get_abi_input_types
from eth_utils.address import to_checksum_address as checksum
from eth_utils.crypto import keccak
from hexbytes import HexBytes

from tandem.errors import ArtifactError

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
PANIC_CODES = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "bad storage byte array encoding",
    0x31: "pop() on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialised function pointer",
}

# The shipped ABI of every custom error a Tandem contract or adapter can raise (with the
# OpenZeppelin errors of the libraries they use).
ERRORS_ABI_PATH = Path(__file__).parent / "abi" / "TandemErrors.json"

# Where the error ABI is collected from: the protocol's own sources and the libraries they
# import. The test tokens and feeds of contracts/testing are no part of a deployment.
EXCLUDED_SOURCES = ("contracts/testing/",)

# The routers' revert strings, as the protocol error each one stands for and what it means.
# The vault asks the router for the same minimum output it then checks itself, so a router that
# refuses is the vault's SlippageExceeded said first.
SLIPPAGE_MESSAGE = (
    "the swap would return less than its minimum output (the oracle value less the maximum "
    "slippage, or the trader's own minimum, whichever is stricter)"
)
ROUTER_REASONS: dict[str, tuple[str, str]] = {
    "UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT": ("SlippageExceeded", SLIPPAGE_MESSAGE),
    "Too little received": ("SlippageExceeded", SLIPPAGE_MESSAGE),
    "UniswapV2Library: INSUFFICIENT_LIQUIDITY": (
        "InsufficientLiquidity",
        "a pool along the route has no liquidity",
    ),
    "UniswapV2Library: INSUFFICIENT_INPUT_AMOUNT": (
        "InsufficientLiquidity",
        "the swap's input is too small for the pool to pay anything",
    ),
    "UniswapV2Router: EXPIRED": ("RouterDeadlinePassed", "the router call's deadline passed"),
    "Transaction too old": ("RouterDeadlinePassed", "the router call's deadline passed"),
    "UniswapV2Router: INVALID_PATH": ("RouteMismatch", "the route is not a valid path"),
    "TransferHelper: TRANSFER_FROM_FAILED": (
        "RouterTransferFailed",
        "the router could not take the swap's input from the vault",
    ),
    "STF": ("RouterTransferFailed", "the router could not take the swap's input from the vault"),
    "SPL": ("RouterPriceLimit", "the pool's price limit stopped the swap"),
    "AS": ("ZeroAmount", "the swap's amount is zero"),
}

Kind = Literal["custom", "router", "string", "panic", "empty", "unknown"]


@dataclass(frozen=True)
class DecodedRevert:
    """A revert, decoded.

    ``kind`` says what it was: a ``custom`` error of the protocol's ABI, a ``router`` string
    translated into the protocol error it stands for, another ``string`` (``Error(string)``), a
    ``panic``, ``empty`` revert data, or an ``unknown`` custom error. ``name`` is the error's name
    (``Error`` for a string, ``Panic`` for a panic); ``args`` its arguments by name (addresses
    checksummed); ``message`` a sentence for people.
    """

    kind: Kind
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    selector: str = ""
    signature: str | None = None
    message: str = ""
    router_reason: str | None = None

    def __str__(self) -> str:
        if self.kind == "router":
            return f"{self.name}(router={self.router_reason!r}): {self.message}"
        if self.kind == "string":
            return f"Error({self.args['message']!r})"
        if self.kind == "panic":
            code = self.args["code"]
            return f"Panic(0x{code:02x}: {PANIC_CODES.get(code, 'unknown panic code')})"
        if self.kind in ("empty", "unknown"):
            return self.message
        shown = ", ".join(
            f"{name}={_show(value)}" if not name.startswith("_") else _show(value)
            for name, value in self.args.items()
        )
        return f"{self.name}({shown})"


def decode(
    data: str | bytes | None, abi: Iterable[Mapping[str, Any]] | None = None
) -> DecodedRevert:
    """Decode revert data against ``abi`` (by default the shipped error ABI of the protocol)."""
    index = _shipped_index() if abi is None else error_selectors(abi)
    return decode_with(data, index)


def decode_with(data: str | bytes | None, index: Mapping[bytes, ABIError]) -> DecodedRevert:
    """Decode revert data against an index of selector -> error ABI entry."""
    raw = bytes(HexBytes(data or b""))
    if len(raw) < 4:
        return DecodedRevert("empty", "", message="no reason (empty revert data)")
    selector, payload = raw[:4], raw[4:]
    hex_selector = "0x" + selector.hex()
    if selector == ERROR_STRING_SELECTOR:
        text = str(abi_decode(["string"], payload)[0])
        if text in ROUTER_REASONS:
            name, message = ROUTER_REASONS[text]
            return DecodedRevert(
                "router", name, {}, hex_selector, "Error(string)", message, router_reason=text
            )
        return DecodedRevert("string", "Error", {"message": text}, hex_selector, "Error(string)")
    if selector == PANIC_SELECTOR:
        code = int(abi_decode(["uint256"], payload)[0])
        return DecodedRevert(
            "panic",
            "Panic",
            {"code": code},
            hex_selector,
            "Panic(uint256)",
            PANIC_CODES.get(code, "unknown panic code"),
        )
    entry = index.get(selector)
    if entry is None:
        return DecodedRevert(
            "unknown",
            "",
            selector=hex_selector,
            message=f"unknown custom error {hex_selector} (not in the protocol's error ABI)",
        )
    signature = abi_to_signature(entry)
    try:
        values = abi_decode(get_abi_input_types(entry), payload)
    except Exception:  # malformed payload: still name the error
        return DecodedRevert(
            "custom",
            entry["name"],
            {"_data": "0x" + payload.hex()},
            hex_selector,
            signature,
            f"{entry['name']} with undecodable arguments",
        )
    names = [name or f"_{i}" for i, name in enumerate(get_abi_input_names(entry))]
    args = {name: _plain(value) for name, value in zip(names, values, strict=True)}
    return DecodedRevert("custom", entry["name"], args, hex_selector, signature, signature)


def _plain(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return checksum(value)
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    return value


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        inner = ", ".join(_show(item) for item in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, str) and not (value.startswith("0x") and len(value) == 42):
        return repr(value)
    return str(value)


# --- the error ABI


def error_selectors(abi: Iterable[Mapping[str, Any]]) -> dict[bytes, ABIError]:
    """4-byte selector -> error ABI entry, for every ``error`` in ``abi``."""
    errors = [cast(ABIError, dict(entry)) for entry in abi if entry.get("type") == "error"]
    return {keccak(text=abi_to_signature(entry))[:4]: entry for entry in errors}


def build_error_abi(artifacts: Iterable[Any]) -> list[dict[str, Any]]:
    """One error ABI from compiled artifacts (``tandem.artifacts.Artifact``): every error of the
    protocol's contracts and the libraries they import, once each, sorted by signature. Two
    different errors with one selector would make reverts ambiguous: that is refused."""
    by_signature: dict[str, dict[str, Any]] = {}
    for artifact in artifacts:
        source = artifact.source_name or ""
        if source.startswith(EXCLUDED_SOURCES):
            continue
        for entry in artifact.abi:
            if entry.get("type") == "error":
                by_signature.setdefault(_signature(entry), _clean(entry))
    selectors: dict[bytes, str] = {}
    for signature in by_signature:
        selector = keccak(text=signature)[:4]
        if selector in selectors:
            raise ArtifactError(
                f"the errors {selectors[selector]} and {signature} share the selector "
                f"0x{selector.hex()}",
                "rename one of them: a revert could not tell them apart",
            )
        selectors[selector] = signature
    return [by_signature[signature] for signature in sorted(by_signature)]


def _clean(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An error entry with only the keys ABI readers use, so the file does not change with
    compiler output details."""

    def param(p: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"name": p.get("name", ""), "type": p["type"]}
        if "internalType" in p:
            out["internalType"] = p["internalType"]
        if "components" in p:
            out["components"] = [param(c) for c in p["components"]]
        return out

    return {"type": "error", "name": entry["name"], "inputs": [param(p) for p in entry["inputs"]]}


def error_abi() -> list[dict[str, Any]]:
    """The shipped error ABI: a JSON list of ``error`` entries, usable with web3.py, Ape and
    ethers alike (merge it into any contract's ABI)."""
    return [dict(entry) for entry in _shipped()]


def with_errors(abi: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``abi`` with every protocol error it lacks added."""
    entries = [dict(entry) for entry in abi]
    have = {_signature(e) for e in entries if e.get("type") == "error"}
    return entries + [e for e in error_abi() if _signature(e) not in have]


def _signature(entry: Mapping[str, Any]) -> str:
    return abi_to_signature(cast(ABIError, entry))


@functools.lru_cache(maxsize=1)
def _shipped() -> tuple[dict[str, Any], ...]:
    try:
        return tuple(json.loads(ERRORS_ABI_PATH.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"cannot read the protocol's error ABI {ERRORS_ABI_PATH}: {exc}",
            "reinstall the package",
        ) from exc


@functools.lru_cache(maxsize=1)
def _shipped_index() -> dict[bytes, ABIError]:
    return error_selectors(_shipped())


def render(abi: list[dict[str, Any]]) -> str:
    """The error ABI as the shipped file holds it."""
    return json.dumps(abi, indent=1) + "\n"

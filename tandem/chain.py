"""The chain client: connect web3 to the configured node, deploy contracts, send transactions.

Reverts are turned into RevertError with the error decoded (see ``tandem.reverts``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eth_typing import ABIError, ChecksumAddress
from eth_utils.address import to_checksum_address as checksum
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.providers import HTTPProvider
from web3.types import RPCEndpoint, TxParams, TxReceipt, Wei

from tandem import artifacts, reverts
from tandem.artifacts import Artifact
from tandem.config import Settings, load_settings, redact
from tandem.errors import DeploymentError, NodeError, RevertError, TandemError
from tandem.node_errors import UNREACHABLE, rpc_message
from tandem.reverts import DecodedRevert

RECEIPT_TIMEOUT = 120.0
# transact() sends from unlocked dev-node accounts, whose blocks are mined at once: poll for the
# receipt often rather than at web3's default 0.1 s, which would dominate every transaction.
RECEIPT_POLL_INTERVAL = 0.002

# --- connection


def connect(
    rpc_url: str | None = None,
    *,
    chain_id: int | None = None,
    settings: Settings | None = None,
) -> Web3:
    """A web3 client for the node at ``rpc_url`` (default: settings), checked to be alive.

    The expected ``chain_id`` (argument, else settings) is verified when given. If the node has
    unlocked accounts (anvil), the first one becomes the default sender.
    """
    settings = settings or load_settings()
    url = rpc_url or settings.rpc_url
    # No automatic retries: a local node either answers now or is not running, and retrying
    # with back-off only delays the error.
    provider = HTTPProvider(
        url,
        request_kwargs={"timeout": settings.rpc_timeout},
        exception_retry_configuration=None,
        # web3 asks for the chain id before every call and transaction it validates (twice an
        # eth_call): it never changes, ask once.
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    w3 = Web3(provider)
    try:
        actual = w3.eth.chain_id
        unlocked = w3.eth.accounts
    except UNREACHABLE as exc:
        raise NodeError(
            f"no node answers at {redact(url)}",
            "start one with `tandem node`, or set TANDEM_RPC_URL / --rpc-url to a running node",
        ) from exc
    expected = chain_id if chain_id is not None else settings.chain_id
    if expected is not None and actual != expected:
        raise NodeError(
            f"the node at {redact(url)} runs chain {actual}, but chain {expected} is expected",
            "point the RPC URL at the right node or change the configured chain_id",
        )
    if unlocked:
        w3.eth.default_account = unlocked[0]
    return w3


def contract_at(
    w3: Web3, artifact: Artifact | str, address: str, settings: Settings | None = None
) -> Contract:
    """A deployed contract, verified to have code (a restarted anvil forgets everything)."""
    art = _artifact(artifact, settings)
    target = checksum(address)
    if len(w3.eth.get_code(target)) == 0:
        raise DeploymentError(
            f"no contract code at {target} for {art.name} on chain {w3.eth.chain_id}",
            "the node was probably restarted since deploying: run `tandem deploy` again",
        )
    return w3.eth.contract(address=target, abi=art.abi)


# --- sending


def deploy(
    w3: Web3,
    artifact: Artifact | str,
    *args: Any,
    sender: str | None = None,
    value: int = 0,
    settings: Settings | None = None,
) -> tuple[Contract, TxReceipt]:
    """Deploy ``artifact`` (or a compiled project contract by name) with constructor ``args``."""
    art = _artifact(artifact, settings)
    if not art.deployable:
        raise DeploymentError(
            f"{art.name} has no bytecode to deploy", "is it an interface or an abstract contract?"
        )
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    receipt = transact(
        factory.constructor(*args),
        sender,
        value=value,
        settings=settings,
        label=f"deploying {art.name}",
    )
    address = receipt["contractAddress"]
    if address is None:
        raise DeploymentError(f"deploying {art.name} created no contract")
    return w3.eth.contract(address=address, abi=art.abi), receipt


def transact(
    fn: ContractFunction | ContractConstructor,
    sender: str | None = None,
    *,
    value: int = 0,
    gas: int | None = None,
    settings: Settings | None = None,
    label: str | None = None,
) -> TxReceipt:
    """Send ``fn`` from an unlocked node account and wait for it to be mined.

    ``sender`` defaults to ``w3.eth.default_account``. A revert, whether found while estimating
    gas or in the mined receipt, raises RevertError naming the decoded error.
    """
    w3 = fn.w3
    label = label or _describe(fn)
    tx: TxParams = {"from": resolve_sender(w3, sender)}
    if value:
        tx["value"] = Wei(value)
    if gas is not None:
        tx["gas"] = gas
    try:
        tx_hash = fn.transact(tx)
    except ContractLogicError as exc:
        raise _revert(label, exc, settings) from exc
    except Web3RPCError as exc:
        raise TandemError(f"the node rejected {label}: {rpc_message(exc)}") from exc
    receipt = w3.eth.wait_for_transaction_receipt(
        tx_hash, timeout=RECEIPT_TIMEOUT, poll_latency=RECEIPT_POLL_INTERVAL
    )
    if receipt["status"] != 1:
        raise _replayed_revert(w3, label, tx_hash, receipt, settings)
    return receipt


def _artifact(artifact: Artifact | str, settings: Settings | None) -> Artifact:
    return artifacts.load(artifact, settings) if isinstance(artifact, str) else artifact


def resolve_sender(w3: Web3, sender: str | None) -> ChecksumAddress:
    """``sender``, else the client's default account (the node's first unlocked account)."""
    chosen = sender or w3.eth.default_account
    if not isinstance(chosen, str) or not chosen:
        raise TandemError(
            "no sender account",
            "pass sender= or connect to a node with unlocked accounts such as anvil",
        )
    return checksum(chosen)


def _describe(fn: ContractFunction | ContractConstructor) -> str:
    if isinstance(fn, ContractFunction):
        return f"{fn.fn_name}() on {fn.address}"
    return "contract creation"


def _revert(label: str, exc: ContractLogicError, settings: Settings | None) -> RevertError:
    data = exc.data if isinstance(exc.data, str) else None
    if not data:
        reason = exc.message or "no reason given"
        return RevertError(f"{label} reverted with {reason}", reason)
    decoded = decode_revert_data(data, settings)
    return RevertError(f"{label} reverted with {decoded}", str(decoded), decoded=decoded)


def _replayed_revert(
    w3: Web3, label: str, tx_hash: HexBytes, receipt: TxReceipt, settings: Settings | None
) -> RevertError:
    """Re-run a mined, failed transaction as a call on the state before it to get the reason."""
    sent = w3.eth.get_transaction(tx_hash)
    call: TxParams = {
        "from": sent["from"],
        "data": sent["input"],
        "value": sent["value"],
        "gas": sent["gas"],
    }
    if sent.get("to"):
        call["to"] = sent["to"]
    try:
        w3.eth.call(call, block_identifier=receipt["blockNumber"] - 1)
    except ContractLogicError as exc:
        return _revert(label, exc, settings)
    except UNREACHABLE:
        pass
    reason = "an unknown reason (out of gas?)"
    return RevertError(f"{label} failed in block {receipt['blockNumber']} with {reason}", reason)


# --- revert decoding


def decode_revert(data: str | bytes | None, settings: Settings | None = None) -> str:
    """Readable revert: ``Error("...")``, ``Panic(0x11: ...)`` or ``Name(arg=value, ...)``; a
    router's string as the protocol error it stands for (see ``tandem.reverts``)."""
    return str(decode_revert_data(data, settings))


def decode_revert_data(data: str | bytes | None, settings: Settings | None = None) -> DecodedRevert:
    """The revert decoded against the protocol's error ABI and every ABI under build/contracts
    (which holds the errors of contracts compiled since the ABI shipped)."""
    return reverts.decode_with(data, _error_index_for(settings))


def _error_index_for(settings: Settings | None) -> dict[bytes, ABIError]:
    paths = (settings or load_settings()).paths
    stamp = paths.compile_stamp
    # The stamp's mtime changes whenever a compile rewrites the artifacts.
    return _error_index(str(paths.artifacts_dir), stamp.stat().st_mtime if stamp.exists() else 0)


@functools.lru_cache(maxsize=8)
def _error_index(artifacts_dir: str, stamp_mtime: float) -> dict[bytes, ABIError]:
    found = artifacts.artifacts_in(Path(artifacts_dir))
    index = error_selectors(reverts.error_abi())
    index.update(error_selectors(entry for art in found for entry in art.abi))
    return index


def error_selectors(abi: Iterable[dict[str, Any]]) -> dict[bytes, ABIError]:
    """4-byte selector -> error ABI entry, for every ``error`` in ``abi``."""
    return reverts.error_selectors(abi)

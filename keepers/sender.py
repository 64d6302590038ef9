"""One sender per key: simulate, take a nonce, send with EIP-1559 fees, bump when stuck, confirm.

The nonce is a local counter under a lock, so several jobs can be in flight at once without
waiting for each other's receipts; it is re-read from the chain whenever the node disagrees.
Gas is estimated (which also simulates the call) *before* a nonce is taken, so a call that would
revert never uses one. A transaction without a receipt after ``stuck_after`` seconds is sent
again with the same nonce and fees raised by ``fee_bump_bps`` (nodes want at least +10%).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import RPCEndpoint, TxParams, TxReceipt

from tandem.chain import decode_revert_data
from tandem.config import Settings
from tandem.errors import RevertError, TandemError
from tandem.node_errors import (
    CONNECTION_ERRORS,
    method_missing,
    nonce_too_low,
    revert_data,
    rpc_message,
)

log = logging.getLogger(__name__)

GWEI = 10**9
# Not mined yet, or a node that did not answer one receipt poll: the next poll asks again.
NO_RECEIPT_YET: tuple[type[BaseException], ...] = (
    TransactionNotFound,
    *CONNECTION_ERRORS,
)
HEAD_WAIT = 2.0


class SendError(TandemError):
    """A transaction could not be sent or confirmed (not a revert)."""


@dataclass
class Attempt:
    tx_hash: HexBytes
    tip: int
    max_fee: int
    sent_at: float


class Heads:
    """New-block notifications from the watcher, so receipts are looked for once per block."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.number = 0
        self.base_fee = 0
        self.gas_limit = 30_000_000

    def arrived(self, number: int, base_fee: int, gas_limit: int) -> None:
        self.number, self.base_fee, self.gas_limit = number, base_fee, gas_limit
        self._event.set()
        self._event = asyncio.Event()

    async def next(self, timeout: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


class Sender:
    def __init__(
        self,
        w3: AsyncWeb3[Any],
        account: LocalAccount,
        settings: Settings,
        heads: Heads,
        *,
        on_confirmed: Callable[[str, TxReceipt, float], None] | None = None,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.settings = settings
        self.keeper = settings.keeper
        self.heads = heads
        self.on_confirmed = on_confirmed
        self.chain_id = 0
        self.nonce = 0
        self.replacements = 0
        self._in_flight: set[int] = set()  # nonces of transactions waiting for a receipt
        self._resync_wanted = False
        self._access_lists = True
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        self.chain_id = await self.w3.eth.chain_id
        await self._await_earlier_run()
        await self.resync()

    async def _await_earlier_run(self) -> None:
        """Transactions a previous run left in the mempool (a keeper killed mid-batch) are
        given time to be mined before this run decides anything: otherwise it would see the
        same followers still due and send the same exits again, a wasted transaction each."""
        deadline = time.monotonic() + 3 * self.keeper.stuck_after
        while time.monotonic() < deadline:
            pending = await self.w3.eth.get_transaction_count(self.address, "pending")
            mined = await self.w3.eth.get_transaction_count(self.address, "latest")
            if pending <= mined:
                return
            log.info("waiting for %s transaction(s) from an earlier run", pending - mined)
            await asyncio.sleep(0.25)

    async def resync(self) -> None:
        """Take the next nonce from the chain: at start, when the node refuses ours as too low,
        and after a reorganisation once no transaction of ours is in flight (`request_resync`):
        one in flight still owns its nonce, and re-sends its transaction on its own if the
        reorganisation dropped it."""
        self.nonce = await self.w3.eth.get_transaction_count(self.address, "pending")
        self._resync_wanted = False

    def request_resync(self) -> None:
        self._resync_wanted = True

    # --- simulation

    async def call(self, tx: TxParams) -> bytes:
        """Run ``tx`` as a call on the latest state; raises RevertError with the decoded reason."""
        try:
            return bytes(await self.w3.eth.call({**tx, "from": self.address}))
        except ContractLogicError as exc:
            raise self._revert(tx, exc) from exc

    async def estimate(self, tx: TxParams) -> int:
        """The gas ``tx`` needs, found by simulating it once; raises RevertError if it reverts.

        eth_createAccessList runs the call once and reports the gas it used, where
        eth_estimateGas runs it a dozen times in a binary search (120 ms instead of 13 ms for
        an exit of 250 followers). The gas used is then given room for what it does not show:
        refunds (at most a fifth of it) and the 1/64 of gas each nested call must leave behind.
        Nodes without eth_createAccessList get eth_estimateGas.
        """
        call = {"from": self.address, "to": tx["to"], "data": _hex_data(tx.get("data", b""))}
        if self._access_lists:
            try:
                result = await self.w3.manager.coro_request(
                    RPCEndpoint("eth_createAccessList"), [call, "latest"]
                )
            except ContractLogicError as exc:
                raise self._revert(tx, exc) from exc
            except Web3RPCError as exc:
                data = revert_data(exc)
                if data is not None:
                    raise self._revert_data(tx, data) from exc
                if method_missing(exc):
                    self._access_lists = False
                    return await self.estimate(tx)
                raise
            if result.get("error"):  # geth reports a revert inside the result
                raise self._revert_data(tx, None, str(result["error"]))
            return int(result["gasUsed"], 16) * 4 // 3 + 25_000
        try:
            return int(await self.w3.eth.estimate_gas({**tx, "from": self.address}))
        except ContractLogicError as exc:
            raise self._revert(tx, exc) from exc

    def _revert_data(
        self, tx: TxParams, data: str | None, message: str | None = None
    ) -> RevertError:
        if not data:
            reason = message or "no reason"
            return RevertError(f"call to {_target(tx)} reverted with {reason}", reason)
        decoded = decode_revert_data(data, self.settings)
        return RevertError(
            f"call to {_target(tx)} reverted with {decoded}", str(decoded), decoded=decoded
        )

    def _revert(self, tx: TxParams, exc: ContractLogicError) -> RevertError:
        data = exc.data if isinstance(exc.data, str) else None
        return self._revert_data(tx, data, exc.message)

    # --- sending

    def fees(self, base_fee: int) -> tuple[int, int]:
        """(priority fee, max fee per gas): room for the base fee to double before inclusion."""
        tip = int(self.keeper.priority_fee_gwei * GWEI)
        cap = int(self.keeper.max_fee_gwei * GWEI)
        return min(tip, cap), min(2 * base_fee + tip, cap)

    async def send(
        self,
        tx: TxParams,
        label: str,
        *,
        gas: int | None = None,
        on_sent: Callable[[], None] | None = None,
        still_working: Callable[[], Awaitable[None]] | None = None,
    ) -> TxReceipt:
        """Send ``tx`` and wait for its receipt; raises RevertError if it reverts.

        ``gas`` skips the estimate when the caller has one; ``on_sent`` is called once the node
        has the transaction; ``still_working`` is awaited while waiting for the receipt (a
        heartbeat for the queue).
        """
        if gas is None:
            started = time.perf_counter()
            gas = await self.estimate(tx)
            log.debug("estimated %s in %.1f ms", label, 1000 * (time.perf_counter() - started))
        gas_limit = min(gas, self.heads.gas_limit)
        tip, max_fee = self.fees(self.heads.base_fee or await self._base_fee())
        async with self.lock:
            if self._resync_wanted and not self._in_flight:
                await self.resync()
            attempt, nonce = await self._send_signed(tx, self.nonce, gas_limit, tip, max_fee)
            self.nonce = nonce + 1
            self._in_flight.add(nonce)
        log.info("sent %s", label, extra={"tx": attempt.tx_hash.to_0x_hex(), "nonce": nonce})
        if on_sent:
            on_sent()
        try:
            return await self._confirm(tx, label, nonce, gas_limit, [attempt], still_working)
        finally:
            self._in_flight.discard(nonce)

    async def _next_base_fee(self) -> int:
        history: Any = await self.w3.eth.fee_history(1, "latest", [])
        fees: list[Any] = list(history.get("baseFeePerGas") or [0])
        return max(int(fees[-1]), await self._base_fee())

    async def _base_fee(self) -> int:
        block = await self.w3.eth.get_block("latest")
        return int(block.get("baseFeePerGas", 0) or 0)

    def _sign(self, tx: TxParams, nonce: int, gas: int, tip: int, max_fee: int) -> Any:
        fields: dict[str, Any] = {
            "to": tx["to"],
            "data": tx.get("data", b""),
            "value": tx.get("value", 0),
            "gas": gas,
            "nonce": nonce,
            "chainId": self.chain_id,
            "type": 2,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": max_fee,
        }
        return self.account.sign_transaction(fields)

    async def _send_signed(
        self, tx: TxParams, nonce: int, gas_limit: int, tip: int, max_fee: int
    ) -> tuple[Attempt, int]:
        """Sign and send with ``nonce``; on a nonce the node no longer accepts, re-read the
        nonce and try again. Returns the attempt and the nonce it used."""
        for _ in range(3):
            signed = self._sign(tx, nonce, gas_limit, tip, max_fee)
            try:
                tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Web3RPCError as exc:
                if nonce_too_low(exc):
                    await self.resync()
                    nonce = self.nonce
                    continue
                if "insufficient funds" in str(exc).lower():
                    raise SendError(
                        f"key {self.address} cannot pay for gas",
                        "send it ether (see `tandem keeper status` for its balance)",
                    ) from exc
                raise SendError(f"the node refused the transaction: {rpc_message(exc)}") from exc
            return Attempt(HexBytes(tx_hash), tip, max_fee, time.monotonic()), nonce
        raise SendError(f"the node kept refusing nonces for {self.address}")

    async def _confirm(
        self,
        tx: TxParams,
        label: str,
        nonce: int,
        gas_limit: int,
        attempts: list[Attempt],
        still_working: Callable[[], Awaitable[None]] | None,
    ) -> TxReceipt:
        started = time.monotonic()
        deadline = started + self.keeper.receipt_timeout
        while True:
            for attempt in reversed(attempts):
                try:
                    receipt = await self.w3.eth.get_transaction_receipt(attempt.tx_hash)
                except NO_RECEIPT_YET:
                    continue
                return await self._finish(tx, label, receipt, time.monotonic() - started)
            now = time.monotonic()
            if now > deadline:
                waited = self.keeper.receipt_timeout
                raise SendError(
                    f"no receipt for {label} (nonce {nonce}) after {waited:.0f} s",
                    "is the node mining? the transaction may still be included later",
                )
            if now - attempts[-1].sent_at > self.keeper.stuck_after:
                bumped = await self._bump(tx, label, nonce, gas_limit, attempts)
                if bumped is None:
                    # Our nonce is used but none of our transactions has a receipt.
                    raise SendError(
                        f"nonce {nonce} of {self.address} was used by another transaction",
                        "is the same key used by another keeper or wallet? give each its own",
                    )
                if bumped is not attempts[-1]:
                    attempts.append(bumped)
            if still_working:
                await still_working()
            # Receipts come with blocks: look again when the next one arrives (or after a
            # while, should the watcher be stalled).
            await self.heads.next(timeout=HEAD_WAIT)

    async def _bump(
        self, tx: TxParams, label: str, nonce: int, gas_limit: int, attempts: list[Attempt]
    ) -> Attempt | None:
        """Replace a stuck transaction with the same nonce and higher fees. Returns the last
        attempt unchanged when there is nothing to replace (mined meanwhile, or at the fee cap),
        and None when the nonce was used by a transaction that is not ours."""
        last = attempts[-1]
        if await self.w3.eth.get_transaction_count(self.address, "latest") > nonce:
            return last if await self._any_receipt(attempts) else None
        bump = self.keeper.fee_bump_bps
        # The next block's base fee, not the last one seen: a rising base fee is why we are stuck.
        base_tip, base_max = self.fees(await self._next_base_fee())
        tip = max(base_tip, -(-last.tip * (10_000 + bump) // 10_000))
        max_fee = max(base_max, -(-last.max_fee * (10_000 + bump) // 10_000), tip)
        cap = int(self.keeper.max_fee_gwei * GWEI)
        if max_fee > cap:
            log.warning(
                "%s is stuck and its fee is at the cap of %s gwei", label, self.keeper.max_fee_gwei
            )
            last.sent_at = time.monotonic()
            return last
        signed = self._sign(tx, nonce, gas_limit, tip, max_fee)
        try:
            tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Web3RPCError as exc:
            if nonce_too_low(exc) or "already known" in str(exc).lower():
                last.sent_at = time.monotonic()
                return last  # mined meanwhile: the next receipt check finds it
            raise SendError(f"the node refused the fee bump: {rpc_message(exc)}") from exc
        self.replacements += 1
        log.warning(
            "replaced stuck %s with higher fees",
            label,
            extra={
                "tx": HexBytes(tx_hash).to_0x_hex(),
                "nonce": nonce,
                "max_fee_gwei": max_fee / GWEI,
            },
        )
        return Attempt(HexBytes(tx_hash), tip, max_fee, time.monotonic())

    async def _any_receipt(self, attempts: list[Attempt]) -> bool:
        for attempt in attempts:
            try:
                await self.w3.eth.get_transaction_receipt(attempt.tx_hash)
                return True
            except TransactionNotFound:
                continue
        return False

    async def _finish(
        self, tx: TxParams, label: str, receipt: TxReceipt, waited: float
    ) -> TxReceipt:
        if self.on_confirmed:
            self.on_confirmed(label, receipt, waited)
        if receipt["status"] == 1:
            return receipt
        # Re-run on the state before the block for the reason; good enough for a message.
        try:
            await self.w3.eth.call({**tx, "from": self.address}, receipt["blockNumber"] - 1)
        except ContractLogicError as exc:
            raise self._revert(tx, exc) from exc
        raise RevertError(
            f"{label} reverted in block {receipt['blockNumber']} (out of gas?)", "unknown reason"
        )

    async def balance(self) -> int:
        return int(await self.w3.eth.get_balance(self.address))


def _target(tx: TxParams) -> str:
    to: Any = tx.get("to")
    return to if isinstance(to, str) else HexBytes(to or b"").to_0x_hex()


def _hex_data(data: Any) -> str:
    return data if isinstance(data, str) else HexBytes(data).to_0x_hex()

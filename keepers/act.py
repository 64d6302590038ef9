"""Doing a job: simulate it, skip it if its effect is already on-chain, else send and confirm.

Every job is safe to repeat because the contracts re-check everything: ``triggerExits`` skips
followers whose limits no longer hold, ``recordPeaks`` peaks that are not higher, ``crystallise``
followers charged within the period. A simulation that would change nothing therefore means
another keeper (or an earlier run) already did the work: the job is done, no gas spent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address as checksum
from web3.types import TxParams, TxReceipt

from keepers.decide import Decider
from keepers.queue import Job
from keepers.sender import Sender
from tandem.errors import RevertError

log = logging.getLogger(__name__)

# A mirror slice that does not fit the oracle bound is halved, this many times at most; what
# is left waits for the next look (a price update, another slice, or the scheduled sweep).
MIRROR_HALVINGS = 4
# Reverts meaning "not now" for a mirror slice, rather than a failure: the mirror waits (for
# copying to resume, the hub to unpause, or the hub's owner to vet a route; an expired mirror is
# dropped whatever the reason)...
MIRROR_WAITS = {"CopyingIsSuspended", "ProtocolPaused", "NoVettedRoute"}
# ...or a smaller slice may fit: the vault's oracle bound, its loss budget, or the router's own
# minimum output (Uniswap V3 and V2 say it in words), which the vault sets from the oracle.
SLICE_TOO_LARGE = {"SlippageExceeded", "LossBudgetExceeded"}
ROUTER_MINIMUMS = ("Too little received", "INSUFFICIENT_OUTPUT_AMOUNT")


@dataclass(frozen=True)
class Outcome:
    status: Literal["done", "already done", "waiting"]
    count: int = 0  # followers exited, peaks recorded, followers charged, or mirror input spent
    receipt: TxReceipt | None = None


class Actor:
    def __init__(
        self, decider: Decider, sender: Sender, on_sent: Callable[[Job], None] | None = None
    ) -> None:
        self.decider = decider
        self.sender = sender
        self.on_sent = on_sent

    async def _send(
        self, job: Job, tx: TxParams, still_working: Callable[[], Awaitable[None]] | None
    ) -> TxReceipt:
        callback = self.on_sent

        def sent() -> None:
            if callback is not None:
                callback(job)

        return await self.sender.send(tx, job.describe(), on_sent=sent, still_working=still_working)

    async def run(
        self,
        job: Job,
        still_working: Callable[[], Awaitable[None]] | None = None,
        *,
        check: bool = False,
    ) -> Outcome:
        """Do ``job``; ``check`` asks the chain first whether it is already done, as for any
        job decided on an older state."""
        if job.kind == "mirror":
            return await self._mirror(job, still_working)
        calls = self.decider.calls
        followers = list(job.followers)
        if job.kind == "exits":
            # The vault sells each token along the hub's vetted route: the keeper names whom.
            data = calls.encode("triggerExits", followers, job.exit_slippage_bps)
        elif job.kind == "peaks":
            data = calls.encode("recordPeaks", followers)
        else:
            data = calls.encode("crystallise", followers)
        tx: TxParams = {"to": checksum(job.vault), "data": data}
        count = len(followers)
        if check or job.block != self.sender.heads.number or job.kind != "exits":
            # Decided on an older state, or taken over: ask the contract what it would do now;
            # zero means someone already did it. A fresh exit job was decided by
            # `followerStates` on this very state, and the gas estimate simulates it again:
            # no third execution before the transaction leaves.
            (count,) = abi_decode(["uint256"], await self.sender.call(tx))
            if count == 0:
                return Outcome("already done")
        receipt = await self._send(job, tx, still_working)
        return Outcome("done", int(count), receipt)

    async def _mirror(
        self, job: Job, still_working: Callable[[], Awaitable[None]] | None
    ) -> Outcome:
        vault = self.decider.vault(job.vault)
        remaining = (await vault.functions.mirror(job.mirror_id).call())[3]
        if remaining == 0:
            return Outcome("already done")
        amount = remaining
        for _ in range(MIRROR_HALVINGS + 1):
            # The keeper chooses only how much: the vault swaps along the hub's vetted route.
            fn = vault.functions.executeMirror(job.mirror_id, amount)
            tx: TxParams = {"to": vault.address, "data": fn._encode_transaction_data()}
            try:
                await self.sender.call(tx)
            except RevertError as exc:
                if exc.error_name == "MirrorNotPending":
                    return Outcome("already done")
                if exc.error_name in MIRROR_WAITS:
                    return Outcome("waiting")
                too_large = exc.error_name in SLICE_TOO_LARGE or any(
                    words in exc.reason for words in ROUTER_MINIMUMS
                )
                if not too_large:
                    raise
                amount //= 2
                continue
            receipt = await self._send(job, tx, still_working)
            return Outcome("done", amount, receipt)
        log.info("mirror %s of %s does not fit the oracle bound now", job.mirror_id, job.vault)
        return Outcome("waiting")

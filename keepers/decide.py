"""Deciding what is due: many followers per call, and jobs for what the contracts would do now.

``followerStates`` answers for a whole list of followers in one eth_call, from the same code
``triggerExits`` runs, so the keeper never judges a follower differently from the vault. Calls
grow with batches of ``batch_size`` followers, never with followers.

A job names only what to do, never how to swap: risk exits and mirror slices swap along the
hub's vetted routes, which the vault reads itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address as checksum
from web3 import AsyncWeb3
from web3.contract import AsyncContract

from keepers.calls import VaultCalls
from keepers.queue import Job
from tandem import artifacts
from tandem.config import Settings

log = logging.getLogger(__name__)

BPS = 10_000


@dataclass(frozen=True)
class FollowerState:
    follower: str
    shares: int
    value: int
    entry_value: int
    peak_value: int
    high_water_mark: int
    crystallisable_at: int
    max_drawdown_bps: int
    exit_due: bool
    # Which limit holds, numbered as ITandemVault.ExitReason: 0 none, 1 stop-loss, 2 maximum
    # drawdown, 3 take-profit. Kept as a number: the keeper acts on `exit_due` alone, so a
    # reason added to the contract later must not stop it from reading states.
    reason: int
    # The slippage a risk exit of this follower sells at. A batch exit sells at one bound and
    # takes only the followers who chose it, so due followers are grouped by it, one job each.
    exit_slippage_bps: int


@dataclass(frozen=True)
class Sweep:
    """What to look for in one pass over a vault."""

    exits: bool = True
    peaks: bool = True
    crystallise: bool = False
    mirrors: bool = False


def batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def exit_groups(states: list[FollowerState]) -> list[tuple[int, tuple[str, ...]]]:
    """The due followers by exit slippage, the group with the most value at stake first: a batch
    exit sells at one bound and takes only the followers who chose it. Ordering by value, not by
    listing, means followers who spread dust positions over many bounds cannot put their own
    batches ahead of everyone else's."""
    groups: dict[int, list[FollowerState]] = {}
    for s in states:
        if s.exit_due:
            groups.setdefault(s.exit_slippage_bps, []).append(s)
    ordered = sorted(groups.items(), key=lambda g: -sum(s.value for s in g[1]))
    return [(bps, tuple(s.follower for s in group)) for bps, group in ordered]


# followerStates returns an array of static structs: an offset, a length, then ten 32-byte
# words per follower in the order of ITandemVault.FollowerState. Reading them by slicing is two
# orders of magnitude faster than web3's generic decoder (about 1 ms instead of 60 ms for 250
# followers), which is most of a keeper's reaction time. `check_layout` guards the assumption.
STATE_FIELDS = (
    ("shares", "uint256"),
    ("value", "uint256"),
    ("entryValue", "uint256"),
    ("peakValue", "uint256"),
    ("highWaterMark", "uint256"),
    ("crystallisableAt", "uint256"),
    ("maxDrawdownBps", "uint16"),
    ("exitDue", "bool"),
    ("reason", "uint8"),
    ("exitSlippageBps", "uint16"),
)
WORD = 32


def check_layout(vault_abi: list[dict[str, Any]]) -> None:
    """Fail at start, not with wrong answers, if followerStates' output is not what
    ``decode_states`` reads."""
    entry = next(
        (e for e in vault_abi if e.get("type") == "function" and e.get("name") == "followerStates"),
        None,
    )
    components = entry["outputs"][0].get("components", []) if entry else []
    found = tuple((c["name"], c["type"]) for c in components)
    if found != STATE_FIELDS:
        raise ValueError(f"followerStates returns {found}, the keeper reads {STATE_FIELDS}")


def decode_states(raw: bytes, followers: list[str]) -> list[FollowerState]:
    words = len(STATE_FIELDS)
    count = int.from_bytes(raw[WORD : 2 * WORD], "big")
    if count != len(followers) or len(raw) != 2 * WORD + count * words * WORD:
        raise ValueError(f"followerStates answered {count} states for {len(followers)} followers")
    states = []
    for i, follower in enumerate(followers):
        at = 2 * WORD + i * words * WORD
        v = [int.from_bytes(raw[at + k * WORD : at + (k + 1) * WORD], "big") for k in range(words)]
        states.append(
            FollowerState(
                follower, v[0], v[1], v[2], v[3], v[4], v[5], v[6], bool(v[7]), v[8], v[9]
            )
        )
    return states


class Decider:
    """Reads follower states in batches and turns what is due into jobs."""

    def __init__(self, w3: AsyncWeb3[Any], settings: Settings) -> None:
        self.w3 = w3
        self.settings = settings
        self.keeper = settings.keeper
        self.vault_abi = artifacts.vault_abi(settings)
        check_layout(self.vault_abi)
        self.calls = VaultCalls(self.vault_abi)

    def vault(self, address: str) -> AsyncContract:
        return self.w3.eth.contract(address=checksum(address), abi=self.vault_abi)

    async def _states(self, vault: str, batch: list[str]) -> list[FollowerState]:
        started = time.perf_counter()
        data = self.calls.encode("followerStates", batch)
        raw = await self.w3.eth.call({"to": checksum(vault), "data": data})
        states = decode_states(bytes(raw), batch)
        log.debug(
            "read %s followers of %s in %.1f ms",
            len(batch),
            vault,
            1000 * (time.perf_counter() - started),
        )
        return states

    async def decide(
        self,
        vault: str,
        followers: list[str],
        sweep: Sweep,
        put: Callable[[Job], Awaitable[object]],
        *,
        block: int,
        seen_at: float,
    ) -> None:
        """Look at ``vault``'s followers and ``put`` a job for what is due. Batches are read
        concurrently and each batch's job is put as soon as its answer arrives, so the first
        exit is on its way while later batches are still being read."""

        async def one(batch: list[str]) -> None:
            states = await self._states(vault, batch)
            if sweep.exits:
                for bps, due in exit_groups(states):
                    job = Job(
                        "exits", vault, due, exit_slippage_bps=bps, block=block, seen_at=seen_at
                    )
                    await put(job)
            for job in await self._other_jobs(vault, states, sweep, block, seen_at):
                await put(job)

        await asyncio.gather(*(one(b) for b in batches(followers, self.keeper.batch_size)))
        if sweep.mirrors:
            for job in await self._mirror_jobs(vault, block, seen_at):
                await put(job)

    async def _other_jobs(
        self, vault: str, states: list[FollowerState], sweep: Sweep, block: int, seen_at: float
    ) -> list[Job]:
        jobs: list[Job] = []
        if sweep.peaks:
            threshold = BPS + self.keeper.peak_threshold_bps
            peaks = [
                s.follower
                for s in states
                if s.max_drawdown_bps
                and not s.exit_due
                and s.shares
                and s.value * BPS >= s.peak_value * threshold
            ]
            if peaks:
                jobs.append(Job("peaks", vault, tuple(peaks), block=block, seen_at=seen_at))
        if sweep.crystallise:
            now = await self._block_time(block) if block else int(time.time())
            fees = [
                s.follower
                for s in states
                if s.crystallisable_at
                and s.crystallisable_at <= now
                and s.value > s.high_water_mark
                and not s.exit_due
            ]
            if fees:
                jobs.append(Job("crystallise", vault, tuple(fees), block=block, seen_at=seen_at))
        return jobs

    async def _block_time(self, block: int) -> int:
        return int((await self.w3.eth.get_block(block))["timestamp"])

    async def _mirror_jobs(self, vault: str, block: int, seen_at: float) -> list[Job]:
        contract = self.vault(vault)
        count = await contract.functions.mirrorCount().call()
        if count == 0:
            return []
        mirror_id = count - 1
        remaining = (await contract.functions.mirror(mirror_id).call())[3]
        if remaining == 0:
            return []
        return [Job("mirror", vault, mirror_id=mirror_id, block=block, seen_at=seen_at)]

"""Deciding what is due: many followers per call, and jobs for what the contracts would do now.

``followerStates`` answers for a whole list of followers in one eth_call, from the same code
``triggerExits`` runs, so the keeper never judges a follower differently from the vault. Calls
grow with batches of ``batch_size`` followers, never with followers.
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

from tandem import artifacts
from tandem.config import Settings
from tandem.keeper.calls import VaultCalls
from tandem.keeper.queue import Job

log = logging.getLogger("tandem.keeper")

BPS = 10_000
V3_FEE_TIERS = (500, 3_000, 10_000)
ZERO = "0x0000000000000000000000000000000000000000"


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
    reason: int


@dataclass(frozen=True)
class Sweep:
    """What to look for in one pass over a vault."""

    exits: bool = True
    peaks: bool = True
    crystallise: bool = False
    mirrors: bool = False


def batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Routes:
    """How to swap a token to another on exits and mirrors: the deepest direct Uniswap pool.

    Found once per pair from the address book's factories and kept; a token without a pool is
    paid in kind by the vault, which is the contract's own fallback.
    """

    def __init__(self, w3: AsyncWeb3[Any], book: dict[str, str], settings: Settings) -> None:
        self.w3 = w3
        self.book = book
        self.settings = settings
        self._cache: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._erc20 = artifacts.load("TestToken", settings).abi

    def _contract(self, name: str, abi: list[dict[str, Any]]) -> AsyncContract | None:
        address = self.book.get(name)
        return self.w3.eth.contract(address=checksum(address), abi=abi) if address else None

    async def route(self, token_in: str, token_out: str) -> tuple[str, str] | None:
        """(adapter, route hex) for a direct swap, or None without a pool."""
        key = (token_in, token_out)
        if key not in self._cache:
            self._cache[key] = await self._find(token_in, token_out)
        return self._cache[key]

    async def _find(self, token_in: str, token_out: str) -> tuple[str, str] | None:
        candidates: list[tuple[int, str, str]] = []
        v2 = self._contract(
            "UniswapV2Factory", artifacts.uniswap("UniswapV2Factory", self.settings).abi
        )
        if v2 is not None and "UniswapV2Adapter" in self.book:
            pair = await v2.functions.getPair(token_in, token_out).call()
            if pair != ZERO:
                depth = await self._depth(token_out, pair)
                route = token_in[2:] + token_out[2:]
                candidates.append((depth, self.book["UniswapV2Adapter"], "0x" + route.lower()))
        v3 = self._contract(
            "UniswapV3Factory", artifacts.uniswap("UniswapV3Factory", self.settings).abi
        )
        if v3 is not None and "UniswapV3Adapter" in self.book:
            for fee in V3_FEE_TIERS:
                pool = await v3.functions.getPool(token_in, token_out, fee).call()
                if pool == ZERO:
                    continue
                depth = await self._depth(token_out, pool)
                route = token_in[2:] + fee.to_bytes(3, "big").hex() + token_out[2:]
                candidates.append((depth, self.book["UniswapV3Adapter"], "0x" + route.lower()))
        if not candidates:
            log.warning("no pool from %s to %s: exits pay that token in kind", token_in, token_out)
            return None
        _, adapter, route = max(candidates)
        return checksum(adapter), route

    async def _depth(self, token: str, pool: str) -> int:
        contract = self.w3.eth.contract(address=checksum(token), abi=self._erc20)
        return int(await contract.functions.balanceOf(pool).call())


# followerStates returns an array of static structs: an offset, a length, then nine 32-byte
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
            FollowerState(follower, v[0], v[1], v[2], v[3], v[4], v[5], v[6], bool(v[7]), v[8])
        )
    return states


class Decider:
    """Reads follower states in batches and turns what is due into jobs."""

    def __init__(
        self, w3: AsyncWeb3[Any], settings: Settings, routes: Routes, base_asset: str
    ) -> None:
        self.w3 = w3
        self.settings = settings
        self.keeper = settings.keeper
        self.routes = routes
        self.base_asset = base_asset
        self.vault_abi = artifacts.load("TandemVault", settings).abi
        check_layout(self.vault_abi)
        self.calls = VaultCalls(self.vault_abi)
        self._swaps: dict[str, tuple[tuple[str, str, str], ...]] = {}

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
        swaps: asyncio.Future[tuple[tuple[str, str, str], ...]] | None = None

        async def one(batch: list[str]) -> None:
            nonlocal swaps
            states = await self._states(vault, batch)
            due = [s.follower for s in states if s.exit_due]
            if sweep.exits and due:
                if swaps is None:  # read once per vault and look, by the first batch that needs it
                    swaps = asyncio.ensure_future(self.exit_swaps(vault))
                await put(
                    Job("exits", vault, tuple(due), await swaps, block=block, seen_at=seen_at)
                )
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

    async def exit_swaps(self, vault: str) -> tuple[tuple[str, str, str], ...]:
        """One swap to the base asset for each other token the vault holds, where a pool exists.

        Kept until the vault trades (``forget_swaps``): finding routes takes a dozen calls, which
        must not stand between a price drop and the exits it calls for."""
        if vault not in self._swaps:
            self._swaps[vault] = await self._exit_swaps(vault)
        return self._swaps[vault]

    def forget_swaps(self, vault: str) -> None:
        self._swaps.pop(vault, None)

    async def _exit_swaps(self, vault: str) -> tuple[tuple[str, str, str], ...]:
        tokens = await self.vault(vault).functions.tokens().call()
        swaps = []
        for token in tokens[1:]:
            route = await self.routes.route(checksum(token), self.base_asset)
            if route is not None:
                swaps.append((checksum(token), *route))
        return tuple(swaps)

    async def _mirror_jobs(self, vault: str, block: int, seen_at: float) -> list[Job]:
        contract = self.vault(vault)
        count = await contract.functions.mirrorCount().call()
        if count == 0:
            return []
        mirror_id = count - 1
        token_in, _deadline, token_out, remaining, _ = await contract.functions.mirror(
            mirror_id
        ).call()
        if remaining == 0:
            return []
        route = await self.routes.route(checksum(token_in), checksum(token_out))
        if route is None:
            return []
        swap = ((checksum(token_in), *route),)
        return [Job("mirror", vault, (), swap, mirror_id=mirror_id, block=block, seen_at=seen_at)]

"""Indexer benchmark: how fast does the indexer turn protocol events into rows?

It measures, in one run, on a real PostgreSQL server (the pgserver package):

1. **End-to-end backfill from anvil.** A scenario of masters, followers, trades, price updates,
   exits and fee charges is played on anvil; then the real indexer service indexes the chain
   from the hub's first block: events per second, and the RPC calls it made, by method.
2. **Decode-and-store throughput from a recording.** The logs of that backfill, and the node's
   answers to the read-only calls the indexer made while storing them, were recorded. They are
   replayed, copied forward in time until there are ``--events`` of them (a million by default),
   through the indexer's own handler into a fresh database, in the ranges the follower reads,
   each stored as the follower stores it (on PostgreSQL by the writer process, with the cursor).
   The node is not asked anything, so its speed is not what is measured: this is the share of a
   backfill that is our own code's (decoding, the rows for every table, the inserts). The CPU
   time each process used over the replay (the indexer, its writer, PostgreSQL's) splits it
   between our code and the database (a process that ended during the replay is not counted;
   the server serves nothing else meanwhile).
3. **The ceilings.** The same PostgreSQL, in the same run, takes the same number of plain rows
   (one per event, shaped as the ``events`` table, its indexes included) by ``COPY``: the
   issue's ceiling, the fastest any indexer writing one row per event could go. The indexer
   writes about six (the event's row, its journal row, typed rows, points and books), so the
   throughput is printed as a share of it in events, and in rows stored per second. The rows
   this run wrote, every table's with the same content, are timed by ``COPY`` too: the fastest
   the database takes exactly what this indexer stores.

Targets: at least 10,000 events per second and at least half the ceiling (in events, out of
reach of any indexer storing these tables: see the README). It prints what it measured and
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from sqlalchemy import Engine, create_engine, text
from web3 import Web3
from web3.providers.base import BaseProvider
from web3.types import RPCEndpoint

from indexer.handler import Indexer
from indexer.service import IndexerService
from tandem import artifacts
from tandem.chain import connect
from tandem.config import IndexerSettings, Settings, load_settings
from tandem.db import models
from tandem.db.engine import new_engine
from tandem.db.migrate import upgrade
from tandem.db.stream import journal
from tandem.follower import Cursor
from tandem.follower.heads import to_hex
from tandem.node import LocalNode
from tandem.protocol import (
    BASE,
    MAX_ENTRY_COST_BPS,
    Deployment,
    create_master,
    deploy_local,
    set_balance,
)

RANGE_LOGS = 2_000  # logs per replayed range (the follower reads up to 2,000 blocks at once)
MASTERS = 24
FOLLOWERS = 25  # per master
TRADED = ("LINK", "WETH", "WBTC")


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    if "error" in response:
        raise RuntimeError(f"{method}: {response['error']}")
    return response["result"]


def person(label: str) -> str:
    return Web3.to_checksum_address(keccak(text=f"bench-indexer:{label}")[12:])


# --- 1. the scenario on anvil


def play(dep: Deployment, target_events: int, rng: random.Random) -> int:
    """Masters with followers trade in rounds, one block a round, with price moves, exits and
    re-entries, until the chain holds ``target_events`` protocol events. Returns the blocks."""
    w3 = dep.w3
    rpc(w3, "anvil_autoImpersonateAccount", True)
    vaults = []
    for i in range(MASTERS):
        master = person(f"master:{i}")
        set_balance(w3, master, 10**21)
        vault = create_master(dep, master, dep.units(BASE, 200_000))
        followers = [person(f"follower:{i}:{j}") for j in range(FOLLOWERS)]
        for follower in followers:
            set_balance(w3, follower, 10**20)
        vaults.append((vault, master, followers))
    owner = w3.eth.accounts[0]
    # From here on, one block a step: the node keeps the state of its latest blocks only, and the
    # indexer reads the vaults' books at each block with a point.
    rpc(w3, "evm_setAutomine", False)
    allocation = dep.units(BASE, 2_000)
    deposit = allocation * 4  # the default cap: an allocation of at most 25% of the account
    for step in (
        lambda v, f: dep.base.functions.mint(f, deposit),
        lambda v, f: dep.base.functions.approve(dep.hub.address, deposit),
        lambda v, f: dep.hub.functions.deposit(deposit),
        lambda v, f: dep.hub.functions.allocate(v.address, allocation, MAX_ENTRY_COST_BPS),
        lambda v, f: v.functions.setLimits((2_500, 0, 0)),  # 25% stop-losses: none fires
    ):
        send(w3, [(step(vault, f), f) for vault, _, followers in vaults for f in followers])
        rpc(w3, "evm_mine")
    events = count_events(dep, [v.address for v, _, _ in vaults])
    rounds = 0
    while events < target_events:
        calls: list[tuple[Any, str]] = []
        for vault, master, followers in vaults:
            symbol = rng.choice(TRADED)
            held = vault.functions.books(dep.address_of(symbol)).call()[0]
            if held and rng.random() < 0.5:
                calls.append((trade_call(dep, vault, symbol, BASE, held // 2), master))
            else:
                base = vault.functions.books(dep.base.address).call()[0]
                calls.append((trade_call(dep, vault, BASE, symbol, base // 20), master))
            if rounds % 5 == 4:
                # A follower leaves in kind (a fee is charged on a gain) and another comes back.
                leaver = followers[rng.randrange(len(followers))]
                shares = vault.functions.sharesOf(leaver).call()
                if shares:
                    calls.append((vault.functions.exitInKind(shares // 2), leaver))
                joiner = followers[rng.randrange(len(followers))]
                amount = dep.units(BASE, 100)
                calls.append(
                    (dep.hub.functions.allocate(vault.address, amount, MAX_ENTRY_COST_BPS), joiner)
                )
        for symbol in TRADED:
            feed = dep.feeds[symbol]
            answer = feed.functions.latestRoundData().call()[1]
            move = Decimal(1) + Decimal(rng.randint(-40, 40)) / 10_000
            calls.append((feed.functions.setAnswer(int(answer * move)), owner))
        send(w3, calls)
        rpc(w3, "evm_mine")
        rounds += 1
        if rounds % 20 == 0:
            events = count_events(dep, [v.address for v, _, _ in vaults])
    rpc(w3, "evm_setAutomine", True)
    return int(w3.eth.block_number)


def trade_call(dep: Deployment, vault: Any, token_in: str, token_out: str, amount: int) -> Any:
    route = dep.v2_route(token_in, token_out)
    trade = (
        dep.address_of(token_in),
        dep.address_of(token_out),
        amount,
        0,
        route.adapter,
        route.data,
        0,
    )
    return vault.functions.trade(trade)


def send(w3: Web3, calls: list[tuple[Any, str]]) -> None:
    """Sends without waiting: they are mined together by the next ``evm_mine``. A transaction
    that would revert (a trade past its bound after the others moved the pool) is left out."""
    for fn, sender in calls:
        tx = {
            "from": sender,
            "to": fn.address,
            "data": fn._encode_transaction_data(),
            "gas": hex(2_000_000),
        }
        w3.provider.make_request(RPCEndpoint("eth_sendTransaction"), [tx])


def count_events(dep: Deployment, vaults: Sequence[str]) -> int:
    feeds = [dep.feeds[s].address for s in dep.feeds]
    query: Any = {
        "fromBlock": 0,
        "toBlock": "latest",
        "address": [dep.hub.address, *vaults, *feeds],
    }
    return len(dep.w3.eth.get_logs(query))


# --- 2. recording what the indexer reads, and replaying it


class Recorder:
    """Counts a client's requests by method and keeps the answers to the ones that read state at
    a block, by method and parameters, to be replayed."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.answers: dict[tuple[Any, ...], Any] = {}

    def wrap(self, provider: Any, keep: bool) -> None:
        one, many = provider.make_request, provider.make_batch_request

        def make_request(method: RPCEndpoint, params: Any) -> Any:
            self.calls[method] += 1
            response = one(method, params)
            if keep:
                self.answers[key(method, params)] = response
            return response

        def make_batch_request(requests: list[tuple[RPCEndpoint, Any]]) -> Any:
            self.calls["batch requests"] += 1
            responses = many(requests)
            for (method, params), response in zip(requests, responses, strict=True):
                self.calls[method] += 1
                if keep:
                    self.answers[key(method, params)] = response
            return responses

        async def make_async_request(method: RPCEndpoint, params: Any) -> Any:
            self.calls[method] += 1
            return await one(method, params)

        if asyncio.iscoroutinefunction(one):
            provider.make_request = make_async_request
        else:
            provider.make_request, provider.make_batch_request = make_request, make_batch_request
        provider._request_func_cache = (None, None)  # web3 keeps the method it saw first


def key(method: str, params: Any) -> tuple[Any, ...]:
    """A request as a dictionary key. The stand-in node computes one for each of the millions of
    reads a replay makes: nested tuples, several times cheaper than JSON text, so that the
    replay's time is the indexer's rather than its stand-in node's."""
    if (call := view_call(method, params)) is not None:
        to, data, block_hash = call
        return (method, to, data, canonical(block_hash))
    return (method, *map(frozen, params))


def view_call(method: str, params: Any) -> tuple[Any, Any, Any] | None:
    """An ``eth_call`` of the indexer's reads (data, to an address or to none, at a block hash):
    its address (None), data and block hash; None for any other request."""
    if method != "eth_call" or len(params) != 2:
        return None
    call, at = params
    if type(call) is not dict or not call.keys() <= {"to", "data"} or "data" not in call:
        return None
    if type(at) is not dict or at.keys() != {"blockHash"}:
        return None
    return call.get("to"), call["data"], at["blockHash"]


def frozen(param: Any) -> Any:
    """``param`` as hashable values in a canonical form: hashes as ``0x`` hex."""
    if isinstance(param, str):
        return param
    if isinstance(param, dict):
        return tuple(sorted((k, frozen(v)) for k, v in param.items()))
    if isinstance(param, list | tuple):
        return tuple(map(frozen, param))
    return canonical(param)


def canonical(param: Any) -> Any:
    """Hashes as ``0x`` hex, whether web3 passed them as bytes or text."""
    return HexBytes(param).to_0x_hex() if isinstance(param, bytes) else param


class ReplayProvider(BaseProvider):
    """A node that answers what was recorded, block hashes of the copies mapped back to the
    recorded blocks'. Anything else goes to the live node and is counted in ``asked``."""

    def __init__(self, answers: dict[tuple[Any, ...], Any], live: BaseProvider) -> None:
        super().__init__()
        self.answers, self.live = answers, live
        self.original: dict[str, str] = {}
        self.moved: dict[str, str] = {}
        self.asked: Counter[str] = Counter()

    def make_request(self, method: RPCEndpoint, params: Any) -> Any:
        if (call := view_call(method, params)) is not None:
            # Most requests: looked up without building the recorded request first.
            to, data, block_hash = call
            block_hash = canonical(block_hash)
            answer = self.answers.get((method, to, data, self.original.get(block_hash, block_hash)))
            if answer is not None:
                return answer
        params = [self.recorded(canonical(p)) for p in params]
        answer = self.answers.get(key(method, params))
        if answer is None:
            self.asked[method] += 1
            return self.live.make_request(method, params)
        if method == "eth_getTransactionReceipt":
            # The copy's transaction is in the copy's block.
            result = answer["result"]
            answer = {**answer, "result": {**result, "blockHash": self.moved[result["blockHash"]]}}
        return answer

    def recorded(self, param: Any) -> Any:
        """A parameter of a copy's request as the recorded request had it."""
        if isinstance(param, str):
            return self.original.get(param, param)
        if isinstance(param, dict) and "blockHash" in param:  # a block by hash (EIP-1898)
            return {**param, "blockHash": self.original.get(param["blockHash"], param["blockHash"])}
        return param

    def make_batch_request(self, requests: list[tuple[RPCEndpoint, Any]]) -> Any:
        return [self.make_request(method, params) for method, params in requests]

    def copy(self, original: dict[str, str]) -> None:
        """Answers for the copy whose hashes map to the recorded ones by ``original``."""
        self.original = original
        self.moved = {v: k for k, v in original.items()}

    def is_connected(self, show_traceback: bool = False) -> bool:
        return True


def copies(
    logs: list[dict[str, Any]], total: int
) -> Iterator[tuple[list[dict[str, Any]], dict[str, str]]]:
    """The recorded logs, then copies of them moved forward in blocks and time, until ``total``
    logs; each copy with its block hashes mapped to the recorded ones. A vault is created once:
    copies leave ``VaultCreated`` out (every other row is keyed by its block)."""
    created = keccak(text="VaultCreated(address,address)")
    first, last = logs[0]["blockNumber"], logs[-1]["blockNumber"]
    span = last - first + 1
    seconds = int(logs[-1]["blockTimestamp"], 16) - int(logs[0]["blockTimestamp"], 16) + 12
    made, n = 0, 0
    while made < total:
        batch: list[dict[str, Any]] = []
        original: dict[str, str] = {}
        for log in logs:
            if n and bytes(log["topics"][0]) == created:
                continue
            if made + len(batch) >= total:
                break
            block_hash = HexBytes(log["blockHash"]).to_0x_hex()
            tx_hash = HexBytes(log["transactionHash"]).to_0x_hex()
            moved_block, moved_tx = (moved(h, n) for h in (block_hash, tx_hash))
            original[moved_block], original[moved_tx] = block_hash, tx_hash
            batch.append(
                {
                    **log,
                    "blockNumber": log["blockNumber"] + n * span,
                    "blockHash": HexBytes(moved_block),
                    "blockTimestamp": hex(int(log["blockTimestamp"], 16) + n * seconds),
                    "transactionHash": HexBytes(moved_tx),
                }
            )
        made += len(batch)
        n += 1
        yield batch, original


def moved(hash_: str, n: int) -> str:
    """A block's or transaction's hash in the ``n``-th copy (the recorded one's in the first)."""
    return HexBytes(keccak(HexBytes(hash_) + n.to_bytes(4, "big"))).to_0x_hex() if n else hash_


def ranges(logs: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """``logs`` in ranges of about ``size``, never splitting a block (as the follower reads)."""
    start = 0
    while start < len(logs):
        end = min(start + size, len(logs))
        while end < len(logs) and logs[end]["blockNumber"] == logs[end - 1]["blockNumber"]:
            end += 1
        yield logs[start:end]
        start = end


# --- 3. the database and the ceiling


@contextmanager
def postgres() -> Iterator[tuple[str, int]]:
    """A real PostgreSQL server (pgserver) for the run: its URL for a new database per use, and
    its main process's id (its other processes are its children)."""
    warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set")
    import pgserver

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pg"
        server = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]
        try:
            main = int((data / "postmaster.pid").read_text().split()[0])
            yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1), main
        finally:
            server.cleanup()


def cpu_seconds(processes: Sequence[psutil.Process]) -> dict[int, float]:
    """The CPU time (user and system) each of ``processes`` has used so far, by process id."""
    used: dict[int, float] = {}
    for process in processes:
        with suppress(psutil.Error):  # gone meanwhile
            times = process.cpu_times()
            used[process.pid] = times.user + times.system
    return used


def database_cpu(postgres_pid: int) -> dict[int, float]:
    """CPU time so far of the server's processes: its main one and its children (a backend for
    each connection, the WAL writer, the checkpointer)."""
    server = psutil.Process(postgres_pid)
    return cpu_seconds([server, *server.children(recursive=True)])


def cpu_over(before: dict[int, float], after: dict[int, float]) -> float:
    """The CPU time used between the two readings (a process started between them, such as a
    backend for a new connection, with all of its)."""
    return sum(used - before.get(pid, 0.0) for pid, used in after.items())


def fresh_database(server_url: str, name: str) -> Engine:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base, _, query = server_url.partition("?")
    engine = new_engine(f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else ""))
    upgrade(engine)
    return engine


def copy_same_rows(engine: Engine) -> tuple[int, float]:
    """The rows the replay wrote, every table's, exported as ``COPY`` text, then timed
    going into empty tables like them by ``COPY``: the database's share of storing them."""
    raw = engine.raw_connection()
    try:
        cursor: Any = raw.cursor()
        exported: list[tuple[str, bytes, int]] = []
        # Every table the replay wrote: the indexer's, and the live stream's journal.
        for name in [model.__tablename__ for model in models.INDEXER_MODELS] + [journal.name]:
            cursor.execute(f"CREATE TABLE copy_{name} (LIKE {name} INCLUDING ALL)")
            text_rows = io.BytesIO()
            with cursor.copy(f"COPY {name} TO STDOUT") as copy:
                for chunk in copy:
                    text_rows.write(chunk)
            cursor.execute(f"SELECT count(*) FROM {name}")  # noqa: S608 - our own table names
            exported.append((name, text_rows.getvalue(), cursor.fetchone()[0]))
        raw.commit()
        start = time.perf_counter()
        for name, data, _ in exported:
            with cursor.copy(f"COPY copy_{name} FROM STDIN") as copy:
                copy.write(data)
        raw.commit()
        return sum(n for _, _, n in exported), time.perf_counter() - start
    finally:
        raw.close()


def copy_ceiling(engine: Engine, events: int) -> float:
    """Seconds for ``COPY`` to take ``events`` plain rows shaped as the events table's, into a
    table like it (its indexes included), in one transaction."""
    args = json.dumps(
        {"vault": "0x" + "ab" * 20, "amountIn": str(10**24), "amountOut": str(10**21)}
    )
    rest = f"\t0x{'cd' * 32}\t1700000000\t0x{'ef' * 32}\t0x{'12' * 20}\tTraded\t{args}\n"
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE copy_ceiling (LIKE events INCLUDING ALL)"))
    raw = engine.raw_connection()
    try:
        cursor: Any = raw.cursor()
        columns = "block_number, log_index, tx_hash, timestamp, block_hash, address, name, args"
        start = time.perf_counter()
        with cursor.copy(f"COPY copy_ceiling ({columns}) FROM STDIN") as copy:
            chunk = io.StringIO()
            for i in range(events):
                chunk.write(f"{i // 100}\t{i % 100}{rest}")
                if i % 10_000 == 9_999:
                    copy.write(chunk.getvalue())
                    chunk = io.StringIO()
            copy.write(chunk.getvalue())
        raw.commit()
        return time.perf_counter() - start
    finally:
        raw.close()


# --- the run


def settings_for(base: Settings, rpc_url: str, engine: Engine, tmp: Path, hub: str) -> Settings:
    url = engine.url.render_as_string(hide_password=False)
    indexer = IndexerSettings.model_validate(
        {**base.indexer.model_dump(), "database_url": url, "hub": hub, "heads": "poll"}
    )
    return base.model_copy(
        update={"rpc_url": rpc_url, "indexer": indexer, "deployments_dir": tmp / "deployments"}
    )


async def backfill(settings: Settings, recorder: Recorder) -> tuple[IndexerService, float]:
    service = IndexerService(settings)
    await service.open()
    recorder.wrap(service.w3.provider, keep=False)
    recorder.wrap(service.indexer.reader.provider, keep=True)
    start = time.perf_counter()
    await service.catch_up()
    elapsed = time.perf_counter() - start
    return service, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to replay")
    parser.add_argument("--record", type=int, default=20_000, help="events to play on anvil")
    parser.add_argument("--profile", help="write a cProfile of the replay to this file")
    args = parser.parse_args(argv)
    rng = random.Random(2026)  # noqa: S311 - a scenario, the same in every run
    base = load_settings()

    with (
        tempfile.TemporaryDirectory() as tmp,
        # Every state in memory: the backfill reads the vaults at each of its blocks.
        LocalNode(settings=base, states_in_memory=100_000) as node,
        postgres() as (server, postgres_pid),
    ):
        w3 = connect(node.rpc_url, settings=base)
        dep = deploy_local(w3, settings=base, save=False)
        start = time.perf_counter()
        head = play(dep, args.record, rng)
        played = time.perf_counter() - start
        print(
            f"\nindexer benchmark: a scenario of {head:,} blocks played on anvil in {played:.0f} s"
        )

        # 1. End to end, recording what the node answered.
        engine = fresh_database(server, "backfill")
        settings = settings_for(base, node.rpc_url, engine, Path(tmp), dep.hub.address)
        artifacts.save_deployment(artifacts.book_key(w3), dep.addresses(), settings, merge=False)
        recorder = Recorder()
        service, elapsed = asyncio.run(backfill(settings, recorder))
        indexed, rows = service.indexer.events_read, service.indexer.rows_written
        by_method = ", ".join(f"{m} {n:,}" for m, n in recorder.calls.most_common())
        print(
            f"end-to-end backfill:   {indexed:,} events, {rows:,} rows in {elapsed:.2f} s: "
            f"{indexed / elapsed:,.0f} events/s"
        )
        print(f"  RPC calls: {sum(recorder.calls.values()):,} ({by_method})")
        with engine.connect() as conn:
            query = text("SELECT count(*), count(master_index) FROM vault_points")
            points, read = conn.execute(query).one()
        print(f"  time-series points: {points:,}, {read:,} with the books read at their block")
        logs = recorded_logs(dep, service, head)
        service.indexer.close()
        engine.dispose()

        # 2. The replay.
        replay_engine = fresh_database(server, "replay")
        replay_settings = settings_for(
            base, node.rpc_url, replay_engine, Path(tmp), dep.hub.address
        )
        replay = ReplayProvider(recorder.answers, w3.provider)
        handler = Indexer(service.w3, Web3(replay), replay_settings, replay_engine, dep.hub.address)
        handler.sources = service.indexer.sources  # the feeds' aggregators, resolved once
        replay.asked.clear()  # the set-up's questions (the chain, the base asset)
        batches = list(copies(logs, args.events))
        total = sum(len(b) for b, _ in batches)
        gc.collect()
        gc.freeze()  # the recording lives as long as the run
        profile = cProfile.Profile() if args.profile else None
        # Where the replay's time goes: each process's CPU time over it.
        writer = [psutil.Process(handler.writer.process.pid)] if handler.writer else []
        cpu_before = (
            cpu_seconds([psutil.Process()]),
            cpu_seconds(writer),
            database_cpu(postgres_pid),
        )
        start = time.perf_counter()
        if profile:
            profile.enable()
        for batch, original in batches:
            replay.copy(original)
            for logs_of_range in ranges(batch, RANGE_LOGS):
                # As the follower stores a range: its rows and the cursor at its end, handed
                # over to the writer process (PostgreSQL) while the next range is decoded.
                seen = {e["blockNumber"]: to_hex(e["blockHash"]) for e in logs_of_range}
                last = logs_of_range[-1]["blockNumber"]
                end = Cursor(last, seen.pop(last))
                handler.follower.store(logs_of_range, seen, end)  # type: ignore[arg-type]
        handler.drain()  # every range committed
        replayed = time.perf_counter() - start
        cpu_after = cpu_seconds([psutil.Process()]), cpu_seconds(writer), database_cpu(postgres_pid)
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        rate = total / replayed
        print(
            f"decode and store:      {total:,} events ({len(logs):,} recorded, "
            f"{len(batches)} copies), {handler.rows_written:,} rows and "
            f"{handler.journal_written:,} journal rows in {replayed:.1f} s: "
            f"{rate:,.0f} events/s (target 10,000)"
        )
        print(f"  requests not in the recording: {sum(replay.asked.values())}")
        indexer_cpu, writer_cpu, server_cpu = (
            cpu_over(before, after) for before, after in zip(cpu_before, cpu_after, strict=True)
        )
        cores = psutil.cpu_count() or 1
        print(
            f"  CPU over the replay: the indexer {indexer_cpu:.1f} s, its writer {writer_cpu:.1f} s"
            f" (our code, {indexer_cpu + writer_cpu:.1f} s), PostgreSQL {server_cpu:.1f} s; "
            f"{(indexer_cpu + writer_cpu + server_cpu) / (cores * replayed):.0%} of "
            f"{cores} cores for {replayed:.1f} s"
        )

        # 3. The ceilings: the issue's (one plain row per event), and this run's own rows.
        ceiling = total / copy_ceiling(replay_engine, total)
        stored = handler.rows_written + handler.journal_written
        print(
            f"COPY ceiling:          {total:,} plain rows, one per event, at {ceiling:,.0f} "
            f"rows/s (target: at least half)\n"
            f"  decode and store, in rows: {stored / replayed:,.0f} rows/s ({stored / total:.2f} "
            f"an event), {stored / replayed / ceiling:.0%} of it; in events: "
            f"{rate / ceiling:.1%} of it"
        )
        rows, seconds = copy_same_rows(replay_engine)
        same = total / seconds
        print(
            f"COPY of this run's rows: the {rows:,} rows the replay wrote ({rows / total:.2f} per "
            f"event, every table's, the journal's too) in {seconds:.1f} s: {same:,.0f} events/s; "
            f"decode and store is {rate / same:.0%} of it (the database's share of its time; "
            f"our code's is {1 - rate / same:.0%})"
        )
        handler.close()
        replay_engine.dispose()
    return 0


def recorded_logs(dep: Deployment, service: IndexerService, head: int) -> list[dict[str, Any]]:
    """Every log the indexer read, as the node gave them."""
    feeds = [dep.feeds[s].address for s in dep.feeds]
    sources = [service.indexer.sources.source(f) or f for f in feeds]
    addresses = list(dict.fromkeys([dep.hub.address, *service.indexer.vaults, *feeds, *sources]))
    query: Any = {
        "fromBlock": 0,
        "toBlock": head,
        "address": addresses,
        "topics": [list(service.indexer.topics)],
    }
    return [dict(log) for log in dep.w3.eth.get_logs(query)]


if __name__ == "__main__":
    sys.exit(main())

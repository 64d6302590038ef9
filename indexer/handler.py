"""What the indexer stores for each event, and what it forgets when the chain reorganises.

The ``Indexer`` is the chain follower's ``LogHandler``: the follower reads the hub's, every
vault's and every price source's logs in block ranges and hands them here; their rows are
written in the database transaction that moves the cursor (on PostgreSQL by the writer process,
``indexer.writer``, while the next range is decoded), so the tables and the cursor always agree,
whatever stops the process. Every row carries its block number and nothing is ever updated, so
a rollback is one delete per table, and the state kept in memory (vaults, feeds, share balances,
when each vault's last point was) is re-read from the tables after one.

Two things are not in the logs: a trade's gas (from its receipt), and the time-series points (at
the end of each block that changed a vault, and hourly from prices, the vault's books are read at
that block's hash, in one read-only call per point: ``_PointRead``). Both are read for a whole
range at once, in batches of raw JSON-RPC requests, after its logs are decoded: per request,
web3's formatting costs more than everything else the indexer does for an event. A block that
vanished meanwhile fails its read, which aborts the range (``ChainMoved``) and the follower reads
again from its cursor.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hexbytes import HexBytes
from sqlalchemy import Connection, Engine, delete, func, select, tuple_
from web3 import AsyncWeb3, Web3
from web3.exceptions import (
    BadFunctionCallOutput,
    BlockNotFound,
    ContractLogicError,
    Web3RPCError,
)
from web3.types import LogReceipt, RPCEndpoint

from indexer import journal
from indexer.writer import Rows, Writer, write_rows
from tandem import artifacts
from tandem.config import Settings
from tandem.db import models as m
from tandem.errors import DeploymentError
from tandem.events import (
    EXIT_REASONS,
    MIRROR_DROPS,
    SKIP_REASONS,
    Decoder,
    Event,
    checksum,
    enum_name,
    jsonable,
)
from tandem.follower import ChainFollower, ChainMoved, Cursor, CursorStore, FeedSources
from tandem.follower.protocol import discovered

log = logging.getLogger(__name__)

# Shares per unit of USD value (18 decimals) the vault mints into an empty pool: share prices are
# scaled by it so that a share starts at 1.0 (1e18).
SHARES_PER_VALUE = 10**6
ONE = 10**18

# Vault events that change its books or its shares: a point at the end of their block.
FLOWS = frozenset(
    {
        "Allocated",
        "ExitedInKind",
        "ExitedToBase",
        "MasterDeposited",
        "MasterWithdrew",
        "MirrorExecuted",
        "PoolSoldToBase",
        "FeeCharged",
    }
)
# A stronger cause replaces a weaker one for one block (a mark is the weakest).
CAUSES = ("mark", "price", "flow", "trade")
DAY = 86_400

# Reads per batch request: public endpoints commonly take up to a thousand.
READ_BATCH = 500

# Node answers meaning "no state that old here" (a pruned node), not "no such block".
_NO_STATE = (
    "out of range",
    "outofrange",
    "missing trie",
    "pruned",
    "historical state",
    "state not available",
)
# Node answers meaning the call itself failed, as it will at that block every time it is asked
# (not the node): nothing to read there, as for a revert.
_CALL_FAILED = (
    "out of gas",
    "outofgas",
    "invalid opcode",
    "invalid jump",
    "stack underflow",
    "stack overflow",
)


class _PointRead:
    """A time-series point's reads in one ``eth_call`` without a target: the creation code of
    ``TandemPointReader`` (never deployed) with the vault, the hub and the tokens as its
    constructor's arguments. Its answer is raw words: the vault's equities (master, pool), its
    performance index, then each token's books (master, pool) and price (see the contract)."""

    def __init__(self, settings: Settings, hub: str) -> None:
        self.code = artifacts.load("TandemPointReader", settings).bytecode
        self.hub = _address_word(hub)

    def calldata(self, vault: str, tokens: Sequence[str]) -> str:
        # The constructor's arguments, ABI-encoded: the array's offset, then its length and items.
        head = _address_word(vault) + self.hub + f"{96:064x}" + f"{len(tokens):064x}"
        return self.code + head + "".join(map(_address_word, tokens))

    def decode(
        self, result: str, tokens: Sequence[str]
    ) -> tuple[int, int, int, list[tuple[int, int, int]]]:
        # Raw answers are 0x hex text: bytes.fromhex is many times cheaper than HexBytes.
        data = bytes.fromhex(result[2:]) if result[:2] in ("0x", "0X") else bytes(HexBytes(result))
        if len(data) != 32 * (3 + 3 * len(tokens)):
            raise ValueError(f"unexpected answer to a point's reads: {result}")
        words = [int.from_bytes(data[i : i + 32], "big") for i in range(0, len(data), 32)]
        books = [(words[i], words[i + 1], words[i + 2]) for i in range(3, len(words), 3)]
        return words[0], words[1], words[2], books


@functools.lru_cache(maxsize=1 << 12)
def _address_word(address: str) -> str:
    """An address as an ABI word in hex (a few vaults and tokens are in every point's call)."""
    return address[2:].lower().rjust(64, "0")


@dataclass
class _Batch:
    """What one range of logs adds, table by table, written at once at the end."""

    rows: dict[type[m.Base], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # (tx, vault, follower) -> the trigger of a risk exit, for the exit that follows it
    triggers: dict[tuple[str, str, str], tuple[str, str]] = field(default_factory=dict)

    # What the chain must still tell, read for the whole range at once:
    # (a point's row, its block hash), and (a trade's row, its transaction, its block hash).
    points: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    receipts: list[tuple[dict[str, Any], str, str]] = field(default_factory=list)
    # The stream journal's topics of each event, in the order of its ``events`` rows.
    keys: list[str] = field(default_factory=list)

    def add(self, model: type[m.Base], **values: Any) -> dict[str, Any]:
        self.rows[model].append(values)
        return values


class _Shares:
    """A vault's share balances by holder, with their sum and how many are positive kept as
    they move: a point needs both, and a popular vault has thousands of holders."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.total = 0
        self.holders = 0  # with a positive balance

    def move(self, holder: str, delta: int) -> None:
        before = self.balances.get(holder, 0)
        self.balances[holder] = before + delta
        self.total += delta
        self.holders += (before + delta > 0) - (before > 0)

    def holds(self, holder: str) -> bool:
        return self.balances.get(holder, 0) > 0


@dataclass
class _Block:
    number: int
    hash: str
    timestamp: int
    points: dict[str, str] = field(default_factory=dict)  # vault -> cause


class Indexer:
    """The indexer's ``LogHandler``, and its view of the protocol between ranges."""

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        reader: Web3,
        settings: Settings,
        engine: Engine,
        hub: str,
    ) -> None:
        """``w3`` follows the chain; ``reader`` (a blocking client on the same node) makes the
        few read-only calls a block's rows need inside the database transaction."""
        self.settings = settings
        self.reader = reader
        self.engine = engine
        self.hub = checksum(hub)
        self.decoder = Decoder(settings)
        self.interval = settings.indexer.point_interval
        self._read_point = _PointRead(settings, self.hub)
        hub_abi = artifacts.load("ITandemHub", settings).abi
        self._hub = reader.eth.contract(self.hub, abi=hub_abi)
        # Fixed when the hub was deployed: master deposits are in it.
        self.base_asset: str = checksum(self._hub_call(lambda h: h.baseAsset(), "latest"))
        self.sources = FeedSources(w3, settings)
        self._feed_abi = artifacts.load("IAggregatorV3", settings).abi
        self.cursors = CursorStore(engine, m.indexer_cursor)
        self._conn: Connection | None = None
        self.rows_written = 0  # for metrics
        self.events_read = 0
        self.journal_written = 0  # stream journal rows: a wake-up is due when it moves
        self.stream_retention = settings.indexer.stream_retention_blocks
        self._on: dict[str, Callable[[_Batch, Event, int], None]] = {
            "ParamsSet": self._params_set,
            "TreasurySet": self._params_set,
            "PausedSet": self._params_set,
            "AssetSet": self._asset_set,
            "AssetTradableSet": self._asset_set,
            "AdapterSet": self._adapter_set,
            "VaultCreated": self._vault_created,
            "Deposited": self._follower_flow,
            "Withdrawn": self._follower_flow,
            "AllocationChanged": self._allocation_changed,
            "AnswerUpdated": self._answer_updated,
            "DelegateSet": self._delegate_set,
            "Traded": self._traded,
            "PoolPartSkipped": self._pool_part_skipped,
            "MasterDeposited": self._master_flow,
            "MasterWithdrew": self._master_flow,
            "Allocated": self._allocated,
            "ExitTriggered": self._exit_triggered,
            "ExitedInKind": self._exited,
            "ExitedToBase": self._exited,
            "LimitsSet": self._limits_set,
            "PeakRecorded": self._peak_recorded,
            "MirrorRecorded": self._mirror,
            "MirrorExecuted": self._mirror,
            "MirrorDropped": self._mirror,
            "CopyingSuspended": self._suspension,
            "CopyingResumed": self._suspension,
            "FeeSet": self._fee_change,
            "FeeRaiseScheduled": self._fee_change,
            "FeeCharged": self._fee_charged,
            "PoolSoldToBase": self._pool_sold,
        }
        with engine.connect() as conn:
            self.load(conn)
        # On PostgreSQL, a second process stores the rows while this one decodes the next range.
        self.writer: Writer | None = None
        store = None
        if engine.dialect.name == "postgresql":
            self.writer = Writer(self._writer_url())
            store = self.hand_over
        self.follower = ChainFollower(
            w3, settings.indexer, self.cursors, self, origin=self.hub, store=store
        )

    # --- state between ranges, re-read from the tables

    def load(self, conn: Connection) -> None:
        # The last protocol block stored: the day a new block's marks would close.
        self.last_block: _Block | None = _last_block(conn)
        self.vaults: dict[str, str] = {
            r.vault: r.master for r in conn.execute(select(m.Vault.vault, m.Vault.master))
        }
        params = m.HubParams.__table__
        latest = (
            conn.execute(
                select(params).order_by(params.c.block_number.desc(), params.c.log_index.desc())
            )
            .mappings()
            .first()
        )
        self.params: dict[str, Any] | None = _state(latest) if latest is not None else None
        assets = m.Asset.__table__
        self.assets: dict[str, dict[str, Any]] = {}
        for asset in conn.execute(
            select(assets).order_by(assets.c.block_number, assets.c.log_index)
        ).mappings():
            self.assets[asset["token"]] = _state(asset)
        # Share balances per vault, read from the tables when a range first needs them (a
        # rollback or a restart reads nothing it does not use).
        self._shares: dict[str, _Shares] = {}
        self.last_point: dict[str, int] = {
            vault: int(timestamp)
            for vault, timestamp in conn.execute(
                select(m.VaultPoint.vault, func.max(m.VaultPoint.timestamp)).group_by(
                    m.VaultPoint.vault
                )
            )
        }
        # The tokens each vault's books may hold besides the base asset: what its trades and
        # mirrors bought (allocations only buy what the pool holds already).
        self.bought: dict[str, set[str]] = defaultdict(set)
        trades = select(m.Trade.vault, m.Trade.token_out).distinct()
        mirrors = (
            select(m.MirrorEvent.vault, m.MirrorEvent.token_out)
            .where(m.MirrorEvent.kind == "recorded")
            .distinct()
        )
        for query in (trades, mirrors):
            for vault, token in conn.execute(query):
                if token is not None:
                    self.bought[vault].add(token)
        # Each vault's latest mirror (the only one that can still be executed or dropped).
        self.mirrors: dict[str, tuple[int, str, str]] = {
            r.vault: (r.mirror_id, r.token_in, r.token_out)
            for r in conn.execute(
                select(
                    m.MirrorEvent.vault,
                    m.MirrorEvent.mirror_id,
                    m.MirrorEvent.token_in,
                    m.MirrorEvent.token_out,
                )
                .where(m.MirrorEvent.kind == "recorded")
                .order_by(m.MirrorEvent.block_number, m.MirrorEvent.log_index)
            )
        }

    # --- LogHandler

    @property
    def topics(self) -> Sequence[bytes]:
        return self.decoder.topics

    def addresses(self) -> Sequence[str]:
        return [self.hub, *self.vaults, *self._price_sources()]

    async def discover(self, logs: Sequence[LogReceipt]) -> Sequence[str]:
        """Vaults created and feeds set in ``logs``: their logs in the same range are read too."""
        events = (e for e in map(self.decoder.decode, logs) if e is not None)
        return await discovered(
            events, self.hub, self.addresses(), self.sources, lambda e: e.block_number
        )

    def handle(self, conn: Connection, logs: Sequence[LogReceipt]) -> None:
        try:
            rows = self._collect(conn, logs)
            write_rows(conn, rows)
        except BaseException:
            self._reload()
            raise
        self._count(rows)

    def hand_over(self, logs: Sequence[LogReceipt], seen: dict[int, str], cursor: Cursor) -> None:
        """The follower's ``store`` with a writer: the range's rows are made here and stored by
        the writer, with the cursor, while the next range is read and decoded."""
        assert self.writer is not None
        try:
            # Read only: share balances not in memory yet. None of a range in flight can be
            # missing from them: a vault's balances are kept in memory from the first range
            # that moves its shares (or values it) after they are read, until ``load``, which
            # runs with nothing in flight.
            with self.engine.connect() as conn:
                rows = self._collect(conn, logs)
        except BaseException:
            self._reload()
            raise
        self.writer.submit(rows, seen, cursor)
        self._count(rows)

    def drain(self) -> None:
        """Wait until every range handed over to the writer is committed (none: nothing)."""
        if self.writer is not None:
            self.writer.drain()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def recover(self) -> None:
        """After the writer failed (the database refused a range, or went away): a new writer,
        what the ranges it did not commit changed in memory read again from the tables, and the
        follower back at the committed cursor, to index those ranges again."""
        if self.writer is not None:
            self.writer.close()
            self.writer = Writer(self._writer_url())
        with self.engine.connect() as committed:
            self.load(committed)
        self.follower.cursor = self.cursors.cursor()

    def _writer_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=False)

    def _reload(self) -> None:
        """The range will not be stored: what it changed in memory goes too, read again from
        the tables once every range handed over before it is committed."""
        self.drain()
        with self.engine.connect() as committed:
            self.load(committed)

    def _count(self, rows: Rows) -> None:
        self.rows_written += rows.count()
        self.journal_written += len(rows.keys)

    def _collect(self, conn: Connection, logs: Sequence[LogReceipt]) -> Rows:
        """What one range stores; reads the tables in ``conn`` only for what is not in memory."""
        batch = _Batch()
        block: _Block | None = None
        self._conn = conn
        try:
            for entry in logs:
                event = self.decoder.decode(entry)
                if event is None or not self._ours(event):
                    continue
                if block is None or block.number != event.block_number:
                    new = _Block(event.block_number, event.block_hash, self._timestamp(event))
                    if block is not None:
                        self._mark_if_day_ended(batch, block, new)
                        self._end_block(batch, block)
                    elif self.last_block is not None:
                        self._mark_if_day_ended(batch, self.last_block, new, written=True)
                    block = new
                self._store(batch, event, block)
            if block is not None:
                self._end_block(batch, block)
                self.last_block = block
            self._read_chain(batch)
        finally:
            self._conn = None
        return Rows(
            [(model.__tablename__, rows) for model, rows in batch.rows.items()],
            batch.keys,
            None if block is None else block.number - self.stream_retention,
        )

    def roll_back(self, conn: Connection, ancestor: int) -> None:
        self.drain()  # the rows it deletes are committed
        # The stream tells what goes before it goes: each event still told as added above the
        # ancestor gets its `removed` message, in this transaction.
        self.journal_written += journal.remove_above(conn, ancestor)
        for model in m.INDEXER_MODELS:
            table: Any = model.__table__
            conn.execute(delete(table).where(table.c.block_number > ancestor))
        # A daily mark stands at the last protocol block of its day once a block of a later day
        # proves the day over. The last day kept has lost its proof: its marks go (the day may
        # yet have more blocks), and come back when a later day's block arrives.
        last = _last_block(conn)
        points: Any = m.VaultPoint.__table__
        unproven = points.c.cause == "mark"
        if last is not None:
            unproven &= points.c.timestamp >= last.timestamp - last.timestamp % DAY
        books: Any = m.VaultBook.__table__
        marked = select(points.c.vault, points.c.block_number).where(unproven)
        conn.execute(delete(books).where(tuple_(books.c.vault, books.c.block_number).in_(marked)))
        conn.execute(delete(points).where(unproven))
        self.load(conn)

    # --- one event

    def _ours(self, event: Event) -> bool:
        """Only the hub's events from the hub, vaults' from its vaults, answers from feeds."""
        if event.source == "hub":
            return event.address == self.hub
        if event.source == "vault":
            return event.address in self.vaults
        return event.address in self._price_sources()

    def _store(self, batch: _Batch, event: Event, block: _Block) -> None:
        if self.params is None and event.source == "hub":
            self._initial_params(batch, event, block.timestamp)
        self.events_read += 1
        args = jsonable(event.args)
        batch.rows[m.Event].append(
            {
                "block_number": event.block_number,
                "log_index": event.log_index,
                "tx_hash": event.tx_hash,
                "timestamp": block.timestamp,
                "block_hash": event.block_hash,
                "address": event.address,
                "name": event.name,
                "args": args,
            }
        )
        on = self._on.get(event.name)
        if on is not None:
            on(batch, event, block.timestamp)
        batch.keys.append(self._stream_keys(event))
        if event.source == "vault" and (event.name == "Traded" or event.name in FLOWS):
            self._point(block, event.address, "trade" if event.name == "Traded" else "flow")
        elif event.name == "AssetSet" and event.source == "hub":
            # A new feed (or heartbeat) changes what the vault's books are worth now, without an
            # answer: a point of every vault that may hold the token records the vault's own
            # index there, which a master who leaves right after is judged against.
            token = event.args["token"]
            for vault in self.vaults:
                if token == self.base_asset or token in self.bought.get(vault, ()):
                    self._point(block, vault, "price")
        elif event.name == "AnswerUpdated":
            for vault in self.vaults:
                last = self.last_point.get(vault)
                if last is None or block.timestamp - last >= self.interval:
                    self._point(block, vault, "price")

    def _stream_keys(self, event: Event) -> str:
        """The live stream's topics of ``event`` (after its handler: a new vault is known)."""
        vault: str | None = None
        assets: Iterable[str] = ()
        if event.source == "vault":
            vault = event.address
        elif event.name in ("VaultCreated", "AllocationChanged"):
            vault = event.args["vault"]
        elif event.source == "feed":
            assets = self._price_sources().get(event.address, ())
        master = self.vaults.get(vault) if vault else None
        return journal.keys(event, master, vault, assets)

    @staticmethod
    def _where(event: Event, timestamp: int) -> dict[str, Any]:
        return {
            "block_number": event.block_number,
            "log_index": event.log_index,
            "tx_hash": event.tx_hash,
            "timestamp": timestamp,
        }

    @staticmethod
    def _vault_row(event: Event, timestamp: int) -> dict[str, Any]:
        return {
            "block_number": event.block_number,
            "log_index": event.log_index,
            "tx_hash": event.tx_hash,
            "timestamp": timestamp,
            "vault": event.address,
        }

    def _timestamp(self, event: Event) -> int:
        if event.timestamp is not None:
            return event.timestamp
        try:
            block = self.reader.eth.get_block(HexBytes(event.block_hash))
        except BlockNotFound as exc:
            raise ChainMoved(f"block {event.block_number} is gone") from exc
        return int(block["timestamp"])

    # --- the hub

    def _initial_params(self, batch: _Batch, event: Event, timestamp: int) -> None:
        """The parameters the hub's constructor set (without an event), read at the block of the
        hub's first event."""
        at: Any = HexBytes(event.block_hash)
        params = self._call(lambda: self._hub.functions.params().call(block_identifier=at))
        if params is None:
            # A node without state that old: the parameters now, which differ only if they
            # changed since (and then every change is a row of its own).
            log.warning("reading the hub's first parameters at the latest block instead")
            at = "latest"
            params = self._hub_call(lambda h: h.params(), at)
        treasury = self._call(lambda: self._hub.functions.treasury().call(block_identifier=at))
        if treasury is None:
            treasury = self._hub_call(lambda h: h.treasury(), "latest")
        (slippage, cap, paused, min_order, budget, multiple, share, drawdown) = params
        self.params = {
            "max_slippage_bps": slippage,
            "default_allocation_cap_bps": cap,
            "min_order_value": min_order,
            "loss_budget_bps": budget,
            "max_pool_multiple": multiple,
            "protocol_fee_share_bps": share,
            "suspension_drawdown_bps": drawdown,
            "paused": paused,
            "treasury": checksum(treasury),
        }
        batch.add(
            m.HubParams,
            **{**self._where(event, timestamp), "log_index": -1},
            **self.params,
        )

    def _hub_call(self, function: Callable[[Any], Any], at: Any) -> Any:
        """A read of the hub that must answer (at the latest block, where it has code): one that
        cannot be decoded is a hub of another release, or no hub, at ``indexer.hub``, which no
        retry mends."""
        call = function(self._hub.functions)
        try:
            return call.call(block_identifier=at)
        except (ContractLogicError, BadFunctionCallOutput) as exc:
            raise DeploymentError(
                f"the contract at the hub address {self.hub} does not answer "
                f"{call.fn_name}() as this release's TandemHub ({exc.__class__.__name__})",
                "set indexer.hub to the address of a TandemHub of this release",
            ) from exc

    def _params_set(self, batch: _Batch, e: Event, ts: int) -> None:
        assert self.params is not None
        a = e.args
        if e.name == "ParamsSet":
            self.params.update(
                max_slippage_bps=a["maxSlippageBps"],
                default_allocation_cap_bps=a["defaultAllocationCapBps"],
                min_order_value=a["minOrderValue"],
                loss_budget_bps=a["lossBudgetBps"],
                max_pool_multiple=a["maxPoolMultiple"],
                protocol_fee_share_bps=a["protocolFeeShareBps"],
                suspension_drawdown_bps=a["suspensionDrawdownBps"],
            )
        elif e.name == "TreasurySet":
            self.params["treasury"] = a["treasury"]
        else:
            self.params["paused"] = a["paused"]
        batch.add(m.HubParams, **self._where(e, ts), **self.params)

    def _asset_set(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        token = a["token"]
        if e.name == "AssetSet":
            asset = {
                "token": token,
                "feed": a["feed"],
                "heartbeat": a["heartbeat"],
                "token_decimals": a["tokenDecimals"],
                "feed_decimals": a["feedDecimals"],
                "tradable": a["tradable"],
            }
        else:
            asset = {**self.assets[token], "tradable": a["tradable"]}
        before = self.assets.get(token)
        self.assets[token] = asset
        batch.add(m.Asset, **self._where(e, ts), **asset)
        if before is not None and before["feed"] != asset["feed"]:
            self._price_in_force(batch, e, ts, token, asset["feed"])

    def _price_in_force(self, batch: _Batch, e: Event, ts: int, token: str, feed: str) -> None:
        """The new ``feed``'s price of ``token`` from the ``AssetSet`` that made it the token's
        feed, stored as an answer at that log: the hub prices the token with the new feed's
        latest answer from then on, and the feed answered before it became the source (answers
        not stored: only a source's are), so without it the old feed's last answer would stay
        in force until the new one answers again, and a master leaving in between would leave
        at the old price. Read as the hub's ``priceOf`` would read it at that log: the new
        source's last answer earlier in the block, else the feed's latest answer at the block
        (or at its parent, when the source answers later in the block: the source's there when
        the feed is a proxy deployed in the block). Read by block hash, so a build from scratch
        and one after a reorganisation store the same row. Nothing is stored when none of these
        can be read (no state that old on the node, nothing at the address yet): ``inputs.Prices``
        then knows no price of the token until the new feed answers."""
        source = checksum(self.sources.source(feed) or feed)
        block_hash = HexBytes(e.block_hash)
        topic = HexBytes(self.decoder.topic("AnswerUpdated")).to_0x_hex()
        found = self._call(
            lambda: self.reader.eth.get_logs(
                {"blockHash": block_hash, "address": source, "topics": [topic]}
            )
        )
        if found is None:
            return
        answers = [x for x in map(self.decoder.decode, found) if x is not None]
        earlier = [x for x in answers if x.log_index < e.log_index]
        if earlier:
            last = max(earlier, key=lambda x: x.log_index)
            round_id, answer, updated_at = (
                last.args["roundId"],
                last.args["current"],
                last.args["updatedAt"],
            )
        else:
            at: Any = block_hash
            if answers:  # answers later in the block: the state before the block is the one
                at = self._call(lambda: self.reader.eth.get_block(block_hash)["parentHash"])
                if at is None:
                    return
            latest = self._latest_round(feed, at)
            if latest is None and answers and source != checksum(feed):
                # No answer from the feed before the block: a proxy deployed in it (nothing at
                # its address yet). It gives what its aggregator gives, which has not answered
                # in the block before the log: the aggregator's latest answer before the block
                # is the feed's at the log. An aggregator new in the block has none: its answer
                # later in the block is the token's first price.
                latest = self._latest_round(source, at)
            if latest is None:
                return
            round_id, answer, _, updated_at, _ = latest
        batch.add(
            m.Price,
            **self._where(e, ts),
            token=token,
            source=source,
            answer=answer,
            round_id=round_id,
            updated_at=updated_at,
        )

    def _latest_round(self, feed: str, at: Any) -> Any:
        """``feed``'s ``latestRoundData`` at block ``at``: None where it cannot be read (no code
        there yet, a revert, no state)."""
        contract = self.reader.eth.contract(checksum(feed), abi=self._feed_abi)
        return self._call(lambda: contract.functions.latestRoundData().call(block_identifier=at))

    def _adapter_set(self, batch: _Batch, e: Event, ts: int) -> None:
        batch.add(
            m.Adapter, **self._where(e, ts), adapter=e.args["adapter"], allowed=e.args["allowed"]
        )

    def _vault_created(self, batch: _Batch, e: Event, ts: int) -> None:
        vault, master = e.args["vault"], e.args["master"]
        self.vaults[vault] = master
        batch.add(m.Vault, **self._where(e, ts), vault=vault, master=master)

    def _follower_flow(self, batch: _Batch, e: Event, ts: int) -> None:
        kind = "deposit" if e.name == "Deposited" else "withdrawal"
        batch.add(
            m.FollowerFlow,
            **self._where(e, ts),
            follower=e.args["follower"],
            kind=kind,
            amount=e.args["amount"],
        )

    def _allocation_changed(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        batch.add(
            m.AllocationChange,
            **self._where(e, ts),
            follower=a["follower"],
            vault=a["vault"],
            allocation=a["allocation"],
            free=a["free"],
        )

    def _answer_updated(self, batch: _Batch, e: Event, ts: int) -> None:
        for token in sorted(self._price_sources().get(e.address, ())):
            batch.add(
                m.Price,
                **self._where(e, ts),
                token=token,
                source=e.address,
                answer=e.args["current"],
                round_id=e.args["roundId"],
                updated_at=e.args["updatedAt"],
            )

    # --- vaults

    def _delegate_set(self, batch: _Batch, e: Event, ts: int) -> None:
        batch.add(m.Delegate, **self._vault_row(e, ts), delegate=e.args["delegate"])

    def _traded(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        row = batch.add(
            m.Trade,
            **self._vault_row(e, ts),
            trader=a["trader"],
            token_in=a["tokenIn"],
            token_out=a["tokenOut"],
            adapter=a["adapter"],
            master_in=a["masterIn"],
            pool_in=a["poolIn"],
            master_out=a["masterOut"],
            pool_out=a["poolOut"],
            price_in=a["priceIn"],
            price_out=a["priceOut"],
            gas_used=None,  # from the receipt, read with the range's other reads
            gas_price=None,
        )
        batch.receipts.append((row, e.tx_hash, e.block_hash))
        self.bought[e.address].add(a["tokenOut"])

    def _pool_part_skipped(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        batch.add(
            m.PoolSkip,
            **self._vault_row(e, ts),
            token_in=a["tokenIn"],
            token_out=a["tokenOut"],
            pool_in=a["poolIn"],
            reason=enum_name(SKIP_REASONS, a["reason"]),
        )

    def _master_flow(self, batch: _Batch, e: Event, ts: int) -> None:
        if e.name == "MasterDeposited":
            kind, token = "deposit", self.base_asset
        else:
            kind, token = "withdrawal", e.args["token"]
        batch.add(
            m.MasterFlow, **self._vault_row(e, ts), kind=kind, token=token, amount=e.args["amount"]
        )

    def _allocated(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        batch.add(
            m.Allocation,
            **self._vault_row(e, ts),
            follower=a["follower"],
            amount=a["amount"],
            shares=a["shares"],
            pool_value=a["poolValue"],
            entered=a["entered"],
            base_price=a["basePrice"],
        )
        self._move_shares(batch, e, ts, a["follower"], a["shares"], "allocation")

    def _exit_triggered(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        reason = enum_name(EXIT_REASONS, a["reason"])
        batch.triggers[(e.tx_hash, e.address, a["follower"])] = (reason, a["keeper"])
        batch.add(
            m.ExitTrigger,
            **self._vault_row(e, ts),
            follower=a["follower"],
            keeper=a["keeper"],
            reason=reason,
            value=a["value"],
            entry_value=a["entryValue"],
            peak_value=a["peakValue"],
        )

    def _exited(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        follower = a["follower"]
        trigger = batch.triggers.pop((e.tx_hash, e.address, follower), None)
        batch.add(
            m.Exit,
            **self._vault_row(e, ts),
            follower=follower,
            kind="in_kind" if e.name == "ExitedInKind" else "to_base",
            shares=a["shares"],
            base_out=a.get("baseOut"),
            trigger_reason=trigger[0] if trigger else None,
            keeper=trigger[1] if trigger else None,
        )
        slices: dict[str, int] = defaultdict(int)
        for token, amount in zip(a["tokens"], a["amounts"], strict=True):
            slices[token] += amount
        for token, amount in slices.items():
            batch.add(
                m.ExitSlice, **self._vault_row(e, ts), token=token, follower=follower, amount=amount
            )
        self._move_shares(batch, e, ts, follower, -a["shares"], "exit")

    def _limits_set(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        batch.add(
            m.Limits,
            **self._vault_row(e, ts),
            follower=a["follower"],
            stop_loss_bps=a["stopLossBps"],
            take_profit_bps=a["takeProfitBps"],
            max_drawdown_bps=a["maxDrawdownBps"],
        )

    def _peak_recorded(self, batch: _Batch, e: Event, ts: int) -> None:
        batch.add(
            m.Peak,
            **self._vault_row(e, ts),
            follower=e.args["follower"],
            peak_value=e.args["peakValue"],
        )

    def _mirror(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        row: dict[str, Any] = {"mirror_id": a["id"]}
        if e.name == "MirrorRecorded":
            self.mirrors[e.address] = (a["id"], a["tokenIn"], a["tokenOut"])
            self.bought[e.address].add(a["tokenOut"])
            row.update(kind="recorded", amount_in=a["amountIn"], deadline=a["deadline"])
        elif e.name == "MirrorExecuted":
            row.update(
                kind="executed",
                amount_in=a["amountIn"],
                amount_out=a["amountOut"],
                remaining=a["remaining"],
                keeper=a["keeper"],
            )
        else:
            row.update(
                kind="dropped",
                remaining=a["remaining"],
                reason=enum_name(MIRROR_DROPS, a["reason"]),
            )
        latest = self.mirrors.get(e.address)
        token_in, token_out = latest[1:] if latest and latest[0] == a["id"] else (None, None)
        batch.add(
            m.MirrorEvent,
            **self._vault_row(e, ts),
            token_in=token_in,
            token_out=token_out,
            **{
                "amount_in": None,
                "amount_out": None,
                "remaining": None,
                "deadline": None,
                "reason": None,
                "keeper": None,
                **row,
            },
        )

    def _suspension(self, batch: _Batch, e: Event, ts: int) -> None:
        batch.add(
            m.Suspension,
            **self._vault_row(e, ts),
            suspended=e.name == "CopyingSuspended",
            master_index=e.args["index"],
            peak=e.args["peak"],
        )

    def _fee_change(self, batch: _Batch, e: Event, ts: int) -> None:
        batch.add(
            m.FeeChange,
            **self._vault_row(e, ts),
            fee_bps=e.args["feeBps"],
            effective_at=e.args.get("effectiveAt"),
        )

    def _fee_charged(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        batch.add(
            m.FeeCharged,
            **self._vault_row(e, ts),
            follower=a["follower"],
            gain=a["gain"],
            fee=a["fee"],
            master_shares=a["masterShares"],
            protocol_shares=a["protocolShares"],
        )
        assert self.params is not None
        moved = a["masterShares"] + a["protocolShares"]
        self._move_shares(batch, e, ts, a["follower"], -moved, "fee")
        self._move_shares(batch, e, ts, self.vaults[e.address], a["masterShares"], "fee")
        self._move_shares(batch, e, ts, self.params["treasury"], a["protocolShares"], "fee")

    def _pool_sold(self, batch: _Batch, e: Event, ts: int) -> None:
        a = e.args
        batch.add(
            m.PoolSale,
            **self._vault_row(e, ts),
            token=a["token"],
            amount_in=a["amountIn"],
            base_out=a["baseOut"],
        )

    def _move_shares(
        self, batch: _Batch, e: Event, ts: int, holder: str, delta: int, kind: str
    ) -> None:
        if delta == 0:
            return
        self._shares_of(e.address).move(holder, delta)
        batch.add(m.ShareMove, **self._vault_row(e, ts), holder=holder, delta=delta, kind=kind)

    def _shares_of(self, vault: str) -> _Shares:
        """``vault``'s share balances by holder, as of the rows stored and this range so far."""
        shares = self._shares.get(vault)
        if shares is None:
            assert self._conn is not None, "balances are read while a range is stored"
            query = select(m.ShareMove.holder, m.ShareMove.delta).where(m.ShareMove.vault == vault)
            shares = self._shares[vault] = _Shares()
            for holder, delta in self._conn.execute(query):
                shares.move(holder, delta)
        return shares

    # --- time series

    def _point(self, block: _Block, vault: str, cause: str) -> None:
        known = block.points.get(vault)
        if known is None or CAUSES.index(cause) > CAUSES.index(known):
            block.points[vault] = cause
        self.last_point[vault] = block.timestamp

    def _mark_if_day_ended(
        self, batch: _Batch, last: _Block, new: _Block, *, written: bool = False
    ) -> None:
        """The daily mark: when ``new`` is the first protocol block of a later UTC day than
        ``last``, every vault gets a point at ``last``, the last protocol block of its day (one
        it already has there stays as it is). Nothing the protocol values a vault by changes
        without an event it logs (prices are feeds' events), so the mark is the vault's close of
        the day, and a day without any protocol block rightly keeps the previous close.
        ``written``: ``last`` was handled in an earlier range, its points are stored (and
        known: ``last.points``)."""
        if new.timestamp // DAY == last.timestamp // DAY:
            return
        if not written:
            for vault in self.vaults:
                self._point(last, vault, "mark")
            return
        marked = _Block(last.number, last.hash, last.timestamp)
        for vault in set(self.vaults) - set(last.points):
            self._point(marked, vault, "mark")
        self._end_block(batch, marked)

    def _end_block(self, batch: _Batch, block: _Block) -> None:
        """Each vault with a point in ``block``, as it stands at the end of the block (its books
        are read with the range's other reads)."""
        treasury = self.params["treasury"] if self.params else None
        for vault, cause in sorted(block.points.items()):
            shares = self._shares_of(vault)
            master = self.vaults[vault]
            # Holders but the master and the treasury (which holds fee shares).
            followers = shares.holders - shares.holds(master)
            if treasury is not None and treasury != master:
                followers -= shares.holds(treasury)
            row = batch.add(
                m.VaultPoint,
                vault=vault,
                block_number=block.number,
                timestamp=block.timestamp,
                cause=cause,
                master_index=None,
                master_aum=None,
                pool_aum=None,
                share_price=None,
                total_shares=shares.total,
                followers=followers,
            )
            batch.points.append((row, block.hash))

    def _read_chain(self, batch: _Batch) -> None:
        """Fills in what the range's rows need from the chain: each point's books (None where the
        node keeps no state that old or the vault cannot price a token then) and each trade's
        gas."""
        requests: list[tuple[str, list[Any]]] = []
        tokens: list[list[str]] = []
        for row, block_hash in batch.points:
            vault = row["vault"]
            # The base asset first, always stored: a point with values has its books.
            held = [self.base_asset, *sorted(self.bought.get(vault, set()) - {self.base_asset})]
            tokens.append(held)
            data = self._read_point.calldata(vault, held)
            requests.append(("eth_call", [{"data": data}, {"blockHash": block_hash}]))
        requests += [("eth_getTransactionReceipt", [tx]) for _, tx, _ in batch.receipts]
        answers = iter(self._ask(requests))
        for (row, _), held in zip(batch.points, tokens, strict=True):
            answer = next(answers)
            if answer is None:
                continue
            try:
                master_aum, pool_aum, master_index, books = self._read_point.decode(answer, held)
            except ValueError:
                # The same answer at every attempt (a node that runs no code without a target
                # answers nothing): the point is kept without values, as without state.
                self._warn_bad_point(answer)
                continue
            for token, (master_amount, pool_amount, price) in zip(held, books, strict=True):
                if master_amount or pool_amount or token == self.base_asset:
                    batch.add(
                        m.VaultBook,
                        vault=row["vault"],
                        block_number=row["block_number"],
                        token=token,
                        master_amount=master_amount,
                        pool_amount=pool_amount,
                        price=price,
                    )
            row.update(master_index=master_index, master_aum=master_aum, pool_aum=pool_aum)
            if row["total_shares"]:
                row["share_price"] = pool_aum * ONE * SHARES_PER_VALUE // row["total_shares"]
        for (row, tx, block_hash), receipt in zip(batch.receipts, answers, strict=True):
            if receipt is None:
                raise ChainMoved(f"transaction {tx} is gone")
            if receipt["blockHash"] != block_hash:
                raise ChainMoved(f"transaction {tx} moved to another block")
            row["gas_used"] = int(receipt["gasUsed"], 16)
            row["gas_price"] = int(receipt.get("effectiveGasPrice", "0x0"), 16)

    def _ask(self, requests: list[tuple[str, list[Any]]]) -> list[Any]:
        """The results of ``requests``, in batches the node takes: None for a call that
        reverted or a state the node does not keep; ``ChainMoved`` when a block is gone."""
        results: list[Any] = []
        provider: Any = self.reader.provider
        for start in range(0, len(requests), READ_BATCH):
            chunk = [
                (RPCEndpoint(method), params)
                for method, params in requests[start : start + READ_BATCH]
            ]
            responses = provider.make_batch_request(chunk)
            if not isinstance(responses, list):  # one error for the whole batch
                raise Web3RPCError(str(responses.get("error", responses)))
            for response in responses:
                error = response.get("error")
                if error is not None:
                    self._check(error)  # raises unless there is just nothing to read
                results.append(None if error is not None else response.get("result"))
        return results

    def _check(self, error: Any) -> None:
        """What a failed read means: a block gone (``ChainMoved``), a node error (raised), or,
        for a revert or a state the node does not keep, nothing to read (returns)."""
        message = str(error.get("message", error) if isinstance(error, dict) else error).lower()
        if "not found" in message or "unknown block" in message:
            raise ChainMoved("a block being indexed is gone")
        if "revert" in message or (isinstance(error, dict) and error.get("code") == 3):
            return
        if any(words in message for words in _CALL_FAILED):
            return
        if any(words in message for words in _NO_STATE):
            self._warn_no_state()
            return
        raise Web3RPCError(message)

    def _warn_bad_point(self, answer: str) -> None:
        if not getattr(self, "_warned_point", False):
            log.warning(
                "the node answered a point's reads with %s, not the reader's words: "
                "time-series values are left empty (a node that runs eth_call without a "
                "target fills them)",
                answer[:66],
            )
            self._warned_point = True

    def _warn_no_state(self) -> None:
        if not getattr(self, "_warned_state", False):
            log.warning(
                "the node keeps no state this old: time-series values are left empty "
                "(an archive node fills them)"
            )
            self._warned_state = True

    def _call(self, call: Callable[[], Any]) -> Any:
        """A read-only call at a block: None when there is nothing to read there (the node keeps
        no state that old, the call reverts or fails, the contract has no code yet or answers
        what its ABI cannot decode); ``ChainMoved`` when the block is gone. Asked again, the same
        call at the same block fails the same way: raised, it would stop the indexer for good,
        the range read again and failing again from the cursor."""
        try:
            return call()
        except BlockNotFound as exc:
            raise ChainMoved("a block being indexed is gone") from exc
        except (ContractLogicError, BadFunctionCallOutput):
            return None
        except Web3RPCError as exc:
            message = str(exc).lower()
            if "not found" in message:
                raise ChainMoved("a block being indexed is gone") from exc
            if any(words in message for words in _NO_STATE):
                self._warn_no_state()
                return None
            if any(words in message for words in _CALL_FAILED):
                return None
            raise

    # --- feeds

    def _price_sources(self) -> dict[str, set[str]]:
        """Where answers come from -> the assets they price."""
        sources: dict[str, set[str]] = defaultdict(set)
        for token, asset in self.assets.items():
            sources[self.sources.source(asset["feed"]) or asset["feed"]].add(token)
        return sources


def _last_block(conn: Connection) -> _Block | None:
    """The newest block with a stored event, with its points."""
    events = m.Event.__table__
    last = conn.execute(
        select(events.c.block_number, events.c.block_hash, events.c.timestamp)
        .order_by(events.c.block_number.desc())
        .limit(1)
    ).first()
    if last is None:
        return None
    points = select(m.VaultPoint.vault, m.VaultPoint.cause).where(
        m.VaultPoint.block_number == last[0]
    )
    return _Block(int(last[0]), last[1], int(last[2]), dict(conn.execute(points).all()))


def _state(row: Any) -> dict[str, Any]:
    """A state row's values, without where they come from."""
    return {
        k: v
        for k, v in row.items()
        if k not in ("block_number", "log_index", "tx_hash", "timestamp")
    }

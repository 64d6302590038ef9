"""The live stream on real server processes (``tandem api serve``, two workers) fed by a real
``tandem indexer run`` following a real anvil: new events arrive, ``anvil_reorg`` brings a
``removed`` message for exactly the events rolled back and then the replacements, a client that
reconnects with its last cursor gets what it missed once, and every subscriber, whichever worker
it is on, gets each event once; on SQLite (polling), PostgreSQL (NOTIFY) and PostgreSQL with
Redis (PUBLISH) wake-ups."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import World, api_server
from indexing.support import (
    Story,
    fresh_postgres,
    indexer_env,
    indexer_settings,
    open_vault,
    rpc,
)
from indexing.test_indexer_reorg import set_link
from keeper.conftest import redis_server
from sqlalchemy import create_engine, insert, select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from indexer import service
from tandem import chain
from tandem.config import Settings
from tandem.db import database_url
from tandem.db.models import Event
from tandem.db.stream import journal, state
from tandem.node import LocalNode
from tandem.protocol import (
    BASE,
    Deployment,
    deploy_local,
    deposit,
    govern,
    set_limits,
    trade,
)

WAIT = 30.0


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/stream"


class Stream:
    """One subscriber: every message it received, in order."""

    def __init__(self, base: str, topics: list[str], cursor: str | None = None) -> None:
        self.ws: ClientConnection = connect(ws_url(base), open_timeout=10)
        subscribe: dict[str, Any] = {"type": "subscribe", "topics": topics}
        if cursor is not None:
            subscribe["cursor"] = cursor
        self.ws.send(json.dumps(subscribe))
        self.subscribed = self.next()
        assert self.subscribed["type"] == "subscribed", self.subscribed
        self.messages: list[dict[str, Any]] = []  # events (added, removed, reset)
        self.heartbeats: list[dict[str, Any]] = []

    def next(self, timeout: float = WAIT) -> dict[str, Any]:
        return json.loads(self.ws.recv(timeout=timeout))

    def until(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = WAIT) -> None:
        """Reads until ``done(self.messages)``."""
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not received in time; got {self.summary()}")
            try:
                message = self.next(left)
            except TimeoutError:
                continue
            (self.heartbeats if message["type"] == "heartbeat" else self.messages).append(message)

    def quiet(self, seconds: float) -> None:
        """Reads whatever arrives for ``seconds`` (to show nothing more does)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.next(left)
            except TimeoutError:
                return
            (self.heartbeats if message["type"] == "heartbeat" else self.messages).append(message)

    @property
    def cursor(self) -> str:
        return self.messages[-1]["cursor"] if self.messages else self.subscribed["cursor"]

    def summary(self) -> list[tuple[str, str, int, int]]:
        return [
            (m["type"], m["event"]["name"], m["event"]["block_number"], m["event"]["log_index"])
            for m in self.messages
            if m.get("event")
        ]

    def close(self) -> None:
        self.ws.close()


def drain(streams: list[Stream], seconds: float = 0.5) -> None:
    """Every stream reads what is still on its way (the rest of a block's events)."""
    for stream in streams:
        stream.quiet(seconds)


def ident(message: dict[str, Any]) -> tuple[str, int, int, str]:
    e = message["event"]
    return (e["name"], e["block_number"], e["log_index"], e["block_hash"])


@dataclass
class Live:
    dep: Deployment
    story: Story
    ix: Settings
    url: str  # the API's base URL


@contextmanager
def live_stack(
    settings: Settings, tmp: Path, backend: str, postgres: Callable[[], str]
) -> Iterator[Live]:
    """An anvil of its own with a vault, ``tandem indexer run`` following it, and ``tandem api
    serve`` with two workers on the indexer's database."""
    with ExitStack() as stack:
        node = stack.enter_context(LocalNode(settings=settings))
        w3 = chain.connect(node.rpc_url, settings=settings)
        dep = deploy_local(w3, settings=settings, save=False)
        story = open_vault(dep, "stream", followers=2)
        extra: dict[str, Any] = {}
        if backend == "sqlite":
            extra["database_url"] = f"sqlite:///{tmp / 'stream.db'}"
        else:
            extra["database_url"] = fresh_postgres(postgres(), f"stream_{backend}")
        if backend == "redis":
            extra["stream_redis_url"] = stack.enter_context(redis_server(tmp))
        ix = indexer_settings(settings, node.rpc_url, tmp, hub=dep.hub.address, **extra)
        service.index_to_head(ix)  # the schema, and the chain so far
        indexer = subprocess.Popen(
            [sys.executable, "-m", "tandem.cli", "indexer", "run"],
            env=indexer_env(ix),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop_indexer() -> None:
            indexer.terminate()
            indexer.wait(20)

        stack.callback(stop_indexer)
        url = stack.enter_context(
            api_server(ix, "--workers", "2", env={"TANDEM_API__STREAM_HEARTBEAT": "1"})
        )
        yield Live(dep, story, ix, url)


def buy(live: Live, usd: int) -> None:
    dep, story = live.dep, live.story
    trade(
        dep,
        story.vault,
        story.master,
        BASE,
        "LINK",
        dep.units(BASE, usd),
        dep.v3_route(BASE, "LINK"),
    )


def added_trade(usd_units: int) -> Callable[[list[dict[str, Any]]], bool]:
    def done(messages: list[dict[str, Any]]) -> bool:
        return any(
            m["type"] == "added"
            and m["event"]["name"] == "Traded"
            and m["event"]["args"]["masterIn"] == str(usd_units)
            for m in messages
        )

    return done


def on_workers(url: str, topics: list[str], at_least: int) -> list[Stream]:
    """Subscribers until both server processes hold some. Whichever process accepts first takes
    a connection (and the second may still be starting), so they are opened ten at a time, at
    once, until both answered."""
    streams: list[Stream] = []
    deadline = time.monotonic() + 90
    with ThreadPoolExecutor(10) as pool:
        while len({s.subscribed["worker"] for s in streams}) < 2 or len(streams) < at_least:
            assert time.monotonic() < deadline, "one worker took every stream"
            streams += pool.map(lambda _: Stream(url, topics), range(10))
            if len({s.subscribed["worker"] for s in streams}) < 2:
                for extra in streams[at_least:]:
                    extra.close()
                del streams[at_least:]
                time.sleep(0.5)
    return streams


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "redis"])
def test_live_events_reorganisation_and_resume(
    settings: Settings, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    with live_stack(
        settings, tmp_path, backend, lambda: request.getfixturevalue("postgres")
    ) as live:
        dep, story = live.dep, live.story
        master = f"master:{story.master}"
        follower = f"follower:{story.followers[0]}"
        masters = on_workers(live.url, [master], 6)
        prices = Stream(live.url, ["prices"])
        follows = Stream(live.url, [follower.lower()])  # any case: answered checksummed
        assert follows.subscribed["topics"] == [follower]
        protocol = Stream(live.url, ["protocol"])
        # One subscription naming two topics an event has gets it once.
        both = Stream(live.url, [master, f"vault:{story.vault.address}"])

        # --- new events arrive, once each, at every subscriber on either worker
        buy(live, 1_001)
        for s in [*masters, both]:
            s.until(added_trade(dep.units(BASE, 1_001)))
        first = masters[0].messages
        assert [m["type"] for m in first] == ["added"] * len(first)
        names = [m["event"]["name"] for m in first]
        assert "Traded" in names and all(
            m["event"]["contract"] == story.vault.address for m in first
        )
        for s in [*masters[1:], both]:
            assert s.messages == first  # the same messages, same cursors, no duplicates
        cursors = [int(m["cursor"]) for m in first]
        assert cursors == sorted(set(cursors))
        set_link(dep, Decimal("1.001"))
        prices.until(lambda ms: any(m["event"]["name"] == "AnswerUpdated" for m in ms))
        assert all(m["event"]["name"] == "AnswerUpdated" for m in prices.messages)
        assert all(f"prices:{dep.address_of('LINK')}" in m["topics"] for m in prices.messages)
        # The follower and the protocol saw none of it; then their own events come.
        follows.quiet(0.5)
        protocol.quiet(0.1)
        assert follows.messages == [] and protocol.messages == []
        deposit(dep, story.followers[0], dep.units(BASE, 10))  # the hub's, the follower's own
        set_limits(story.vault, story.followers[0], 2_000, 0, 0)  # the vault's, naming them
        govern(
            dep, dep.hub.functions.setAdapter(dep.v2_adapter.address, True), dep.w3.eth.accounts[0]
        )
        follows.until(lambda ms: len(ms) >= 2)
        assert [m["event"]["name"] for m in follows.messages] == ["Deposited", "LimitsSet"]
        assert all(follower in m["topics"] for m in follows.messages)
        assert master not in follows.messages[0]["topics"]
        assert master in follows.messages[1]["topics"]
        protocol.until(lambda ms: any(m["event"]["name"] == "AdapterSet" for m in ms))
        assert all("protocol" in m["topics"] for m in protocol.messages)
        assert "Deposited" not in [m["event"]["name"] for m in protocol.messages]
        for s in [*masters, both]:
            s.until(lambda ms: any(m["event"]["name"] == "LimitsSet" for m in ms))
        # A heartbeat's cursor covers every message before it.
        deadline = time.monotonic() + 10
        while not prices.heartbeats or int(prices.heartbeats[-1]["cursor"]) < int(prices.cursor):
            assert time.monotonic() < deadline, "no heartbeat"
            prices.quiet(1.2)

        # --- a client leaves; what it misses, a reorganisation included, comes back once
        gone = masters.pop()
        left_at = gone.cursor
        gone.close()
        keep = masters[0]
        before = len(keep.messages)
        rpc(dep.w3, "evm_increaseTime", 60)
        buy(live, 1_002)
        set_link(dep, Decimal("1.0005"))
        buy(live, 1_003)
        for s in [*masters, both]:
            s.until(added_trade(dep.units(BASE, 1_003)))
        prices.until(lambda ms: len([m for m in ms if m["type"] == "added"]) >= 2)

        # --- anvil_reorg: `removed` for exactly the events of the dropped blocks, newest first,
        # then the events of the blocks that replace them
        drain([*masters, both, prices])
        depth = 3
        head = dep.w3.eth.block_number
        ancestor = head - depth
        told = [m for m in keep.messages if m["event"]["block_number"] > ancestor]
        assert told, "the dropped blocks held events of the master"
        told_prices = [m for m in prices.messages if m["event"]["block_number"] > ancestor]
        replace = reorg_replacements(dep, story, depth)
        rpc(dep.w3, "anvil_reorg", depth, replace)
        mark = len(keep.messages)
        for s in [*masters, both]:
            s.until(added_trade(dep.units(BASE, 777)))
        after = keep.messages[mark:]
        removed = [m for m in after if m["type"] == "removed"]
        assert [ident(m) for m in removed] == [ident(m) for m in reversed(told)]
        assert [m["event"] for m in removed] == [m["event"] for m in reversed(told)]
        assert after[: len(removed)] == removed  # every removal before any replacement
        replacements = after[len(removed) :]
        assert replacements and all(m["type"] == "added" for m in replacements)
        assert all(m["event"]["block_number"] > ancestor for m in replacements)
        new_hashes = {
            dep.w3.eth.get_block(n)["hash"].to_0x_hex() for n in range(ancestor + 1, head + 1)
        }
        assert {m["event"]["block_hash"] for m in replacements} <= new_hashes
        for s in [*masters[1:], both]:
            assert s.messages == keep.messages
        prices.until(
            lambda ms: any(
                m["type"] == "added" and m["event"]["block_number"] == ancestor + 1 for m in ms
            )
        )
        price_removed = [m for m in prices.messages if m["type"] == "removed"]
        assert [ident(m) for m in price_removed] == [ident(m) for m in reversed(told_prices)]

        # --- the client that left resumes from its cursor: exactly what the others got since
        back = Stream(live.url, [master], cursor=left_at)
        assert back.subscribed["cursor"] == left_at
        missed = [m for m in keep.messages if int(m["cursor"]) > int(left_at)]
        back.until(lambda ms: len(ms) >= len(missed))
        assert back.messages == missed
        # Among them each rolled-back event, told added with its whole event (its `events` row
        # is gone: the journal row holds it since the rollback), then removed with the same.
        gone_told = [m for m in back.messages if m["type"] == "removed"]
        assert gone_told
        for m in gone_told:
            (first_told,) = [
                a for a in back.messages if a["type"] == "added" and ident(a) == ident(m)
            ]
            assert int(first_told["cursor"]) < int(m["cursor"])
            assert first_told["event"] == m["event"]
            assert {"tx_hash", "timestamp", "args", "contract"} <= set(m["event"])
        assert len(keep.messages) > before
        # ... and then it is live: the next event once, with everyone else's.
        buy(live, 1_004)
        for s in [*masters, both, back]:
            s.until(added_trade(dep.units(BASE, 1_004)))
        drain([*masters, both, back])
        tail = [m for m in keep.messages if int(m["cursor"]) > int(left_at)]
        assert back.messages == tail
        for s in [*masters, both]:
            assert s.messages == keep.messages

        follows.quiet(0.2)
        assert [m["event"]["name"] for m in follows.messages] == ["Deposited", "LimitsSet"]

        # What the stream told, added less removed, is what the indexer's tables hold now.
        held: dict[tuple[int, int], tuple[str, str]] = {}
        for m in keep.messages:
            e = m["event"]
            if m["type"] == "added":
                held[(e["block_number"], e["log_index"])] = (e["name"], e["block_hash"])
            else:
                assert held.pop((e["block_number"], e["log_index"])) == (e["name"], e["block_hash"])
        since = keep.messages[0]["event"]["block_number"]
        engine = create_engine(database_url(live.ix.indexer.database_url, live.ix.project_root))
        with engine.connect() as conn:
            stored = conn.execute(
                select(Event.block_number, Event.log_index, Event.name, Event.block_hash).where(
                    Event.address == story.vault.address, Event.block_number >= since
                )
            ).all()
        engine.dispose()
        assert held == {(r[0], r[1]): (r[2], r[3]) for r in stored}
        for s in [*masters, prices, follows, protocol, both, back]:
            s.close()
        if backend != "sqlite":
            # The workers were woken by the indexer's NOTIFY or PUBLISH, not only by their timer.
            scraped = httpx.get(f"{live.url}/metrics", timeout=10).text
            (line,) = [x for x in scraped.splitlines() if x.startswith("tandem_api_stream_wakeups")]
            assert float(line.split()[-1]) > 0, line


def reorg_replacements(dep: Deployment, story: Story, depth: int) -> list[list[Any]]:
    from indexing.test_indexer_reorg import replacements

    return replacements(dep, story, depth)


# --- what a client does wrong, on the shared API server (SQLite, two workers)


def error_of(ws: ClientConnection) -> tuple[dict[str, Any], int]:
    """The error frame, and the close code that follows it."""
    frame = json.loads(ws.recv(timeout=10))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    return frame, closed.value.rcvd.code


def send_first(url: str, text: str) -> tuple[dict[str, Any], int]:
    with connect(ws_url(url), open_timeout=10) as ws:
        ws.send(text)
        return error_of(ws)


def test_bad_subscriptions_get_an_error_that_says_what_to_do(world: World, api: Any) -> None:
    url = str(api.base_url).rstrip("/")
    master = world.a.master
    for text, error, says in (
        ("hello", "invalid-message", "not JSON"),
        ('{"type": "ping"}', "invalid-message", "first message must be"),
        ('{"type": "subscribe"}', "invalid-subscription", "topics must be a non-empty list"),
        (
            '{"type": "subscribe", "topics": ["masters:x"]}',
            "invalid-subscription",
            "'masters:x' is not a topic",
        ),
        (
            '{"type": "subscribe", "topics": ["master:0x12"]}',
            "invalid-subscription",
            "is not an address",
        ),
        (
            json.dumps({"type": "subscribe", "topics": ["prices"], "cursor": "-1"}),
            "invalid-subscription",
            "not one this API gave",
        ),
        (
            json.dumps({"type": "subscribe", "topics": ["prices"], "since": 1}),
            "invalid-subscription",
            "unknown fields ['since']",
        ),
        (
            json.dumps({"type": "subscribe", "topics": ["prices"], "cursor": "99999999999"}),
            "unknown-cursor",
            "Subscribe without a cursor",
        ),
    ):
        frame, code = send_first(url, text)
        assert frame["type"] == "error" and frame["error"] == error, (text, frame)
        assert says in frame["detail"], (text, frame)
        assert code == frame["close_code"] == 4400
    # Every problem of one message at once, each with what a topic is.
    frame, _ = send_first(
        url, json.dumps({"type": "subscribe", "topics": [1, "protocol", "vault:0xzz"]})
    )
    assert "1 is not a string" in frame["detail"] and "'vault:0xzz'" in frame["detail"]
    assert "a topic is `protocol`" in frame["detail"]

    # After subscribing: pings are answered, anything else is an error.
    with connect(ws_url(url), open_timeout=10) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": [f"master:{master}"]}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        ws.send('{"type": "ping"}')
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}
        ws.send(json.dumps({"type": "subscribe", "topics": ["prices"]}))
        frame, code = error_of(ws)
        assert frame["error"] == "invalid-message" and "open another connection" in frame["detail"]
        assert code == 4400

    # A cursor older than the journal keeps: 4410, and what to do.
    with world.engine.begin() as conn:
        conn.execute(insert(state).values(id=1, pruned_to=5))
    try:
        frame, code = send_first(
            url, json.dumps({"type": "subscribe", "topics": ["prices"], "cursor": "3"})
        )
        assert frame["error"] == "cursor-expired" and code == 4410
        assert "subscribe without a cursor" in frame["detail"]
    finally:
        with world.engine.begin() as conn:
            conn.execute(state.delete())


def test_a_slow_client_is_told_and_disconnected_and_resumes_without_loss(
    world: World, tmp_path: Path
) -> None:
    # A copy of the world's database, for a server whose subscribers may queue 5 messages.
    source = Path(world.engine.url.database or "")
    copy = tmp_path / "slow.db"
    shutil.copy(source, copy)
    ix = world.settings.model_copy(
        update={
            "indexer": world.settings.indexer.model_copy(
                update={"database_url": f"sqlite:///{copy}"}
            )
        }
    )
    engine = create_engine(database_url(ix.indexer.database_url, ix.project_root))
    with api_server(ix, "--workers", "1", env={"TANDEM_API__STREAM_QUEUE": "5"}) as url:
        ws = connect(ws_url(url), open_timeout=10, max_queue=1)
        ws.send(json.dumps({"type": "subscribe", "topics": ["protocol"]}))
        start = json.loads(ws.recv(timeout=10))["cursor"]
        # Many big messages the client does not read: more than the sockets' buffers hold.
        pad = "x" * 4_000
        with engine.begin() as conn:
            conn.execute(
                insert(journal),
                [
                    {
                        "action": "added",
                        "block_number": 10**9 + i,
                        "log_index": 0,
                        "block_hash": "0x" + "ab" * 32,
                        "keys": "protocol",
                        "body": {"name": "Test", "pad": pad, "i": i},
                    }
                    for i in range(4_000)
                ],
            )
            last = conn.execute(select(journal.c.seq).order_by(journal.c.seq.desc())).scalar()
        time.sleep(3)  # the pump queues; the client reads nothing
        got: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                got.append(json.loads(ws.recv(timeout=10)))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        error = got.pop()
        assert error["error"] == "too-slow" and "Reconnect with the cursor" in error["detail"]
        assert len(got) < 4_000  # it was dropped, not served without end
        assert [m["event"]["i"] for m in got] == list(range(len(got)))  # in order, no gap
        # It resumes from the last message it read, and gets the rest, once.
        resumed = Stream(url, ["protocol"], cursor=got[-1]["cursor"] if got else start)
        resumed.until(lambda ms: bool(ms) and int(ms[-1]["cursor"]) == last, 60)
        assert [m["event"]["i"] for m in resumed.messages] == list(range(len(got), 4_000))
        resumed.close()
    engine.dispose()

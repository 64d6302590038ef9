"""Notifications on the live stream: a signed-in address subscribes to the `notifications`
topic with its session token over the socket, on a real server process (``tandem api serve``,
two workers), and gets its own notifications as they are stored, in id order, once each on
every connection whichever worker it is on, and after reconnecting, what it missed from the id
it names. Without a session, or with one that is no more, the topic is refused (4401)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import World, api_server
from sqlalchemy import insert
from test_api_accounts import message, new_nonce, sign, wallet
from test_api_stream import ws_url
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tandem.db import accounts as t

WAIT = 15.0


@dataclass
class Served:
    url: str
    chain_id: int


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[Served]:
    # The notifier is off: the notifications here are the ones the test stores.
    env = {"TANDEM_API__NOTIFY": "false", "TANDEM_API__STREAM_POLL_INTERVAL": "0.05"}
    with api_server(world.settings, "--workers", "2", env=env) as url:
        yield Served(url, world.dep.w3.eth.chain_id)


def token_of(served: Served, label: str) -> tuple[str, str]:
    """Signs ``label``'s wallet in: its address and session token."""
    import httpx

    who = wallet(label)
    text = message(served, who, new_nonce(served))  # type: ignore[arg-type]
    response = httpx.post(
        f"{served.url}/v1/auth/sign-in", json={"message": text, "signature": sign(who, text)}
    )
    assert response.status_code == 201, response.text
    return who.address, response.json()["token"]


counter = iter(range(1, 1_000_000))


def store(world: World, address: str, kind: str = "position.opened") -> None:
    """A notification, as the notifier stores one."""
    n = next(counter)
    with world.engine.begin() as conn:
        conn.execute(
            insert(t.notifications).values(
                address=address,
                kind=kind,
                vault=world.a.vault.address,
                block_number=n,
                log_index=0,
                block_hash="0x" + f"{n:064x}",
                tx_hash="0x" + f"{n:064x}",
                block_timestamp=1_700_000_000 + n,
                data={"n": n, "amount": str(10**30 + n)},
                created_at=time.time(),
            )
        )


def subscribe(url: str, **fields: Any) -> tuple[ClientConnection, dict[str, Any]]:
    ws = connect(ws_url(url), open_timeout=10)
    ws.send(json.dumps({"type": "subscribe", **fields}))
    first = json.loads(ws.recv(timeout=WAIT))
    return ws, first


def notifications(ws: ClientConnection, count: int, quiet: float = 0.5) -> list[dict[str, Any]]:
    """The next ``count`` notification messages, then nothing more for ``quiet`` seconds."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while len(found) < count:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if frame["type"] == "notification":
            found.append(frame)
    try:
        while True:
            frame = json.loads(ws.recv(timeout=quiet))
            assert frame["type"] != "notification", f"one more than expected: {frame}"
    except TimeoutError:
        pass
    return found


def test_a_signed_in_address_gets_its_notifications_on_the_stream(
    world: World, served: Served
) -> None:
    alice, token = token_of(served, "stream:alice")
    bob, _ = token_of(served, "stream:bob")
    # Enough connections to have some on each worker; one also follows a master's events.
    streams = []
    workers = set()
    for i in range(60):
        if len(workers) == 2 and len(streams) >= 4:
            break
        topics = ["notifications", f"master:{world.a.master}"] if i == 0 else ["notifications"]
        ws, subscribed = subscribe(served.url, topics=topics, token=token)
        assert subscribed["type"] == "subscribed", subscribed
        assert subscribed["address"] == alice
        assert "notifications" in subscribed["topics"]
        streams.append(ws)
        workers.add(subscribed["worker"])
    start = int(subscribed["notifications_after"])
    store(world, bob)
    store(world, alice, "position.opened")
    store(world, bob)
    store(world, alice, "exit.limit")
    for ws in streams:
        got = notifications(ws, 2)
        # Alice's own, in id order, none of Bob's; integers exact.
        assert [g["notification"]["kind"] for g in got] == ["position.opened", "exit.limit"]
        ids = [int(g["id"]) for g in got]
        assert ids == sorted(ids) and ids[0] > start
        assert all(g["notification"]["id"] == int(g["id"]) for g in got)
        assert got[0]["notification"]["data"]["amount"].startswith("1000000")
        assert got[0]["notification"]["vault"] == world.a.vault.address
    first_id = notifications_seen = ids[0]
    assert len(workers) == 2, "the connections all went to one worker"
    for ws in streams:
        ws.close()

    # Missed while away: reconnecting with the id of the last one read gives the rest, once.
    store(world, alice, "fee.charged")
    ws, subscribed = subscribe(
        served.url, topics=["notifications"], token=token, notifications_after=str(first_id)
    )
    assert subscribed["notifications_after"] == str(first_id)
    got = notifications(ws, 2)
    assert [g["notification"]["kind"] for g in got] == ["exit.limit", "fee.charged"]
    assert int(got[0]["id"]) > notifications_seen
    store(world, alice, "mirror.executed")  # and the live ones after it
    assert [g["notification"]["kind"] for g in notifications(ws, 1)] == ["mirror.executed"]
    ws.close()

    # The REST list and the stream tell the same.
    import httpx

    listed = httpx.get(
        f"{served.url}/v1/account/notifications",
        params={"after": start},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["items"]
    assert [n["kind"] for n in listed] == [
        "position.opened",
        "exit.limit",
        "fee.charged",
        "mirror.executed",
    ]


def refused(ws: ClientConnection) -> tuple[dict[str, Any], int]:
    """The error frame a subscription got (and nothing before it), and the close code."""
    frame = json.loads(ws.recv(timeout=10))
    assert frame["type"] == "error", frame
    try:
        ws.recv(timeout=10)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None
        return frame, closed.rcvd.code
    raise AssertionError("the connection stayed open")


def test_the_notifications_topic_needs_a_session(world: World, served: Served) -> None:
    _, token = token_of(served, "stream:carol")
    for fields, error, code, says in (
        ({"topics": ["notifications"]}, "unauthorized", 4401, "sign in"),
        ({"topics": ["notifications"], "token": "nope"}, "unauthorized", 4401, "no session"),
        ({"topics": ["prices"], "token": token}, "invalid-subscription", 4400, "go with"),
        (
            {"topics": ["notifications"], "token": token, "notifications_after": "x"},
            "invalid-subscription",
            4400,
            "notifications_after must be",
        ),
        (
            {"topics": ["notifications"], "token": token, "notifications_after": "99999999"},
            "unknown-notification",
            4400,
            "leave it out",
        ),
    ):
        with connect(ws_url(served.url), open_timeout=10) as ws:
            ws.send(json.dumps({"type": "subscribe", **fields}))
            frame, closed = refused(ws)
        assert (frame["error"], closed, frame["close_code"]) == (error, code, code), frame
        assert says in frame["detail"], frame
    # Signed out: the token opens no stream any more.
    import httpx

    out = httpx.delete(
        f"{served.url}/v1/auth/session", headers={"Authorization": f"Bearer {token}"}
    )
    assert out.status_code in (200, 204), out.text
    with connect(ws_url(served.url), open_timeout=10) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["notifications"], "token": token}))
        frame, closed = refused(ws)
    assert (frame["error"], closed) == ("unauthorized", 4401)

"""Accounts and notifications on a real server process over a real database (SQLite and
PostgreSQL): Sign-In with Ethereum with messages signed by eth-account, every refusal, each
address alone with its records, TOTP before webhooks, and notifications derived from events a
real chain emitted and the real indexer stored, delivered to a real HTTP receiver that verifies
their signatures, fails the first attempts and sees the retries in the delivery log."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from conftest import api_server, free_port
from cryptography.fernet import Fernet
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from indexing.support import address, fresh_postgres, rpc, save_book
from indexing.test_rankings_indexed import settings_for
from siwe import SiweMessage
from sqlalchemy import create_engine, select

from api.accounts import signin
from api.notifications import webhooks
from indexer import service
from tandem.config import Settings
from tandem.db import accounts as t
from tandem.db import database_url
from tandem.protocol import (
    BASE,
    Deployment,
    add_followers,
    create_master,
    scale_feed,
    set_balance,
    trade,
    trigger_exits,
)

KEY = Fernet.generate_key().decode()


def wallet(label: str) -> LocalAccount:
    return Account.from_key(keccak(text=f"accounts:{label}"))


@dataclass
class Scene:
    dep: Deployment
    ix: Settings
    url: str
    master: str
    vault: Any
    alice: LocalAccount  # follower with a 10% stop-loss
    dave: LocalAccount  # follower with a 30% stop-loss
    chain_id: int
    engine: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def index(self) -> None:
        service.index_to_head(self.ix)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scene(
    request: pytest.FixtureRequest,
    deployment: Deployment,
    settings: Settings,
    rollback: Callable[[], AbstractContextManager[None]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scene]:
    """A master with two followers whose keys the test holds, indexed, and the API served on
    it with accounts enabled (a secret key, webhooks to this machine allowed)."""
    tmp: Path = tmp_path_factory.mktemp("accounts")
    dep = deployment
    specs = dict(dep.specs)
    with rollback():
        master = address(f"accounts:{request.param}:master")
        rpc(dep.w3, "anvil_autoImpersonateAccount", True)
        set_balance(dep.w3, master, 10**21)
        vault = create_master(dep, master, dep.units(BASE, 100_000))
        alice, dave = wallet(f"{request.param}:alice"), wallet(f"{request.param}:dave")
        add_followers(
            dep,
            vault,
            [alice.address, dave.address],
            dep.units(BASE, 1_000),
            {alice.address: (1_000, 0, 0), dave.address: (3_000, 0, 0)},
        )
        ix = settings_for(dep, settings, tmp, "accounts.db")
        if request.param == "postgresql":
            url = fresh_postgres(request.getfixturevalue("postgres"), "accounts_served")
            ix = ix.model_copy(
                update={"indexer": ix.indexer.model_copy(update={"database_url": url})}
            )
        save_book(dep, ix)
        service.index_to_head(ix)
        env = {
            "TANDEM_API__SECRET_KEY": KEY,
            "TANDEM_API__WEBHOOK_PRIVATE_HOSTS": "true",
            "TANDEM_API__COOKIE_SECURE": "false",
            "TANDEM_API__WEBHOOK_BACKOFF": "0.2",
            "TANDEM_API__NOTIFY_INTERVAL": "0.05",
        }
        engine = create_engine(database_url(ix.indexer.database_url, ix.project_root))
        try:
            with api_server(ix, "--workers", "2", env=env) as url:
                yield Scene(dep, ix, url, master, vault, alice, dave, dep.w3.eth.chain_id, engine)
        finally:
            engine.dispose()
    dep.specs = specs


# --- signing in


def message(scene: Scene, who: LocalAccount, nonce: str, **changes: Any) -> str:
    host = scene.url.removeprefix("http://")
    fields: dict[str, Any] = {
        "domain": host,
        "address": who.address,
        "statement": "Sign in to Tandem.",
        "uri": f"{scene.url}/login",
        "version": "1",
        "chain_id": scene.chain_id,
        "nonce": nonce,
        "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    fields.update(changes)
    return str(SiweMessage(**fields).prepare_message())


def sign(who: LocalAccount, text: str) -> str:
    return "0x" + who.sign_message(encode_defunct(text=text)).signature.hex().removeprefix("0x")


def new_nonce(scene: Scene) -> str:
    response = httpx.post(f"{scene.url}/v1/auth/nonce")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["chain_id"] == scene.chain_id and body["uri"] == scene.url
    return str(body["nonce"])


class Signed(httpx.Client):
    """A client with a session, and the wallet and scene it signed in with."""

    def __init__(self, scene: Scene, who: LocalAccount, token: str) -> None:
        super().__init__(
            base_url=scene.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.scene, self.who = scene, who


def sign_in(scene: Scene, who: LocalAccount) -> Signed:
    text = message(scene, who, new_nonce(scene))
    response = httpx.post(
        f"{scene.url}/v1/auth/sign-in", json={"message": text, "signature": sign(who, text)}
    )
    assert response.status_code == 201, response.text
    return Signed(scene, who, response.json()["token"])


def problem(response: httpx.Response, status: int, name: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    if name:
        assert body["type"] == f"urn:tandem:problem:{name}", body
    return body


def test_sign_in_with_ethereum_opens_a_session_that_signing_out_closes(scene: Scene) -> None:
    alice = scene.alice
    text = message(scene, alice, new_nonce(scene))
    response = httpx.post(
        f"{scene.url}/v1/auth/sign-in", json={"message": text, "signature": sign(alice, text)}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["address"] == alice.address and body["second_factor"] is False
    token = body["token"]
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and token in cookie
    bearer = {"Authorization": f"Bearer {token}"}
    session = httpx.get(f"{scene.url}/v1/auth/session", headers=bearer)
    assert session.status_code == 200 and session.json()["address"] == alice.address
    # The cookie alone works too (a browser dApp).
    by_cookie = httpx.get(f"{scene.url}/v1/auth/session", cookies={"tandem_session": token})
    assert by_cookie.status_code == 200
    # The token is stored hashed: it appears nowhere in the database.
    with scene.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(select(t.sessions))]
    assert stored and token not in json.dumps(stored, default=str)
    assert httpx.delete(f"{scene.url}/v1/auth/session", headers=bearer).status_code == 204
    problem(httpx.get(f"{scene.url}/v1/auth/session", headers=bearer), 401, "unauthorized")
    problem(httpx.get(f"{scene.url}/v1/account/watchlist"), 401, "unauthorized")


def test_sign_in_refuses_wrong_domain_uri_chain_expired_reused_and_forged(scene: Scene) -> None:
    alice, mallory = scene.alice, wallet("mallory")
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    old = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"domain": "evil.example"}, "is for evil.example"),
        ({"uri": "https://evil.example/login"}, "URI is not on"),
        ({"chain_id": scene.chain_id + 1}, f"for chain {scene.chain_id + 1}"),
        ({"expiration_time": past}, "expired"),
        ({"issued_at": old}, "too long ago"),
    ]
    for changes, says in cases:
        text = message(scene, alice, new_nonce(scene), **changes)
        body = problem(
            httpx.post(
                f"{scene.url}/v1/auth/sign-in",
                json={"message": text, "signature": sign(alice, text)},
            ),
            401,
            "sign-in-refused",
        )
        assert says in body["detail"], (changes, body)
    # Signed by another key.
    text = message(scene, alice, new_nonce(scene))
    body = problem(
        httpx.post(
            f"{scene.url}/v1/auth/sign-in",
            json={"message": text, "signature": sign(mallory, text)},
        ),
        401,
        "sign-in-refused",
    )
    assert "signature" in body["detail"]
    # A nonce works once; an unknown one never.
    text = message(scene, alice, new_nonce(scene))
    signed = {"message": text, "signature": sign(alice, text)}
    assert httpx.post(f"{scene.url}/v1/auth/sign-in", json=signed).status_code == 201
    body = problem(httpx.post(f"{scene.url}/v1/auth/sign-in", json=signed), 401)
    assert "used already" in body["detail"]
    text = message(scene, alice, "abcdef0123456789")
    problem(
        httpx.post(
            f"{scene.url}/v1/auth/sign-in",
            json={"message": text, "signature": sign(alice, text)},
        ),
        401,
        "sign-in-refused",
    )
    # Not a message, not a signature, no body: 4xx problems, never a 500.
    problem(
        httpx.post(f"{scene.url}/v1/auth/sign-in", json={"message": "hi", "signature": "0x"}),
        400,
        "invalid-message",
    )
    text = message(scene, alice, new_nonce(scene))
    problem(
        httpx.post(f"{scene.url}/v1/auth/sign-in", json={"message": text, "signature": "0x12"}),
        401,
    )
    problem(httpx.post(f"{scene.url}/v1/auth/sign-in", json={}), 422, "invalid-request")


# --- each address alone with its records


def enrol(client: Signed) -> pyotp.TOTP:
    # Enrolling needs a message the wallet signed just now, stating the action.
    text = message(
        client.scene,
        client.who,
        new_nonce(client.scene),
        statement=signin.ACTIONS["enrol-totp"],
    )
    enrolment = client.post(
        "/v1/account/totp", json={"message": text, "signature": sign(client.who, text)}
    )
    assert enrolment.status_code == 201, enrolment.text
    totp = pyotp.TOTP(enrolment.json()["secret"])
    confirmed = client.post("/v1/account/totp/confirm", json={"code": totp.now()})
    assert confirmed.status_code == 200 and confirmed.json() == {"enrolled": True}
    return totp


def test_totp_is_required_for_webhooks_and_a_code_works_once(scene: Scene) -> None:
    carol = sign_in(scene, wallet("carol"))
    hook = {"url": "http://127.0.0.1:9/hook"}
    problem(carol.post("/v1/account/webhooks", json=hook), 403, "second-factor-not-enrolled")
    totp = enrol(carol)
    problem(carol.post("/v1/account/totp"), 409, "second-factor-enrolled")
    assert carol.get("/v1/auth/session").json()["second_factor"] is True
    problem(carol.post("/v1/account/webhooks", json=hook), 403, "second-factor-required")
    problem(
        carol.post("/v1/account/webhooks", json=hook, headers={"Tandem-TOTP": "000000"}),
        403,
        "second-factor-refused",
    )
    # The code of the next step (the confirmation spent this one's).
    code = totp.at(time.time() + 30)
    created = carol.post("/v1/account/webhooks", json=hook, headers={"Tandem-TOTP": code})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    # A code is spent once used: replaying it is refused.
    problem(
        carol.post("/v1/account/webhooks", json=hook, headers={"Tandem-TOTP": code}),
        403,
        "second-factor-refused",
    )
    listed = carol.get("/v1/account/webhooks").json()["items"]
    assert [w["url"] for w in listed] == [hook["url"]] and "secret" not in listed[0]
    # Neither the secret nor the seed is in the database in plain text.
    with scene.engine.connect() as conn:
        dump = json.dumps(
            [
                tuple(r)
                for table in (t.webhooks, t.second_factors)
                for r in conn.execute(select(table))
            ],
            default=str,
        )
    assert secret not in dump and totp.secret not in dump
    # Bad input is a 4xx problem.
    bad = carol.post(
        "/v1/account/webhooks",
        json={"url": "ftp://x", "kinds": ["nope"]},
        headers={"Tandem-TOTP": "1"},
    )
    body = problem(bad, 422, "invalid-request")
    assert {e["where"] for e in body["errors"]} == {"body.url", "body.kinds"}


def test_an_address_sees_and_changes_only_its_own_records(scene: Scene) -> None:
    erin, frank = sign_in(scene, wallet("erin")), sign_in(scene, wallet("frank"))
    put = erin.put(f"/v1/account/watchlist/{scene.master.lower()}")
    assert put.status_code == 200 and put.json()["master"] == scene.master
    assert erin.put(f"/v1/account/watchlist/{scene.master}").status_code == 200  # idempotent
    problem(erin.put(f"/v1/account/watchlist/{address('nobody')}"), 404, "not-found")
    problem(erin.put("/v1/account/watchlist/0x12"), 422, "invalid-request")
    assert [i["master"] for i in erin.get("/v1/account/watchlist").json()["items"]] == [
        scene.master
    ]
    assert frank.get("/v1/account/watchlist").json()["items"] == []
    problem(frank.delete(f"/v1/account/watchlist/{scene.master}"), 404)
    assert len(erin.get("/v1/account/watchlist").json()["items"]) == 1
    settings = {"kinds": ["exit.limit"], "stop_loss_distance_bps": 500}
    assert erin.put("/v1/account/notification-settings", json=settings).status_code == 200
    assert erin.get("/v1/account/notification-settings").json()["kinds"] == ["exit.limit"]
    assert len(frank.get("/v1/account/notification-settings").json()["kinds"]) > 1
    problem(erin.put("/v1/account/notification-settings", json={"stop_loss_distance_bps": -1}), 422)
    # Erin's webhook: Frank can neither see, read the log of, nor delete it.
    code = enrol(erin).at(time.time() + 30)
    made = erin.post(
        "/v1/account/webhooks", json={"url": "http://127.0.0.1:9/e"}, headers={"Tandem-TOTP": code}
    )
    assert made.status_code == 201
    hook = made.json()["id"]
    assert frank.get("/v1/account/webhooks").json()["items"] == []
    problem(frank.get(f"/v1/account/webhooks/{hook}/deliveries"), 404, "not-found")
    problem(frank.delete(f"/v1/account/webhooks/{hook}"), 404, "not-found")
    assert [w["id"] for w in erin.get("/v1/account/webhooks").json()["items"]] == [hook]
    assert erin.delete(f"/v1/account/watchlist/{scene.master}").status_code == 204


# --- notifications and webhooks


class Receiver:
    """A real HTTP server taking webhooks: it verifies each signature, answers 500 to the first
    ``failures`` attempts of each delivery, and keeps what it accepted by delivery id."""

    def __init__(self, secret: str, failures: int = 2) -> None:
        self.secret, self.failures = secret, failures
        self.attempts: dict[str, int] = {}
        self.accepted: dict[str, dict[str, Any]] = {}
        self.replays: list[str] = []
        self.bad_signatures = 0
        self.raw: dict[str, tuple[dict[str, str], bytes]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.take(dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            if not webhooks.verify(self.secret, headers, body, time.time()):
                self.bad_signatures += 1
                return 401
            delivery = headers["Tandem-Delivery"]
            if delivery in self.accepted:
                self.replays.append(delivery)
                return 200  # taken already: dropped
            self.attempts[delivery] = self.attempts.get(delivery, 0) + 1
            if self.attempts[delivery] <= self.failures:
                return 500
            self.accepted[delivery] = json.loads(body)
            self.raw[delivery] = (headers, body)
            return 200


def wait_for(
    client: httpx.Client, kind: str, timeout: float = 30, after: int = 0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get("/v1/account/notifications", params={"after": after, "kind": kind})
        assert found.status_code == 200, found.text
        if found.json()["items"]:
            item: dict[str, Any] = found.json()["items"][0]
            return item
        time.sleep(0.1)
    raise AssertionError(f"no {kind} notification in {timeout} s")


def test_indexed_events_become_notifications_and_signed_webhooks_with_retries(
    scene: Scene,
) -> None:
    dep, vault = scene.dep, scene.vault
    alice = sign_in(scene, scene.alice)
    bob = sign_in(scene, wallet("bob"))  # no capital: watches the master
    assert bob.put(f"/v1/account/watchlist/{scene.master}").status_code == 200
    code = enrol(alice).at(time.time() + 30)
    receiver = Receiver(secret="")
    created = alice.post(
        "/v1/account/webhooks", json={"url": receiver.url}, headers={"Tandem-TOTP": code}
    )
    assert created.status_code == 201, created.text
    receiver.secret = created.json()["secret"]  # shown once, kept by the receiver
    hook = created.json()["id"]

    # The master buys: the pool copies it, the follower and the watcher are told.
    trade(
        dep, vault, scene.master, BASE, "LINK", dep.units(BASE, 50_000), dep.v3_route(BASE, "LINK")
    )
    bought = dep.w3.eth.block_number
    scene.index()
    opened = wait_for(alice, "position.opened")
    assert opened["block_number"] == bought and opened["vault"] == vault.address
    assert opened["data"]["copied"] is True and opened["data"]["master"] == scene.master
    assert opened["data"]["token_out"] == dep.address_of("LINK")
    watched = wait_for(bob, "position.opened")
    assert watched["data"]["watching"] is True and watched["data"]["copied"] is False
    assert watched["tx_hash"] == opened["tx_hash"]

    # The price falls and a keeper fires the stop-loss exit of the follower.
    scale_feed(dep, "LINK", Decimal("0.5"))
    keeper = address("accounts:keeper")
    set_balance(dep.w3, keeper, 10**21)
    trigger_exits(vault, keeper, [scene.alice.address])
    scene.index()
    exited = wait_for(alice, "exit.limit")
    assert exited["data"]["limit"] == "stop_loss" and exited["data"]["keeper"] == keeper
    problem(bob.get("/v1/account/notifications", params={"kind": "exit"}), 400, "invalid-kind")
    # Bob was told nothing of Alice's exit.
    assert bob.get("/v1/account/notifications", params={"kind": "exit.limit"}).json()["items"] == []

    # Every notification of Alice reached the receiver, on the third attempt each.
    ids = [n["id"] for n in alice.get("/v1/account/notifications").json()["items"]]
    deadline = time.monotonic() + 30
    while len(receiver.accepted) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(a["notification"]["id"] for a in receiver.accepted.values()) == ids
    assert receiver.bad_signatures == 0
    # The receiver has a delivery's answer before the notifier writes it down: the log is
    # read until every delivery is written delivered.
    while True:
        log = alice.get(f"/v1/account/webhooks/{hook}/deliveries").json()["items"]
        if all(d["status"] == "delivered" for d in log) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {d["id"] for d in log} == set(receiver.accepted)
    for delivery in log:
        assert delivery["status"] == "delivered"
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
        gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(delivery["attempts"])]
        # The delay doubles: at least the backoff (0.2 s), then at least twice it. (Lower
        # bounds only: a busy machine can only add to each gap.)
        assert gaps[0] >= 0.19 and gaps[1] >= 0.38, gaps
    # A replay (the same delivery sent again) is recognised by its id and dropped.
    some = next(iter(receiver.raw))
    headers, body = receiver.raw[some]
    kept = {k: v for k, v in headers.items() if k.lower().startswith(("tandem-", "content-type"))}
    again = httpx.post(receiver.url, content=body, headers=kept)
    assert again.status_code == 200 and receiver.replays == [some]
    # A tampered body fails the signature.
    forged = httpx.post(receiver.url, content=body.replace(b'"id"', b'"Id"', 1), headers=kept)
    assert forged.status_code == 401 and receiver.bad_signatures == 1
    receiver.server.shutdown()

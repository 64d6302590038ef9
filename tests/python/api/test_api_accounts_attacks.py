"""Attacks on accounts, sessions, the second factor and webhooks, against a real server process
(``tandem api serve``, two workers) over a real database (SQLite and PostgreSQL). No chain is
needed: the database is migrated empty and the chain id is set; where a delivery must happen,
the notifier's state, a notification and its delivery are written to the database directly
(what the notifier derives from indexed events).

Each test asserts what should hold; a failing test names a hole still open."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
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
from indexing.support import fresh_postgres
from siwe import SiweMessage
from sqlalchemy import Engine, create_engine, insert, select

from api import cursors
from api.accounts import signin
from api.notifications import produce, webhooks
from tandem.config import IndexerSettings, Settings
from tandem.db import accounts as t
from tandem.db import database_url
from tandem.db.migrate import upgrade

KEY = Fernet.generate_key().decode()
CHAIN_ID = 31337


def wallet(label: str) -> LocalAccount:
    account: LocalAccount = Account.from_key(keccak(text=f"attacks:{label}"))
    return account


@dataclass
class Api:
    url: str
    engine: Engine
    backend: str

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")


@contextmanager
def served(
    request: pytest.FixtureRequest,
    settings: Settings,
    tmp: Path,
    backend: str,
    name: str,
    env: dict[str, str],
) -> Iterator[Api]:
    """An empty, migrated database (with the notifier's state, so a worker takes the lease and
    delivers) and ``tandem api serve`` on it with two workers."""
    if backend == "postgresql":
        db = fresh_postgres(request.getfixturevalue("postgres"), name)
    else:
        db = f"sqlite:///{tmp / (name + '.db')}"
    ix = settings.model_copy(
        update={
            "deployments_dir": tmp / "deployments",
            "indexer": IndexerSettings.model_validate(
                {**settings.indexer.model_dump(), "database_url": db}
            ),
        }
    )
    engine = create_engine(database_url(db, ix.project_root))
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(t.notifier_state).values(
                name=produce.STATE, block_number=0, block_hash=None, holder=None, lease_until=0.0
            )
        )
    base_env = {
        "TANDEM_RPC_URL": "http://127.0.0.1:9",
        "TANDEM_DEPLOYMENTS_DIR": str(tmp / "deployments"),
        "TANDEM_API__SECRET_KEY": KEY,
        "TANDEM_API__COOKIE_SECURE": "false",
        "TANDEM_API__SIWE_CHAIN_ID": str(CHAIN_ID),
        "TANDEM_API__NOTIFY_INTERVAL": "0.05",
        "TANDEM_API__WEBHOOK_BACKOFF": "0.2",
    }
    try:
        with api_server(ix, "--workers", "2", env={**base_env, **env}) as url:
            yield Api(url, engine, backend)
    finally:
        engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """The defaults an operator gets: no siwe_domain or siwe_uri, private webhook hosts refused."""
    tmp = tmp_path_factory.mktemp("attacks")
    with served(request, settings, tmp, request.param, "attacks_strict", {}) as found:
        yield found


@pytest.fixture(scope="module")
def lab(
    request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """Webhooks to this machine allowed (receivers run here), a 1 s webhook timeout."""
    tmp = tmp_path_factory.mktemp("attacks-lab")
    env = {"TANDEM_API__WEBHOOK_PRIVATE_HOSTS": "true", "TANDEM_API__WEBHOOK_TIMEOUT": "1"}
    with served(request, settings, tmp, "sqlite", "attacks_lab", env) as found:
        yield found


# --- helpers


def message(api: Api, who: LocalAccount, nonce: str, **changes: Any) -> str:
    fields: dict[str, Any] = {
        "domain": api.host,
        "address": who.address,
        "statement": "Sign in to Tandem.",
        "uri": f"{api.url}/login",
        "version": "1",
        "chain_id": CHAIN_ID,
        "nonce": nonce,
        "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    fields.update(changes)
    return str(SiweMessage(**fields).prepare_message())


def sign(who: LocalAccount, text: str) -> str:
    return "0x" + who.sign_message(encode_defunct(text=text)).signature.hex().removeprefix("0x")


def new_nonce(api: Api, **headers: str) -> dict[str, Any]:
    response = httpx.post(f"{api.url}/v1/auth/nonce", headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


class Signed(httpx.Client):
    """A client with a session, and the wallet and server it signed in with."""

    def __init__(self, api: Api, who: LocalAccount, token: str) -> None:
        super().__init__(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.api, self.who, self.token = api, who, token


def sign_in(api: Api, who: LocalAccount) -> Signed:
    text = message(api, who, new_nonce(api)["nonce"])
    response = httpx.post(
        f"{api.url}/v1/auth/sign-in", json={"message": text, "signature": sign(who, text)}
    )
    assert response.status_code == 201, response.text
    return Signed(api, who, response.json()["token"])


def signed_action(client: Signed, action: str, who: LocalAccount | None = None) -> dict[str, str]:
    """``{message, signature}``: a fresh message stating ``action``, signed by ``who`` (the
    session's wallet by default)."""
    who = who or client.who
    text = message(
        client.api, who, new_nonce(client.api)["nonce"], statement=signin.ACTIONS[action]
    )
    return {"message": text, "signature": sign(who, text)}


def enrol(client: Signed) -> pyotp.TOTP:
    # Enrolling needs a fresh signature of the wallet (a session alone cannot enrol).
    enrolment = client.post("/v1/account/totp", json=signed_action(client, "enrol-totp"))
    assert enrolment.status_code == 201, enrolment.text
    totp = pyotp.TOTP(enrolment.json()["secret"])
    confirmed = client.post("/v1/account/totp/confirm", json={"code": totp.now()})
    assert confirmed.status_code == 200, confirmed.text
    return totp


def next_code(totp: pyotp.TOTP) -> str:
    """The code of the next time step (the confirmation spent this one's)."""
    return str(totp.at(time.time() + 30))


def wrong_codes(totp: pyotp.TOTP, count: int) -> list[str]:
    now = time.time()
    valid = {totp.at(now + d) for d in (-60, -30, 0, 30, 60)}
    return [
        c for c in (f"{i:06d}" for i in range(100_000, 100_000 + count + 10)) if c not in valid
    ][:count]


def make_webhook(client: httpx.Client, totp: pyotp.TOTP, url: str) -> dict[str, Any]:
    made = client.post(
        "/v1/account/webhooks", json={"url": url}, headers={"Tandem-TOTP": next_code(totp)}
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def not_500(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.text


def queue_delivery(api: Api, address: str, webhook_id: int) -> str:
    """A notification for ``address`` and a due delivery of it to ``webhook_id``, as the
    notifier writes them; the delivery's id."""
    now = time.time()
    delivery = str(uuid.uuid4())
    with api.engine.begin() as conn:
        notification = conn.execute(
            insert(t.notifications)
            .values(
                address=address,
                kind="position.opened",
                vault=None,
                block_number=1,
                log_index=int(now * 1000) % 1_000_000,
                block_hash="0x" + uuid.uuid4().hex * 2,
                tx_hash="0x" + "00" * 32,
                block_timestamp=int(now),
                data={"test": True},
                created_at=now,
            )
            .returning(t.notifications.c.id)
        ).scalar_one()
        conn.execute(
            insert(t.deliveries).values(
                id=delivery,
                webhook_id=webhook_id,
                notification_id=notification,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                delivered_at=None,
            )
        )
    return delivery


def delivery_status(api: Api, delivery: str) -> str:
    with api.engine.connect() as conn:
        return str(
            conn.execute(
                select(t.deliveries.c.status).where(t.deliveries.c.id == delivery)
            ).scalar()
        )


def delivery_attempts(api: Api, delivery: str) -> int:
    with api.engine.connect() as conn:
        return int(
            conn.execute(
                select(t.deliveries.c.attempts).where(t.deliveries.c.id == delivery)
            ).scalar_one()
        )


class Receiver:
    """An HTTP server on ``bind`` that counts the POSTs it gets; it answers 500 to the first
    ``failures`` and 200 after."""

    def __init__(self, bind: str = "127.0.0.1", failures: int = 0) -> None:
        self.hits = 0
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.hits += 1
                self.send_response(500 if receiver.hits <= receiver.failures else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((bind, free_port()), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Dripper:
    """A receiver that answers 200 and then a body one byte every 0.3 s, for ``seconds``: each
    byte arrives well within any read timeout, so only a deadline on the whole attempt ends it."""

    def __init__(self, seconds: float = 40) -> None:
        self.stop = threading.Event()
        self.connected = threading.Event()
        dripper = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                dripper.connected.set()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                ends = time.monotonic() + seconds
                try:
                    while time.monotonic() < ends and not dripper.stop.is_set():
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.3)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


# --- Sign-In with Ethereum


def test_sign_in_domain_is_not_taken_from_an_attacker_chosen_host_header(api: Api) -> None:
    """A phishing site evil.example asks the API for a nonce, has the victim sign a message for
    evil.example (the wallet sees the domain match the page it is on, so it does not warn) and
    relays it with ``Host: evil.example``. The API must only accept its own domain."""
    victim = wallet("phished")
    evil = {"Host": "evil.example"}
    nonce = new_nonce(api, **evil)
    text = message(api, victim, nonce["nonce"], domain="evil.example", uri="http://evil.example/")
    relayed = httpx.post(
        f"{api.url}/v1/auth/sign-in",
        json={"message": text, "signature": sign(victim, text)},
        headers=evil,
    )
    assert relayed.status_code == 401, "a message signed for evil.example opened a session"
    assert nonce["domain"] != "evil.example", "the nonce endpoint tells a phisher to use its host"


def test_an_oversized_sign_in_message_is_refused_quickly(api: Api) -> None:
    """Unauthenticated: the EIP-4361 parser is superlinear in the message's length (a 10 kB
    statement takes seconds of CPU), so one request pins a worker. Refuse long messages early."""
    if api.backend != "sqlite":
        pytest.skip("the parser runs before any database work: one backend is enough")
    nonce = new_nonce(api)["nonce"]
    text = message(api, wallet("big"), nonce, statement="a" * 12_000)
    started = time.monotonic()
    try:
        answer = httpx.post(
            f"{api.url}/v1/auth/sign-in",
            json={"message": text, "signature": "0x" + "00" * 65},
            timeout=3,
        )
    except httpx.ReadTimeout:
        pytest.fail("a 12 kB sign-in message kept a worker busy for more than 3 s")
    assert 400 <= answer.status_code < 500
    assert time.monotonic() - started < 3


def test_one_nonce_opens_one_session_even_when_raced_across_workers(api: Api) -> None:
    who = wallet("racer")
    text = message(api, who, new_nonce(api)["nonce"])
    body = {"message": text, "signature": sign(who, text)}
    answers: list[int] = []
    barrier = threading.Barrier(6)

    def go() -> None:
        barrier.wait()
        answers.append(httpx.post(f"{api.url}/v1/auth/sign-in", json=body, timeout=30).status_code)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(answers) == [201] + [401] * 5, answers


# --- second factor


def test_totp_guessing_is_throttled(api: Api) -> None:
    """Without a limit, a stolen session guesses the 6-digit code (three steps are accepted, so
    1 in ~333,000 per guess) at the server's request rate. After a few wrong codes, further
    attempts must be refused (429 or a lock) — the right code included."""
    client = sign_in(api, wallet("guessed"))
    totp = enrol(client)
    hook = {"url": "https://hooks.example.com/x"}
    statuses = [
        client.post("/v1/account/webhooks", json=hook, headers={"Tandem-TOTP": code}).status_code
        for code in wrong_codes(totp, 30)
    ]
    right = client.post("/v1/account/webhooks", json=hook, headers={"Tandem-TOTP": next_code(totp)})
    assert 429 in statuses or right.status_code in (403, 429), (
        "30 wrong codes in a row were all answered and the next right code still worked"
    )


def test_one_totp_code_is_accepted_once_even_when_raced(api: Api) -> None:
    """The code is checked (read last_step) and spent (write last_step) in two statements with
    nothing stopping a concurrent request between them: the same code must work once."""
    client = sign_in(api, wallet("replayer"))
    totp = enrol(client)
    token = client.headers["Authorization"]
    # One warmed-up connection per racer, so the requests reach the workers together.
    racers = [
        httpx.Client(base_url=api.url, headers={"Authorization": token}, timeout=30)
        for _ in range(12)
    ]
    for racer in racers:
        assert racer.get("/v1/auth/session").status_code == 200
    code = next_code(totp)
    answers: list[int] = []
    barrier = threading.Barrier(len(racers))

    def go(i: int) -> None:
        barrier.wait()
        answers.append(
            racers[i]
            .post(
                "/v1/account/webhooks",
                json={"url": f"https://hooks.example.com/{i}"},
                headers={"Tandem-TOTP": code},
            )
            .status_code
        )

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(racers))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for racer in racers:
        racer.close()
    assert answers.count(201) == 1 and all(a < 500 for a in answers), sorted(answers)


def test_a_non_ascii_digit_totp_header_is_a_4xx_not_a_500(api: Api) -> None:
    """'²' is a digit to str.isdigit() and a latin-1 header byte; hmac.compare_digest refuses
    non-ASCII strings with a TypeError."""
    client = sign_in(api, wallet("superscript"))
    enrol(client)
    answer = client.post(
        "/v1/account/webhooks",
        json={"url": "https://hooks.example.com/x"},
        headers={b"Tandem-TOTP": "²²²²²²".encode("latin-1")},
    )
    not_500(answer)
    assert answer.status_code == 403


# --- malformed identifiers are 4xx problems, never 500s


def test_out_of_range_ids_are_4xx_not_500(api: Api) -> None:
    """A path or query integer beyond 64 bits: SQLite cannot bind it (OverflowError)."""
    client = sign_in(api, wallet("ids"))
    huge = 10**20
    not_500(client.get(f"/v1/account/webhooks/{huge}/deliveries"))
    not_500(client.delete(f"/v1/account/webhooks/{huge}", headers={"Tandem-TOTP": "123456"}))
    answer = client.get("/v1/account/notifications", params={"after": huge})
    assert answer.status_code in (200, 422), answer.text


def test_forged_delivery_cursors_are_400_not_500(api: Api) -> None:
    """A cursor is unsigned base64 JSON: its key's types are the client's to choose, and
    ``float(key[0])`` raises on a string, a list or an object."""
    client = sign_in(api, wallet("cursors"))
    hook = make_webhook(client, enrol(client), "https://hooks.example.com/c")["id"]
    for key in (["x", "y"], [[1], "a"], [{"a": 1}, "b"]):
        forged = cursors.encode(["deliveries", hook], key)
        answer = client.get(f"/v1/account/webhooks/{hook}/deliveries", params={"cursor": forged})
        not_500(answer)
        assert answer.status_code == 400, answer.text


def test_a_webhook_url_longer_than_its_column_is_a_4xx_not_a_500(api: Api) -> None:
    """The URL model allows 2083 characters, the column holds 2048 (PostgreSQL enforces it)."""
    client = sign_in(api, wallet("longurl"))
    totp = enrol(client)
    url = "https://hooks.example.com/" + "a" * 2050
    answer = client.post(
        "/v1/account/webhooks", json={"url": url}, headers={"Tandem-TOTP": next_code(totp)}
    )
    assert answer.status_code in (201, 422), (answer.status_code, answer.text)


# --- webhook SSRF


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost./hook",  # the trailing dot: the same name to a resolver
        "http://metadata.google.internal./computeMetadata/v1/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    ],
)
def test_private_webhook_targets_in_disguise_are_refused(api: Api, url: str) -> None:
    client = sign_in(api, wallet("ssrf-literal"))
    # The target is checked first: a target let through meets the second factor (403).
    answer = client.post("/v1/account/webhooks", json={"url": url}, headers={"Tandem-TOTP": "1"})
    assert answer.status_code == 422, (url, answer.status_code, answer.text)


def _private_name() -> tuple[str, str] | None:
    """A name of this machine that resolves to a non-public address, and that address."""
    for name in (socket.gethostname(), socket.getfqdn()):
        try:
            addr = str(socket.getaddrinfo(name, 80, socket.AF_INET)[0][4][0])
        except OSError:
            continue
        if name != "localhost" and not ipaddress.ip_address(addr).is_global:
            return name, addr
    return None


def test_a_name_resolving_to_a_private_address_is_never_posted_to(api: Api) -> None:
    """The target check looks at IP literals and a few names only: any DNS name that resolves
    (or is rebound after the check) to 127.0.0.1, 10/8, 169.254.169.254 ... passes, and the
    notifier POSTs there. Resolve at delivery and refuse non-public addresses (and pin them)."""
    found = _private_name()
    if found is None:
        pytest.skip("no name of this machine resolves to a private address")
    name, addr = found
    receiver = Receiver(bind=addr)
    try:
        owner = wallet("ssrf-dns")
        client = sign_in(api, owner)
        totp = enrol(client)
        url = f"http://{name}:{receiver.port}/internal-admin"
        made = client.post(
            "/v1/account/webhooks", json={"url": url}, headers={"Tandem-TOTP": next_code(totp)}
        )
        if made.status_code == 422:
            return  # refused at registration: fine
        assert made.status_code == 201, made.text
        delivery = queue_delivery(api, owner.address, made.json()["id"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not receiver.hits:
            if delivery_attempts(api, delivery):
                break
            time.sleep(0.1)
        assert receiver.hits or delivery_attempts(api, delivery), "no attempt was made at all"
        assert receiver.hits == 0, f"the notifier POSTed to {name} ({addr}), a private address"
    finally:
        receiver.close()


# --- webhook denial of service


def test_a_slow_webhook_receiver_does_not_stall_everyone_elses_deliveries(lab: Api) -> None:
    """One round sends every due delivery and waits for all of them (asyncio.gather); httpx's
    timeout is per read, and the whole body is read. A receiver dripping one byte at a time
    keeps the round (and the lease) for as long as it likes: nobody else's delivery or retry
    goes out meanwhile, and past the 10 s lease another worker sends the same deliveries."""
    dripper = Dripper(seconds=40)
    honest = Receiver(failures=1)  # needs one retry
    try:
        mallory, alice = wallet("dripper"), wallet("honest")
        m_client, a_client = sign_in(lab, mallory), sign_in(lab, alice)
        m_hook = make_webhook(m_client, enrol(m_client), dripper.url)["id"]
        a_hook = make_webhook(a_client, enrol(a_client), f"http://127.0.0.1:{honest.port}/h")["id"]
        queue_delivery(lab, mallory.address, m_hook)
        assert dripper.connected.wait(10), "the notifier never reached the dripping receiver"
        delivery = queue_delivery(lab, alice.address, a_hook)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and delivery_status(lab, delivery) != "delivered":
            time.sleep(0.2)
        assert delivery_status(lab, delivery) == "delivered", (
            "an honest delivery waited behind a slow receiver (webhook_timeout is 1 s)"
        )
    finally:
        dripper.close()
        honest.close()


# --- the receiver's check


def test_verify_refuses_rather_than_raises_on_odd_headers() -> None:
    """A receiver using ``webhooks.verify`` must get False, not an exception (a 500 in the
    receiver), for headers an attacker sends."""
    body = b"{}"
    now = time.time()
    good = webhooks.signature("s3cret", str(int(now)), body)
    cases = [
        {"Tandem-Timestamp": "²", "Tandem-Signature": good},
        {"Tandem-Timestamp": str(int(now)), "Tandem-Signature": "v1=é"},
    ]
    for headers in cases:
        try:
            assert webhooks.verify("s3cret", headers, body, now) is False
        except (ValueError, TypeError) as exc:
            pytest.fail(f"verify raised {type(exc).__name__} on {headers}")


# --- the defences, each tested (added with the fixes)


def problem(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:tandem:problem:{name}", body
    return body


def from_address(api: Api, local: str) -> httpx.Client:
    """A client connecting from another loopback address: another client to the server."""
    transport = httpx.HTTPTransport(local_address=local)
    return httpx.Client(base_url=api.url, transport=transport, timeout=30)


def test_sign_in_domains_come_from_the_settings_never_from_a_request() -> None:
    from tandem.config import ApiSettings

    local = ApiSettings(host="127.0.0.1", port=8123).sign_in_origins()
    assert local == [
        ("127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("localhost:8123", "http://localhost:8123"),
    ]
    public = ApiSettings(
        host="0.0.0.0",
        siwe_domain="app.example.com",
        siwe_extra_origins=["https://beta.example.com/"],
    )
    assert public.sign_in_origins() == [
        ("app.example.com", "https://app.example.com"),
        ("beta.example.com", "https://beta.example.com"),
    ]
    # Serving other hosts without them configured is refused, not guessed from a Host header.
    with pytest.raises(ValueError, match="siwe_domain"):
        ApiSettings(host="0.0.0.0").sign_in_origins()
    with pytest.raises(ValueError):
        ApiSettings(siwe_uri="https://app.example.com/login")


def test_serve_refuses_accounts_on_a_public_host_without_a_sign_in_domain(
    settings: Settings, tmp_path: Path
) -> None:
    from api.serve import serve
    from tandem.config import ApiSettings
    from tandem.errors import ConfigError

    db = f"sqlite:///{tmp_path / 'serve.db'}"
    engine = create_engine(db)
    upgrade(engine)
    engine.dispose()
    ix = settings.model_copy(
        update={
            "indexer": IndexerSettings.model_validate(
                {**settings.indexer.model_dump(), "database_url": db}
            ),
            "api": ApiSettings(host="0.0.0.0", secret_key=KEY),
        }
    )
    with pytest.raises(ConfigError, match="siwe_domain"):
        serve(ix)


def test_the_nonce_tells_the_configured_domain_and_localhost_also_signs_in(api: Api) -> None:
    told = new_nonce(api)
    assert (told["domain"], told["uri"]) == (api.host, api.url)
    port = api.host.rsplit(":", 1)[1]
    who = wallet("localhost")
    text = message(
        api,
        who,
        new_nonce(api)["nonce"],
        domain=f"localhost:{port}",
        uri=f"http://localhost:{port}/",
    )
    answer = httpx.post(
        f"{api.url}/v1/auth/sign-in", json={"message": text, "signature": sign(who, text)}
    )
    assert answer.status_code == 201, answer.text


def test_request_bodies_and_signatures_are_bounded(api: Api) -> None:
    big = {"message": "x" * 100_000, "signature": "0x"}
    problem(httpx.post(f"{api.url}/v1/auth/sign-in", json=big), 413, "body-too-large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(100):
            yield b" " * 1_000

    streamed = httpx.post(
        f"{api.url}/v1/auth/sign-in",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    problem(streamed, 413, "body-too-large")
    text = message(api, wallet("longsig"), new_nonce(api)["nonce"])
    answer = httpx.post(
        f"{api.url}/v1/auth/sign-in", json={"message": text, "signature": "0x" + "ab" * 200}
    )
    problem(answer, 422, "invalid-request")
    # A message naming a nonce nobody was given is refused before it is parsed.
    text = message(api, wallet("nononce"), "f" * 32, statement="a" * 1_500)
    answer = httpx.post(
        f"{api.url}/v1/auth/sign-in", json={"message": text, "signature": "0x" + "00" * 65}
    )
    problem(answer, 401, "sign-in-refused")


def test_unused_nonces_are_capped_per_client(api: Api) -> None:
    with from_address(api, "127.0.0.5") as greedy, from_address(api, "127.0.0.6") as other:
        answers = [greedy.post("/v1/auth/nonce") for _ in range(20)]
        assert [a.status_code for a in answers] == [201] * 20
        refused = greedy.post("/v1/auth/nonce")
        problem(refused, 429, "too-many-nonces")
        assert 0 < int(refused.headers["Retry-After"]) <= 600
        # Another client is not held back.
        assert other.post("/v1/auth/nonce").status_code == 201
        # Signing in with one of them frees a place.
        who = wallet("greedy")
        text = message(api, who, answers[0].json()["nonce"])
        signed = greedy.post(
            "/v1/auth/sign-in", json={"message": text, "signature": sign(who, text)}
        )
        assert signed.status_code == 201, signed.text
        assert greedy.post("/v1/auth/nonce").status_code == 201


def test_totp_lockout_is_a_429_with_retry_after_counted_in_the_database(api: Api) -> None:
    client = sign_in(api, wallet("locked"))
    totp = enrol(client)
    hook = {"url": "https://hooks.example.com/l"}
    wrong = wrong_codes(totp, 5)
    # The other worker, or another connection, sees the same count: alternate connections.
    other = httpx.Client(base_url=api.url, headers=dict(client.headers), timeout=30)
    for i, code in enumerate(wrong):
        sender = client if i % 2 else other
        answer = sender.post("/v1/account/webhooks", json=hook, headers={"Tandem-TOTP": code})
        problem(answer, 403, "second-factor-refused")
    locked = other.post("/v1/account/webhooks", json=hook, headers={"Tandem-TOTP": totp.now()})
    body = problem(locked, 429, "second-factor-locked")
    assert 0 < int(locked.headers["Retry-After"]) <= 30, locked.headers
    assert totp.now() not in body["detail"]
    with api.engine.connect() as conn:
        row = conn.execute(
            select(t.second_factors).where(t.second_factors.c.address == client.who.address)
        ).one()
    assert row.failures == 5 and row.locked_until > time.time()
    other.close()


def test_enrolling_totp_needs_a_fresh_signature_of_the_wallet(api: Api) -> None:
    owner, thief_wallet = wallet("enrol-owner"), wallet("enrol-thief")
    stolen = sign_in(api, owner)  # a session a thief holds, without the wallet
    problem(stolen.post("/v1/account/totp"), 403, "signature-required")
    # Signed by another wallet, or a sign-in message instead of the action's: refused.
    problem(
        stolen.post("/v1/account/totp", json=signed_action(stolen, "enrol-totp", thief_wallet)),
        403,
        "signature-refused",
    )
    text = message(api, owner, new_nonce(api)["nonce"])
    problem(
        stolen.post("/v1/account/totp", json={"message": text, "signature": sign(owner, text)}),
        403,
        "signature-refused",
    )
    # A message stating the action is no sign-in.
    action = signed_action(stolen, "enrol-totp")
    problem(httpx.post(f"{api.url}/v1/auth/sign-in", json=action), 401, "sign-in-refused")
    # The owner's wallet enrols (with a message it signs now), and every other session ends.
    owner_session = sign_in(api, owner)
    enrol(owner_session)
    problem(stolen.get("/v1/auth/session"), 401, "unauthorized")
    assert owner_session.get("/v1/auth/session").json()["second_factor"] is True


def test_resetting_totp_needs_a_signed_message_and_signs_out_other_sessions(api: Api) -> None:
    owner = wallet("reset-owner")
    first, second = sign_in(api, owner), sign_in(api, owner)
    enrol(second)
    problem(first.get("/v1/auth/session"), 401, "unauthorized")  # enrolment signed it out
    third = sign_in(api, owner)
    problem(third.post("/v1/account/totp/reset", json={}), 422, "invalid-request")
    problem(
        third.post("/v1/account/totp/reset", json=signed_action(third, "enrol-totp")),
        403,
        "signature-refused",
    )
    reset = third.post("/v1/account/totp/reset", json=signed_action(third, "reset-totp"))
    assert reset.status_code == 200 and reset.json() == {"enrolled": False}, reset.text
    problem(second.get("/v1/auth/session"), 401, "unauthorized")
    assert third.get("/v1/auth/session").json()["second_factor"] is False
    enrol(third)  # a new authenticator
    assert third.get("/v1/auth/session").json()["second_factor"] is True


def test_sign_out_everywhere_revokes_every_session_of_the_address(api: Api) -> None:
    who, bystander = wallet("everywhere"), wallet("bystander")
    phone, laptop, other = sign_in(api, who), sign_in(api, who), sign_in(api, bystander)
    answer = laptop.post("/v1/auth/sign-out-everywhere")
    assert answer.status_code == 204, answer.text
    problem(phone.get("/v1/auth/session"), 401, "unauthorized")
    problem(laptop.get("/v1/auth/session"), 401, "unauthorized")
    assert other.get("/v1/auth/session").status_code == 200


def test_cookie_sessions_need_a_custom_header_or_origin_to_change_anything(api: Api) -> None:
    token = sign_in(api, wallet("cookie")).token
    prefs = {"kinds": ["exit.limit"]}
    with httpx.Client(base_url=api.url, cookies={"tandem_session": token}, timeout=30) as browser:
        assert browser.get("/v1/account/notification-settings").status_code == 200
        path = "/v1/account/notification-settings"
        problem(browser.put(path, json=prefs), 403, "cross-site-refused")
        problem(
            browser.put(path, json=prefs, headers={"Origin": "https://evil.example"}),
            403,
            "cross-site-refused",
        )
        assert browser.put(path, json=prefs, headers={"Origin": api.url}).status_code == 200
        assert browser.put(path, json=prefs, headers={"Tandem-CSRF": "1"}).status_code == 200
    bearer = httpx.put(
        f"{api.url}/v1/account/notification-settings",
        json=prefs,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert bearer.status_code == 200


def test_webhooks_are_capped_per_address(api: Api) -> None:
    client = sign_in(api, wallet("many-hooks"))
    totp = enrol(client)
    now = time.time()
    with api.engine.begin() as conn:
        for i in range(10):
            conn.execute(
                insert(t.webhooks).values(
                    address=client.who.address,
                    url=f"https://hooks.example.com/{i}",
                    secret=Fernet(KEY).encrypt(b"s").decode(),
                    kinds=None,
                    created_at=now,
                    deleted_at=None,
                )
            )
    answer = client.post(
        "/v1/account/webhooks",
        json={"url": "https://hooks.example.com/11"},
        headers={"Tandem-TOTP": next_code(totp)},
    )
    problem(answer, 409, "too-many-webhooks")


@pytest.mark.parametrize(
    "host",
    [
        "localhost.",
        "LOCALHOST",
        "metadata.google.internal.",
        "intranet",
        "printer.local",
        "[::ffff:127.0.0.1]",
        "[::7f00:1]",
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",  # Teredo
        "[64:ff9b:1::a00:1]",  # local-use NAT64
        "100.64.0.1",  # shared address space
        "0.0.0.0",
        "[ff02::1]",
    ],
)
def test_the_registration_check_refuses_private_hosts(host: str) -> None:
    from api.notifications.targets import refused_host

    assert refused_host(host) is not None
    assert refused_host("hooks.example.com") is None
    assert refused_host("8.8.8.8") is None and refused_host("[2001:4860:4860::8888]") is None


def test_delivery_connects_to_the_checked_address_with_the_original_host_and_sni() -> None:
    import asyncio

    from api.notifications.targets import PinnedTransport, TargetRefused

    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async def public(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("93.184.216.34")]

    async def rebound(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")]

    async def go(resolver: Any, url: str) -> httpx.Response:
        pinned = PinnedTransport(
            allow_private=False, inner=httpx.MockTransport(answer), resolver=resolver
        )
        async with httpx.AsyncClient(transport=pinned) as client:
            return await client.post(url, content=b"{}")

    assert asyncio.run(go(public, "https://hooks.example.com/x")).status_code == 204
    sent = seen[-1]
    assert str(sent.url) == "https://93.184.216.34/x"
    assert sent.headers["Host"] == "hooks.example.com"
    assert sent.extensions["sni_hostname"] == "hooks.example.com"
    with pytest.raises(TargetRefused):
        asyncio.run(go(rebound, "https://hooks.example.com/x"))
    assert len(seen) == 1


def test_a_real_connection_goes_to_the_resolved_address_with_the_original_host() -> None:
    import asyncio

    from api.notifications.targets import PinnedTransport, TargetRefused

    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hosts.append(str(self.headers["Host"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://localhost:{server.server_port}/hook"

    async def post(allow_private: bool) -> int:
        transport = PinnedTransport(allow_private=allow_private)
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            return (await client.post(url, content=b"{}")).status_code

    try:
        with pytest.raises(TargetRefused):
            asyncio.run(post(allow_private=False))
        assert hosts == []
        assert asyncio.run(post(allow_private=True)) == 200
        assert hosts == [f"localhost:{server.server_port}"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_webhook_whose_name_now_resolves_to_a_private_address_is_not_posted_to(
    api: Api,
) -> None:
    """A webhook registered while its name was public, rebound to 127.0.0.1 since (written to
    the database directly: registration refuses ``localhost``): the delivery refuses it."""
    receiver = Receiver()
    try:
        owner = wallet("rebound")
        now = time.time()
        with api.engine.begin() as conn:
            hook = conn.execute(
                insert(t.webhooks)
                .values(
                    address=owner.address,
                    url=f"http://localhost:{receiver.port}/hook",
                    secret=Fernet(KEY).encrypt(b"s").decode(),
                    kinds=None,
                    created_at=now,
                    deleted_at=None,
                )
                .returning(t.webhooks.c.id)
            ).scalar_one()
        delivery = queue_delivery(api, owner.address, hook)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not delivery_attempts(api, delivery):
            time.sleep(0.1)
        assert receiver.hits == 0
        with api.engine.connect() as conn:
            errors = (
                conn.execute(select(t.attempts.c.error).where(t.attempts.c.delivery_id == delivery))
                .scalars()
                .all()
            )
        assert errors and set(errors) == {"TargetRefused"}, errors
    finally:
        receiver.close()


def test_an_attempt_ends_at_its_deadline_whatever_the_receiver_does() -> None:
    import asyncio

    dripper = Dripper(seconds=30)
    item = webhooks.Due("d", 1, 0, dripper.url, "s", b"{}")

    async def go() -> webhooks.Outcome:
        async with httpx.AsyncClient(timeout=httpx.Timeout(0.5), trust_env=False) as client:
            return await webhooks.attempt(client, item, 0.5)

    try:
        started = time.monotonic()
        outcome = asyncio.run(go())
        assert time.monotonic() - started < 2
        assert outcome.status_code == 200  # the status line came; the body is never read
    finally:
        dripper.close()


def test_a_delivery_is_claimed_once_and_its_attempt_recorded_once(
    tmp_path: Path,
) -> None:
    """Two workers (a lease taken over while an attempt is out): one claims the delivery, and
    a second record of the same attempt writes nothing."""
    engine = create_engine(f"sqlite:///{tmp_path / 'claims.db'}")
    upgrade(engine)
    api = Api("http://127.0.0.1:9", engine, "sqlite")
    now = time.time()
    with engine.begin() as conn:
        hook = conn.execute(
            insert(t.webhooks)
            .values(
                address=wallet("claims").address,
                url="https://hooks.example.com/c",
                secret=Fernet(KEY).encrypt(b"s").decode(),
                kinds=None,
                created_at=now,
                deleted_at=None,
            )
            .returning(t.webhooks.c.id)
        ).scalar_one()
    delivery = queue_delivery(api, wallet("claims").address, hook)
    from api.accounts.crypto import Box

    with engine.begin() as conn:
        [item] = webhooks.due(conn, Box(KEY), time.time() + 1)
        assert webhooks.claim(conn, item, time.time() + 1, time.time() + 30)
        assert not webhooks.claim(conn, item, time.time() + 1, time.time() + 30)
        assert webhooks.due(conn, Box(KEY), time.time() + 1) == []
    outcome = webhooks.Outcome(item, time.time(), 500, None, 1.0)
    with engine.begin() as conn:
        assert webhooks.record(conn, outcome, 6, 0.2)
    with engine.begin() as conn:
        assert not webhooks.record(conn, outcome, 6, 0.2)
    with engine.connect() as conn:
        rows = conn.execute(select(t.attempts).where(t.attempts.c.delivery_id == delivery)).all()
    assert [r.attempt for r in rows] == [1]
    assert delivery_attempts(api, delivery) == 1
    engine.dispose()

"""``/v1/auth`` (sign in, session, sign out) and ``/v1/account`` (the signed-in address's own
second factor, watchlist, notification settings, webhooks, deliveries and notifications).

An address sees and changes only its own records: every query is filtered by the session's
address, and another address's webhook is answered as not found."""

from __future__ import annotations

import ipaddress
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import pyotp
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, update

from api import cursors
from api.accounts import schemas as s
from api.accounts import signin
from api.accounts.auth import (
    COOKIE,
    SignedIn,
    TotpHeader,
    check_second_factor,
    confirm_code,
)
from api.accounts.crypto import Box, new_token, token_hash
from api.notifications.kinds import KINDS
from api.notifications.produce import notifications_after
from api.problems import PROBLEM_RESPONSES, ProblemException, not_found
from api.routers.protocol import address_book
from api.schemas.types import Address
from tandem.config import Settings
from tandem.db import accounts as t
from tandem.db import models as m

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    401: PROBLEM_RESPONSES[400] | {"description": "No session, or a refused sign-in"},
    403: PROBLEM_RESPONSES[400] | {"description": "A second factor is needed or was refused"},
    409: PROBLEM_RESPONSES[400] | {"description": "Already done (a second factor is enrolled)"},
}

auth = APIRouter(prefix="/auth", tags=["accounts"], responses=AUTH_RESPONSES)
account = APIRouter(prefix="/account", tags=["accounts"], responses=AUTH_RESPONSES)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _box(request: Request) -> Box:
    box: Box = request.app.state.box
    return box


def expected(request: Request) -> signin.Expected:
    settings = _settings(request)
    api = settings.api
    host = request.headers.get("host", request.url.netloc)
    origin = (api.siwe_uri or f"{request.url.scheme}://{host}").rstrip("/")
    chain_id = api.siwe_chain_id or address_book(settings, settings.indexer.hub)[0]
    if chain_id is None:
        raise ProblemException(
            503,
            "chain-unknown",
            "Chain unknown",
            "The server knows no chain id to sign in on. Ask the operator to set "
            "TANDEM_API__SIWE_CHAIN_ID.",
        )
    return signin.Expected(domain=api.siwe_domain or host, origin=origin, chain_id=chain_id)


# --- sign-in and sessions


@auth.post("/nonce", response_model=s.Nonce, status_code=201)
def nonce(request: Request) -> s.Nonce:
    """A single-use nonce for an EIP-4361 message, with what the message must name: the
    domain, an URI on the origin, the chain id. The message may also set an expiration time."""
    want = expected(request)
    lifetime = _settings(request).api.nonce_seconds
    with _engine(request).begin() as conn:
        value, expires = signin.issue_nonce(conn, time.time(), lifetime)
    return s.Nonce(
        nonce=value,
        expires_at=expires,
        domain=want.domain,
        uri=want.origin,
        chain_id=want.chain_id,
    )


@auth.post("/sign-in", response_model=s.SignedInOut, status_code=201)
def sign_in(body: s.SignIn, request: Request, response: Response) -> s.SignedInOut:
    """Checks the signed message (domain, URI, chain id, issue and expiry times, signature, and
    the nonce: unknown, used or expired nonces are refused) and opens a session: a bearer token,
    also set as an HttpOnly, SameSite=Strict cookie for a browser dApp."""
    api = _settings(request).api
    now = time.time()
    token = new_token()
    with _engine(request).begin() as conn:
        address = signin.verify(
            conn, body.message, body.signature, expected(request), now, api.nonce_seconds
        )
        expires = now + api.session_seconds
        conn.execute(
            insert(t.sessions).values(
                token_hash=token_hash(token),
                address=address,
                created_at=now,
                expires_at=expires,
                revoked_at=None,
            )
        )
        enrolled = _enrolled(conn, address)
    response.set_cookie(
        COOKIE,
        token,
        max_age=api.session_seconds,
        httponly=True,
        secure=api.cookie_secure,
        samesite="strict",
        path="/v1",
    )
    return s.SignedInOut(address=address, expires_at=expires, second_factor=enrolled, token=token)


def _enrolled(conn: Connection, address: str) -> bool:
    row = conn.execute(
        select(t.second_factors.c.confirmed_at).where(t.second_factors.c.address == address)
    ).first()
    return row is not None and row.confirmed_at is not None


@auth.get("/session", response_model=s.SessionOut)
def session(me: SignedIn, request: Request) -> s.SessionOut:
    """The signed-in address and when its session ends."""
    with _engine(request).connect() as conn:
        enrolled = _enrolled(conn, me.address)
    return s.SessionOut(address=me.address, expires_at=me.expires_at, second_factor=enrolled)


@auth.delete("/session", status_code=204)
def sign_out(me: SignedIn, request: Request, response: Response) -> Response:
    """Signs out: the token no longer opens anything."""
    with _engine(request).begin() as conn:
        conn.execute(
            update(t.sessions)
            .where(t.sessions.c.token_hash == me.token_hash)
            .values(revoked_at=time.time())
        )
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/v1")
    return response


# --- second factor


@account.post("/totp", response_model=s.TotpEnrolment, status_code=201)
def enrol_totp(me: SignedIn, request: Request) -> s.TotpEnrolment:
    """Starts enrolling a TOTP authenticator (once per address): the seed is shown here only,
    and stored encrypted. Confirm it with a code (POST /v1/account/totp/confirm); until then,
    asking again replaces the seed."""
    box = _box(request)
    with _engine(request).begin() as conn:
        if _enrolled(conn, me.address):
            raise ProblemException(
                409,
                "second-factor-enrolled",
                "Second factor enrolled already",
                "This address has a confirmed authenticator, enrolled once for good.",
            )
        seed = pyotp.random_base32()
        sealed = box.seal(seed)
        conn.execute(delete(t.second_factors).where(t.second_factors.c.address == me.address))
        conn.execute(
            insert(t.second_factors).values(
                address=me.address, seed=sealed, confirmed_at=None, last_step=None
            )
        )
    uri = pyotp.TOTP(seed).provisioning_uri(name=me.address, issuer_name="Tandem")
    return s.TotpEnrolment(secret=seed, uri=uri)


@account.post("/totp/confirm", response_model=s.Enrolled)
def confirm_totp(body: s.TotpCode, me: SignedIn, request: Request) -> s.Enrolled:
    """Confirms the authenticator with its current code; from then on, webhooks need a code."""
    box = _box(request)
    now = time.time()
    with _engine(request).begin() as conn:
        row = conn.execute(
            select(t.second_factors).where(t.second_factors.c.address == me.address)
        ).first()
        if row is None:
            raise not_found("No authenticator is being enrolled", "POST /v1/account/totp first.")
        if row.confirmed_at is not None:
            return s.Enrolled(enrolled=True)
        step = confirm_code(box.open(row.seed), body.code, now)
        if step is None:
            raise ProblemException(
                403,
                "second-factor-refused",
                "Second factor refused",
                "The code does not match the seed. Check the authenticator's clock and try "
                "its current code.",
            )
        conn.execute(
            update(t.second_factors)
            .where(t.second_factors.c.address == me.address)
            .values(confirmed_at=now, last_step=step)
        )
    return s.Enrolled(enrolled=True)


# --- watchlist


@account.get("/watchlist", response_model=s.Watchlist)
def get_watchlist(me: SignedIn, request: Request) -> s.Watchlist:
    """The masters this address follows without capital."""
    with _engine(request).connect() as conn:
        found = conn.execute(
            select(t.watchlist.c.master, t.watchlist.c.created_at)
            .where(t.watchlist.c.address == me.address)
            .order_by(t.watchlist.c.created_at, t.watchlist.c.master)
        ).all()
    return s.Watchlist(items=[s.WatchItem(master=r.master, since=r.created_at) for r in found])


@account.put("/watchlist/{master}", response_model=s.WatchItem)
def watch(master: Address, me: SignedIn, request: Request) -> s.WatchItem:
    """Follows a master without capital: its trades and suspensions are notified. Idempotent."""
    with _engine(request).begin() as conn:
        if conn.execute(select(m.Vault.vault).where(m.Vault.master == master)).first() is None:
            raise not_found(f"{master} has no vault", "Check the address of the master.")
        row = conn.execute(
            select(t.watchlist.c.created_at).where(
                t.watchlist.c.address == me.address, t.watchlist.c.master == master
            )
        ).first()
        if row is not None:
            return s.WatchItem(master=master, since=row.created_at)
        now = time.time()
        conn.execute(insert(t.watchlist).values(address=me.address, master=master, created_at=now))
    return s.WatchItem(master=master, since=now)


@account.delete("/watchlist/{master}", status_code=204)
def unwatch(master: Address, me: SignedIn, request: Request) -> Response:
    with _engine(request).begin() as conn:
        gone = conn.execute(
            delete(t.watchlist).where(
                t.watchlist.c.address == me.address, t.watchlist.c.master == master
            )
        )
    if gone.rowcount == 0:
        raise not_found(f"{master} is not on your watchlist", "GET /v1/account/watchlist.")
    return Response(status_code=204)


# --- notification settings


@account.get("/notification-settings", response_model=s.Preferences)
def get_preferences(me: SignedIn, request: Request) -> s.Preferences:
    """The kinds of notification wanted and the distances that raise ``limit.near``."""
    with _engine(request).connect() as conn:
        row = conn.execute(
            select(t.preferences).where(t.preferences.c.address == me.address)
        ).first()
    if row is None:
        return s.Preferences()
    return s.Preferences(
        kinds=list(row.kinds),
        stop_loss_distance_bps=row.stop_loss_distance_bps,
        drawdown_distance_bps=row.drawdown_distance_bps,
    )


@account.put("/notification-settings", response_model=s.Preferences)
def put_preferences(body: s.Preferences, me: SignedIn, request: Request) -> s.Preferences:
    values = {
        "kinds": body.kinds,
        "stop_loss_distance_bps": body.stop_loss_distance_bps,
        "drawdown_distance_bps": body.drawdown_distance_bps,
        "updated_at": time.time(),
    }
    with _engine(request).begin() as conn:
        changed = conn.execute(
            update(t.preferences).where(t.preferences.c.address == me.address).values(**values)
        )
        if changed.rowcount == 0:
            conn.execute(insert(t.preferences).values(address=me.address, **values))
    return body


# --- webhooks


def _webhook_out(row: Any) -> s.Webhook:
    return s.Webhook(id=row.id, url=row.url, kinds=row.kinds, created_at=row.created_at)


def _check_target(url: str, allow_private: bool) -> None:
    """Refuses webhooks to loopback, private and link-local addresses unless allowed."""
    if allow_private:
        return
    host = (urlsplit(url).hostname or "").strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        private = host == "localhost" or host.endswith((".localhost", ".local", ".internal"))
    else:
        private = not ip.is_global
    if private:
        raise ProblemException(
            422,
            "invalid-webhook",
            "Webhook target not allowed",
            f"{host} is a loopback, private or link-local host. Give a public http(s) URL.",
        )


@account.get("/webhooks", response_model=s.Webhooks)
def list_webhooks(me: SignedIn, request: Request) -> s.Webhooks:
    """This address's webhooks (their secrets are never shown again)."""
    with _engine(request).connect() as conn:
        found = conn.execute(
            select(t.webhooks)
            .where(t.webhooks.c.address == me.address, t.webhooks.c.deleted_at.is_(None))
            .order_by(t.webhooks.c.id)
        ).all()
    return s.Webhooks(items=[_webhook_out(r) for r in found])


@account.post("/webhooks", response_model=s.WebhookCreated, status_code=201)
def create_webhook(
    body: s.WebhookIn, me: SignedIn, request: Request, totp: TotpHeader = None
) -> s.WebhookCreated:
    """Registers a webhook (needs the Tandem-TOTP header). Each notification is POSTed as JSON
    with ``Tandem-Delivery`` (the same id on every retry: drop what you saw),
    ``Tandem-Timestamp`` (Unix seconds) and ``Tandem-Signature: v1=<hex HMAC-SHA256 of
    "<timestamp>.<body>" with the secret>``. The secret is shown here only."""
    settings = _settings(request).api
    url = str(body.url)
    _check_target(url, settings.webhook_private_hosts)
    box = _box(request)
    secret = new_token()
    now = time.time()
    with _engine(request).begin() as conn:
        check_second_factor(conn, box, me.address, totp, now)
        created = conn.execute(
            insert(t.webhooks)
            .values(
                address=me.address,
                url=url,
                secret=box.seal(secret),
                kinds=body.kinds,
                created_at=now,
                deleted_at=None,
            )
            .returning(t.webhooks.c.id)
        ).scalar_one()
    return s.WebhookCreated(id=created, url=url, kinds=body.kinds, created_at=now, secret=secret)


def _own_webhook(conn: Connection, me: SignedIn, webhook: int) -> Any:
    row = conn.execute(
        select(t.webhooks).where(
            t.webhooks.c.id == webhook,
            t.webhooks.c.address == me.address,
            t.webhooks.c.deleted_at.is_(None),
        )
    ).first()
    if row is None:
        raise not_found(f"You have no webhook {webhook}", "GET /v1/account/webhooks lists yours.")
    return row


@account.delete("/webhooks/{webhook}", status_code=204)
def delete_webhook(
    webhook: int, me: SignedIn, request: Request, totp: TotpHeader = None
) -> Response:
    """Removes a webhook (needs the Tandem-TOTP header); its pending deliveries stop."""
    now = time.time()
    with _engine(request).begin() as conn:
        _own_webhook(conn, me, webhook)
        check_second_factor(conn, _box(request), me.address, totp, now)
        conn.execute(update(t.webhooks).where(t.webhooks.c.id == webhook).values(deleted_at=now))
        conn.execute(
            update(t.deliveries)
            .where(t.deliveries.c.webhook_id == webhook, t.deliveries.c.status == "pending")
            .values(status="failed", next_attempt_at=None)
        )
    return Response(status_code=204)


@account.get("/webhooks/{webhook}/deliveries", response_model=s.Deliveries)
def deliveries(
    webhook: int,
    me: SignedIn,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> s.Deliveries:
    """The delivery log, newest first: each delivery's id (the ``Tandem-Delivery`` header),
    status and every attempt (time, HTTP status or error, duration)."""
    d = t.deliveries
    query = ["deliveries", webhook]
    with _engine(request).connect() as conn:
        _own_webhook(conn, me, webhook)
        where = [d.c.webhook_id == webhook]
        if cursor is not None:
            key = cursors.decode(cursor, query)
            if len(key) != 2 or not isinstance(key[1], str):
                raise cursors.invalid_key()
            created, last = float(key[0]), key[1]
            where.append(
                or_(d.c.created_at < created, and_(d.c.created_at == created, d.c.id < last))
            )
        found = conn.execute(
            select(d, t.notifications.c.kind)
            .join(t.notifications, t.notifications.c.id == d.c.notification_id)
            .where(*where)
            .order_by(d.c.created_at.desc(), d.c.id.desc())
            .limit(limit + 1)
        ).all()
        ids = [r.id for r in found[:limit]]
        tried: dict[str, list[s.Attempt]] = {i: [] for i in ids}
        if ids:
            for a in conn.execute(
                select(t.attempts)
                .where(t.attempts.c.delivery_id.in_(ids))
                .order_by(t.attempts.c.delivery_id, t.attempts.c.attempt)
            ):
                tried[a.delivery_id].append(
                    s.Attempt(
                        attempt=a.attempt,
                        at=a.at,
                        status_code=a.status_code,
                        error=a.error,
                        duration_ms=a.duration_ms,
                    )
                )
    items = [
        s.Delivery(
            id=r.id,
            notification_id=r.notification_id,
            kind=r.kind,
            status=r.status,
            attempts=tried[r.id],
            next_attempt_at=r.next_attempt_at,
            created_at=r.created_at,
            delivered_at=r.delivered_at,
        )
        for r in found[:limit]
    ]
    more = len(found) > limit
    next_cursor = cursors.encode(query, [items[-1].created_at, items[-1].id]) if more else None
    return s.Deliveries(items=items, next_cursor=next_cursor)


# --- notifications


@account.get("/notifications", response_model=s.Notifications)
def notifications(
    me: SignedIn,
    request: Request,
    after: Annotated[int, Query(ge=0, description="the last id seen (0: from the first)")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    kind: Annotated[str | None, Query(description=f"one of {', '.join(KINDS)}")] = None,
) -> s.Notifications:
    """This address's notifications with an id above ``after``, oldest first."""
    if kind is not None and kind not in KINDS:
        raise ProblemException(
            400, "invalid-kind", "Unknown kind", f"kind must be one of {', '.join(KINDS)}."
        )
    with _engine(request).connect() as conn:
        found = notifications_after(conn, me.address, after, limit, kind=kind)
    items = [s.Notification.model_validate(n, from_attributes=True) for n in found]
    return s.Notifications(items=items, last_id=items[-1].id if items else None)

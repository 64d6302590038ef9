"""``/v1/auth`` (sign in, session, sign out) and ``/v1/account`` (the signed-in address's own
second factor, watchlist, notification settings, webhooks, deliveries and notifications).

An address sees and changes only its own records: every query is filtered by the session's
address, and another address's webhook is answered as not found."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import pyotp
from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, update

from api import cursors
from api.accounts import schemas as s
from api.accounts import signin
from api.accounts.auth import (
    COOKIE,
    Session,
    SignedIn,
    TotpHeader,
    check_second_factor,
    confirm_code,
)
from api.accounts.crypto import Box, new_token, token_hash
from api.notifications.kinds import KINDS
from api.notifications.produce import notifications_after
from api.notifications.targets import refused_host
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
    409: PROBLEM_RESPONSES[400]
    | {"description": "Already done (a second factor is enrolled), or a limit reached"},
    413: PROBLEM_RESPONSES[400] | {"description": "The request's body is too large"},
    429: PROBLEM_RESPONSES[400]
    | {"description": "Too many nonces, or wrong TOTP codes: see Retry-After"},
}

BIGINT = 2**63 - 1  # the largest id a column holds
WebhookId = Annotated[int, Path(ge=1, le=BIGINT, description="the webhook's id")]

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
    """What a signed message must name: the settings' domains and origins (never the request's
    Host, which whoever relays the request chooses) and chain id."""
    settings = _settings(request)
    try:
        origins = tuple(settings.api.sign_in_origins())
    except ValueError:
        raise ProblemException(
            503,
            "sign-in-unconfigured",
            "Sign-in not configured",
            "The server does not know the domain sign-in messages are for. Ask the operator "
            "to set TANDEM_API__SIWE_DOMAIN and TANDEM_API__SIWE_URI.",
        ) from None
    chain_id = settings.api.siwe_chain_id or address_book(settings, settings.indexer.hub)[0]
    if chain_id is None:
        raise ProblemException(
            503,
            "chain-unknown",
            "Chain unknown",
            "The server knows no chain id to sign in on. Ask the operator to set "
            "TANDEM_API__SIWE_CHAIN_ID.",
        )
    return signin.Expected(origins=origins, chain_id=chain_id)


# --- sign-in and sessions


@auth.post("/nonce", response_model=s.Nonce, status_code=201)
def nonce(request: Request) -> s.Nonce:
    """A single-use nonce for an EIP-4361 message, with what the message must name: the
    domain, an URI on the origin, the chain id. The message may also set an expiration time.
    A client may hold ``api.nonce_max_pending`` unused nonces at once (then 429)."""
    want = expected(request)
    api = _settings(request).api
    client = signin.client_key(request.client.host if request.client else None)
    with _engine(request).begin() as conn:
        value, expires = signin.issue_nonce(
            conn, time.time(), api.nonce_seconds, client, api.nonce_max_pending
        )
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


def _revoke_sessions(conn: Connection, address: str, now: float, keep: str | None) -> int:
    """Signs out every session of ``address`` (but ``keep``, a token hash); how many."""
    s_ = t.sessions
    where = [s_.c.address == address, s_.c.revoked_at.is_(None)]
    if keep is not None:
        where.append(s_.c.token_hash != keep)
    return conn.execute(update(s_).where(*where).values(revoked_at=now)).rowcount


@auth.post("/sign-out-everywhere", status_code=204)
def sign_out_everywhere(me: SignedIn, request: Request) -> Response:
    """Signs out every session of the address, this one included (a token that may have been
    stolen no longer opens anything)."""
    with _engine(request).begin() as conn:
        _revoke_sessions(conn, me.address, time.time(), keep=None)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/v1")
    return response


# --- second factor


def _signed_action(
    conn: Connection, request: Request, me: Session, body: s.SignedMessage | None, action: str
) -> None:
    """Refuses unless ``body`` is a message the session's address signed just now over a
    fresh nonce, stating ``action``: a stolen session cannot do this, the wallet can."""
    statement = signin.ACTIONS[action]
    if body is None:
        raise ProblemException(
            403,
            "signature-required",
            "Fresh signature required",
            "This action needs the wallet's signature: ask for a nonce (POST /v1/auth/nonce), "
            f"sign an EIP-4361 message with the statement {statement!r} and send "
            "{message, signature}.",
        )
    api = _settings(request).api
    signer = signin.verify(
        conn,
        body.message,
        body.signature,
        expected(request),
        time.time(),
        api.nonce_seconds,
        action=action,
    )
    if signer != me.address:
        raise ProblemException(
            403,
            "signature-refused",
            "Signed message refused",
            f"The message was signed by {signer}, not by the signed-in address {me.address}.",
        )


@account.post("/totp", response_model=s.TotpEnrolment, status_code=201)
def enrol_totp(
    me: SignedIn, request: Request, body: s.SignedMessage | None = None
) -> s.TotpEnrolment:
    """Starts enrolling a TOTP authenticator (once per address), with a message the address
    signed just now stating the action (``ACTIONS["enrol-totp"]``, see the problem's detail):
    a session alone cannot enrol. Every other session of the address is signed out. The seed
    is shown here only, and stored encrypted. Confirm it with a code (POST
    /v1/account/totp/confirm); until then, asking again (signed again) replaces the seed."""
    box = _box(request)
    with _engine(request).begin() as conn:
        if _enrolled(conn, me.address):
            raise ProblemException(
                409,
                "second-factor-enrolled",
                "Second factor enrolled already",
                "This address has a confirmed authenticator. To replace it, remove it first "
                "(POST /v1/account/totp/reset with a signed message).",
            )
        _signed_action(conn, request, me, body, "enrol-totp")
        seed = pyotp.random_base32()
        sealed = box.seal(seed)
        conn.execute(delete(t.second_factors).where(t.second_factors.c.address == me.address))
        conn.execute(
            insert(t.second_factors).values(
                address=me.address, seed=sealed, confirmed_at=None, last_step=None, failures=0
            )
        )
        _revoke_sessions(conn, me.address, time.time(), keep=me.token_hash)
    uri = pyotp.TOTP(seed).provisioning_uri(name=me.address, issuer_name="Tandem")
    return s.TotpEnrolment(secret=seed, uri=uri)


@account.post("/totp/reset", response_model=s.Enrolled)
def reset_totp(body: s.SignedMessage, me: SignedIn, request: Request) -> s.Enrolled:
    """Removes the address's authenticator (a lost phone), with a message the address signed
    just now stating the action (``ACTIONS["reset-totp"]``); every other session is signed
    out. Enrol again afterwards (POST /v1/account/totp)."""
    with _engine(request).begin() as conn:
        _signed_action(conn, request, me, body, "reset-totp")
        conn.execute(delete(t.second_factors).where(t.second_factors.c.address == me.address))
        _revoke_sessions(conn, me.address, time.time(), keep=me.token_hash)
    return s.Enrolled(enrolled=False)


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
    """Refuses webhooks to loopback, private and link-local hosts unless allowed (what the
    names resolve to is checked again at each delivery)."""
    if allow_private:
        return
    why = refused_host(urlsplit(url).hostname or "")
    if why is not None:
        raise ProblemException(
            422,
            "invalid-webhook",
            "Webhook target not allowed",
            f"{why}: a webhook goes to a public host. Give a public http(s) URL.",
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
    engine = _engine(request)
    _check_webhook_room(engine, me.address, settings.webhooks_per_address)
    check_second_factor(engine, box, me.address, totp, now, settings)
    with engine.begin() as conn:
        _check_webhook_room(conn, me.address, settings.webhooks_per_address)
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


def _check_webhook_room(db: Engine | Connection, address: str, most: int) -> None:
    w = t.webhooks
    query = select(func.count()).where(w.c.address == address, w.c.deleted_at.is_(None))
    if isinstance(db, Engine):
        with db.connect() as conn:
            have = int(conn.execute(query).scalar_one())
    else:
        have = int(db.execute(query).scalar_one())
    if have >= most:
        raise ProblemException(
            409,
            "too-many-webhooks",
            "Too many webhooks",
            f"This address has {have} webhooks, the most it may have. Delete one first "
            "(DELETE /v1/account/webhooks/{id}).",
        )


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
    webhook: WebhookId, me: SignedIn, request: Request, totp: TotpHeader = None
) -> Response:
    """Removes a webhook (needs the Tandem-TOTP header); its pending deliveries stop."""
    now = time.time()
    engine = _engine(request)
    with engine.connect() as conn:
        _own_webhook(conn, me, webhook)
    check_second_factor(engine, _box(request), me.address, totp, now, _settings(request).api)
    with engine.begin() as conn:
        conn.execute(update(t.webhooks).where(t.webhooks.c.id == webhook).values(deleted_at=now))
        conn.execute(
            update(t.deliveries)
            .where(t.deliveries.c.webhook_id == webhook, t.deliveries.c.status == "pending")
            .values(status="failed", next_attempt_at=None)
        )
    return Response(status_code=204)


@account.get("/webhooks/{webhook}/deliveries", response_model=s.Deliveries)
def deliveries(
    webhook: WebhookId,
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
            if (
                len(key) != 2
                or isinstance(key[0], bool)
                or not isinstance(key[0], int | float)
                or not isinstance(key[1], str)
                or not math.isfinite(key[0])
            ):
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
    after: Annotated[
        int, Query(ge=0, le=BIGINT, description="the last id seen (0: from the first)")
    ] = 0,
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

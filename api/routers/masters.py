"""Masters: the rankings (``GET /v1/masters``), a master's profile and their trades."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import Connection, Row, and_, or_, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State

from api import cursors, series
from api.answers import AnswerCache, Flights, OneAtATime
from api.database import Read, Snapshot, read_final
from api.problems import PROBLEM_RESPONSES, ProblemException, not_found
from api.schemas import resources as out
from api.schemas.queries import MastersQuery, TradesQuery
from api.schemas.types import Address
from indexer import inputs, reading
from indexer import rankings as r
from indexer.metrics import RankingRules
from tandem.db import models as m

router = APIRouter(prefix="/masters", tags=["masters"], responses=PROBLEM_RESPONSES)


@router.get("", response_model=out.MasterPage)
async def masters(request: Request, query: Annotated[MastersQuery, Query()]) -> Response:
    """The masters of one window, sorted by one metric (best first by default) and filtered,
    a page at a time: pass each page's ``next_cursor`` to get the next."""
    state = request.app.state
    # By default the best first: descending where higher is better, ascending where lower is.
    order = query.order or ("desc" if r.SORTABLE[query.sort] else "asc")
    # The same page whether the default order was named or not.
    asked = (order, *query.model_dump(exclude={"order"}).values())
    # A page kept while the final block was read moments ago is answered here, on the event
    # loop: no worker thread, no database. Otherwise one trip to a worker thread for the whole
    # answer (a dependency would cost two more), shared, where pages are kept, by every request
    # for the same page meanwhile: one reads it, the others wait on the loop instead of reading
    # it again in threads of their own.
    cache: AnswerCache = state.rankings_cache
    body = cache.recent(asked)
    if body is None and cache.trust > 0 and cache.holds(asked):
        # Kept, but the block read last is no longer trusted (a refresher fell behind on a busy
        # machine, or there is none): one read of the block for every such request meanwhile.
        check: OneAtATime = state.final_block_check
        with contextlib.suppress(Exception):  # if it fails, this request's own read says why
            await check()
        body = cache.recent(asked)
    if body is not None:
        state.metrics.rankings_cache.labels("hit").inc()
    elif cache.entries == 0:
        body = await run_in_threadpool(cached_page, state, query, order, asked)
    else:
        flights: Flights = state.rankings_flights
        body = await flights.join(
            asked, lambda: run_in_threadpool(cached_page, state, query, order, asked)
        )
    return Response(body, media_type="application/json")


def cached_page(state: State, query: MastersQuery, order: str, asked: tuple[Any, ...]) -> bytes:
    """The page's JSON: kept from an identical query at the same final block, or read now."""
    cache: AnswerCache = state.rankings_cache
    counted = state.metrics.rankings_cache
    read_at = cache.clock()
    with read_final(state.engine, state.settings.indexer.finality_depth) as read:
        body = cache.get(read.block, asked, read_at)
        if body is not None:
            counted.labels("hit").inc()
            return body
        counted.labels("miss").inc()
        body = page_of(read, query, order).model_dump_json().encode()
    cache.put(read.block, asked, body, source=(query, order), read_at=read_at)
    return body


def confirm_final_block(state: State) -> None:
    """Reads the final block: the one kept pages are of is trusted anew if it has not moved."""
    cache: AnswerCache = state.rankings_cache
    read_at = cache.clock()
    with read_final(state.engine, state.settings.indexer.finality_depth) as read:
        cache.confirm(read.block, read_at)


def refresh_kept_pages(state: State) -> int:
    """Reads the final block and, in the same transaction, remakes the kept pages asked lately
    that are of an older block or in the last quarter of their lifetime: run by the refresher,
    off the requests' path, so that they find every page they ask again fresh. How many it
    remade. Lately is within ten lifetimes (10 s by default): a page asked at least that often,
    a next page by cursor too, is never read by a request; one asked once is left to run out."""
    cache: AnswerCache = state.rankings_cache
    lifetime = cache.seconds
    read_at = cache.clock()
    try:
        with read_final(state.engine, state.settings.indexer.finality_depth) as read:
            # Trusted at once if it has not moved: requests need not wait for the pages below.
            cache.confirm(read.block, read_at)
            remade = {
                asked: page_of(read, query, order).model_dump_json().encode()
                for asked, (query, order) in cache.due(read.block, 0.75 * lifetime, 10 * lifetime)
            }
    except ProblemException:
        return 0  # nothing indexed yet: requests are told so
    cache.refreshed(read.block, read_at, remade)
    state.metrics.rankings_cache.labels("refresh").inc(len(remade))
    return len(remade)


def page_of(read: Snapshot, query: MastersQuery, order: str) -> out.MasterPage:
    """One page of the rankings, read at the snapshot's final block."""
    best_first = (order == "desc") == r.SORTABLE[query.sort]
    made_for = [query.sort, order, query.window.value]
    after = None
    if query.cursor is not None:
        key = cursors.decode(query.cursor, made_for)
        if not (len(key) == 2 and _is_number(key[0]) and isinstance(key[1], str)):
            raise cursors.invalid_key()
        after = (key[0], key[1])
    rules = None
    if query.min_days is not None:
        rules = RankingRules(min_history_days=query.min_days, min_trades=0, min_equity_usd=0)
    rows = r.top(
        read.conn,
        query.sort,
        query.window,
        query.limit + 1,  # one more than asked: whether a next page exists
        rules=rules,
        max_drawdown=query.max_drawdown,
        max_risk_score=query.max_risk_score,
        include_closed=query.include_closed,
        include_unranked=not query.ranked_only,
        best_first=best_first,
        after=after,
    )
    page, more = rows[: query.limit], len(rows) > query.limit
    next_cursor = None
    if more:
        last = page[-1]
        next_cursor = cursors.encode(made_for, [getattr(last, query.sort), last.master])
    return out.MasterPage(
        block=read.block,
        sort=query.sort,
        order=order,
        window=query.window.value,
        items=[out.MasterMetrics.model_validate(row) for row in page],
        next_cursor=next_cursor,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def vault_of(conn: Connection, master: str, block: int) -> Row[Any]:
    vault = conn.execute(
        select(m.Vault)
        .where(m.Vault.master == master, m.Vault.block_number <= block)
        .order_by(m.Vault.block_number, m.Vault.log_index)
        .limit(1)
    ).first()
    if vault is None:
        raise not_found(
            f"{master} has no vault up to block {block}",
            "Check the address (GET /v1/masters lists the masters), or wait until the "
            "vault's creation is final.",
        )
    return vault


@router.get("/{master}", response_model=out.MasterProfile)
def profile(master: Address, read: Read) -> out.MasterProfile:
    """Every metric per window, the equity curve and drawdowns, monthly returns, AUM, followers
    and what became of them, and the fee terms."""
    conn, block = read.conn, read.block
    vault = vault_of(conn, master, block)
    points = reading.vault_points(conn, vault.vault, up_to=block)
    indexes = [p["master_index"] for p in points]
    curve = [
        out.CurvePoint.model_validate({**p, "drawdown": d})
        for p, d in zip(points, series.drawdowns(indexes), strict=True)
    ]
    monthly = series.monthly_returns(
        [(p["timestamp"], p["master_index"]) for p in points if p["master_index"] is not None]
    )
    valued = [p for p in points if p["master_aum"] is not None and p["pool_aum"] is not None]
    latest = valued[-1] if valued else None
    outcomes = inputs.master_inputs(conn, vault.vault, master, block).followers
    return out.MasterProfile(
        block=block,
        master=master,
        vault=vault.vault,
        created_block=vault.block_number,
        metrics=[out.MasterMetrics.model_validate(row) for row in r.history(conn, master)],
        aum=out.Aum(
            master_usd=latest["master_aum"] if latest else None,
            pool_usd=latest["pool_aum"] if latest else None,
            total_usd=latest["master_aum"] + latest["pool_aum"] if latest else None,
        ),
        followers_now=sum(1 for f in outcomes if f.left_at is None),
        followers_ever=len(outcomes),
        followers=[
            out.FollowerOutcome(
                follower=f.follower,
                invested_usd=f.invested_usd,
                current_value_usd=f.current_value_usd,
                withdrawn_usd=f.withdrawn_usd,
                fees_paid_usd=f.fees_paid_usd,
                gifted_usd=f.gifted_usd,
                pnl_usd=f.pnl_usd,
                joined_at=f.joined_at,
                left_at=f.left_at,
            )
            for f in outcomes
        ],
        fees=fee_terms(conn, vault.vault, block),
        equity_curve=curve,
        monthly_returns=[out.MonthlyReturn(month=month, roi=roi) for month, roi in monthly],
    )


def fee_terms(conn: Connection, vault: str, block: int) -> out.FeeTerms:
    """The fee in force (the latest ``FeeSet``) and a raise scheduled after it, if any."""
    changes = conn.execute(
        select(m.FeeChange)
        .where(m.FeeChange.vault == vault, m.FeeChange.block_number <= block)
        .order_by(m.FeeChange.block_number, m.FeeChange.log_index)
    ).all()
    fee_bps = scheduled = None
    for change in changes:
        if change.effective_at is None:
            fee_bps, scheduled = change.fee_bps, None
        else:
            scheduled = change
    share = conn.execute(
        select(m.HubParams.protocol_fee_share_bps)
        .where(m.HubParams.block_number <= block)
        .order_by(m.HubParams.block_number.desc(), m.HubParams.log_index.desc())
        .limit(1)
    ).scalar()
    return out.FeeTerms(
        fee_bps=fee_bps,
        scheduled_fee_bps=scheduled.fee_bps if scheduled else None,
        scheduled_at=scheduled.effective_at if scheduled else None,
        protocol_fee_share_bps=share,
    )


@router.get("/{master}/trades", response_model=out.TradePage)
def trades(master: Address, query: Annotated[TradesQuery, Query()], read: Read) -> out.TradePage:
    """The master's trades, both books, a page at a time by (block, log index)."""
    conn, block = read.conn, read.block
    vault = vault_of(conn, master, block)
    t = m.Trade
    made_for = ["trades", master, query.order]
    statement = select(t).where(t.vault == vault.vault, t.block_number <= block)
    if query.cursor is not None:
        key = cursors.decode(query.cursor, made_for)
        if not (len(key) == 2 and all(isinstance(k, int) and k >= 0 for k in key)):
            raise cursors.invalid_key()
        at, index = key
        if query.order == "desc":
            past = or_(t.block_number < at, and_(t.block_number == at, t.log_index < index))
        else:
            past = or_(t.block_number > at, and_(t.block_number == at, t.log_index > index))
        statement = statement.where(past)
    if query.order == "desc":
        statement = statement.order_by(t.block_number.desc(), t.log_index.desc())
    else:
        statement = statement.order_by(t.block_number, t.log_index)
    rows = list(conn.execute(statement.limit(query.limit + 1)).all())
    page = rows[: query.limit]
    next_cursor = None
    if len(rows) > query.limit:
        next_cursor = cursors.encode(made_for, [page[-1].block_number, page[-1].log_index])
    return out.TradePage(
        block=block,
        items=[out.Trade.model_validate(row) for row in page],
        next_cursor=next_cursor,
    )

"""``GET /v1/vaults/{vault}``: a vault's state at the final block."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter
from sqlalchemy import Connection, select

from api.database import Read
from api.problems import PROBLEM_RESPONSES, not_found
from api.routers.masters import fee_terms
from api.schemas import resources as out
from api.schemas.types import Address
from indexer import inputs, reading
from tandem.db import models as m

ONE = 10**18

router = APIRouter(prefix="/vaults", tags=["vaults"], responses=PROBLEM_RESPONSES)


@router.get("/{vault}", response_model=out.VaultState)
def vault_state(vault: Address, read: Read) -> out.VaultState:
    """The vault's master and delegate, its latest point (both books' value, share price,
    followers), the pool's composition next to the master's (each token's amounts, value at
    oracle prices and weight in both books), the master's book by token, every holder's shares,
    the pending mirror, the suspension state and the fee terms."""
    conn, block = read.conn, read.block
    row = conn.execute(
        select(m.Vault).where(m.Vault.vault == vault, m.Vault.block_number <= block)
    ).first()
    if row is None:
        raise not_found(
            f"no vault at {vault} up to block {block}",
            "Check the address (each master's profile names their vault), or wait until the "
            "vault's creation is final.",
        )
    points = reading.vault_points(conn, vault, up_to=block)
    delegate = conn.execute(
        select(m.Delegate.delegate)
        .where(m.Delegate.vault == vault, m.Delegate.block_number <= block)
        .order_by(m.Delegate.block_number.desc(), m.Delegate.log_index.desc())
        .limit(1)
    ).scalar()
    suspension = conn.execute(
        select(m.Suspension)
        .where(m.Suspension.vault == vault, m.Suspension.block_number <= block)
        .order_by(m.Suspension.block_number.desc(), m.Suspension.log_index.desc())
        .limit(1)
    ).first()
    return out.VaultState(
        block=block,
        vault=vault,
        master=row.master,
        created_block=row.block_number,
        delegate=delegate,
        point=out.Point.model_validate(points[-1]) if points else None,
        composition=composition(conn, vault, points[-1]) if points else None,
        master_book=master_book(conn, vault, block),
        shares=reading.share_balances(conn, vault, up_to=block),
        pending_mirror=pending_mirror(conn, vault, block),
        suspension=out.Suspension.model_validate(suspension) if suspension else None,
        fees=fee_terms(conn, vault, block),
    )


def composition(conn: Connection, vault: str, point: Any) -> out.Composition | None:
    """Both books at ``point``, each amount at the oracle price the vault valued it at in that
    block, rounded down as the vault rounds: the values add up to the point's ``master_aum``
    and ``pool_aum``. None when the indexer could not read the vault then (otherwise the base
    asset has a row at least)."""
    block = point.block_number
    books = conn.execute(
        select(m.VaultBook)
        .where(m.VaultBook.vault == vault, m.VaultBook.block_number == block)
        .order_by(m.VaultBook.token)
    ).all()
    if not books:
        return None
    base = inputs.base_asset(conn, block)
    values = [
        (book.master_amount * book.price // ONE, book.pool_amount * book.price // ONE)
        for book in books
    ]
    master_total = sum(v[0] for v in values)
    pool_total = sum(v[1] for v in values)
    entries = [
        out.BookEntry(
            token=book.token,
            master_amount=book.master_amount,
            pool_amount=book.pool_amount,
            price=book.price,
            master_value_usd=master_value,
            pool_value_usd=pool_value,
            master_weight=master_value / master_total if master_total else None,
            pool_weight=pool_value / pool_total if pool_total else None,
        )
        for book, (master_value, pool_value) in zip(books, values, strict=True)
    ]
    entries.sort(key=lambda e: (e.token != base, -e.pool_value_usd, e.token))
    return out.Composition(
        block_number=block,
        master_value_usd=master_total,
        pool_value_usd=pool_total,
        tokens=entries,
    )


def master_book(conn: Connection, vault: str, block: int) -> list[out.Holding]:
    """The master's book: only the master's deposits, withdrawals and trades move it, and each
    event says by how much, so the sums are exact. (The pool's book is not: an allocation's
    entry swaps report no amounts.)"""
    book: dict[str, int] = defaultdict(int)
    flows = select(m.MasterFlow).where(
        m.MasterFlow.vault == vault, m.MasterFlow.block_number <= block
    )
    for flow in conn.execute(flows).all():
        book[flow.token] += flow.amount if flow.kind == "deposit" else -flow.amount
    trades = select(m.Trade).where(m.Trade.vault == vault, m.Trade.block_number <= block)
    for trade in conn.execute(trades).all():
        book[trade.token_in] -= trade.master_in
        book[trade.token_out] += trade.master_out
    return [out.Holding(token=t, amount=a) for t, a in sorted(book.items()) if a]


def pending_mirror(conn: Connection, vault: str, block: int) -> out.Mirror | None:
    """The vault's latest mirror while it may still be executed: not dropped, something left to
    buy, before its deadline (at the time of ``block``)."""
    rows = list(
        conn.execute(
            select(m.MirrorEvent)
            .where(m.MirrorEvent.vault == vault, m.MirrorEvent.block_number <= block)
            .order_by(m.MirrorEvent.block_number, m.MirrorEvent.log_index)
        ).all()
    )
    if not rows:
        return None
    last = rows[-1]
    recorded = next(
        (x for x in reversed(rows) if x.mirror_id == last.mirror_id and x.kind == "recorded"), None
    )
    remaining = last.amount_in if last.kind == "recorded" else last.remaining
    now = inputs.as_of(conn, block)
    deadline = recorded.deadline if recorded else None
    if last.kind == "dropped" or not remaining or (deadline is not None and now and now > deadline):
        return None
    return out.Mirror(
        mirror_id=last.mirror_id,
        token_in=last.token_in,
        token_out=last.token_out,
        remaining=remaining,
        deadline=deadline,
    )

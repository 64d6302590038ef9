"""Reading what the indexer stored, for the rankings and the API: what is final, share balances
and time series up to a block, exact (uint256 columns are text on SQLite: sums are made here, in
Python, never in SQL)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, select

from indexer.handler import ONE, SHARES_PER_VALUE
from tandem.db import models as m


def cursor_block(conn: Connection) -> int | None:
    """The last block indexed (None before the first)."""
    table = m.indexer_cursor.cursor
    block = conn.execute(select(table.c.block_number)).scalar()
    return None if block is None else int(block)


def final_block(conn: Connection, finality_depth: int) -> int | None:
    """The newest block whose rows a reorganisation of at most ``finality_depth`` blocks cannot
    change: rows above it may still be rolled back and replaced."""
    cursor = cursor_block(conn)
    return None if cursor is None else cursor - finality_depth


def share_balances(conn: Connection, vault: str, *, up_to: int | None = None) -> dict[str, int]:
    """Each holder's pool shares in ``vault`` at the end of block ``up_to`` (default: the
    cursor), holders with none left out."""
    query = select(m.ShareMove.holder, m.ShareMove.delta).where(m.ShareMove.vault == vault)
    if up_to is not None:
        query = query.where(m.ShareMove.block_number <= up_to)
    balances: dict[str, int] = defaultdict(int)
    for holder, delta in conn.execute(query):
        balances[holder] += delta
    return {holder: shares for holder, shares in balances.items() if shares}


def vault_points(conn: Connection, vault: str, *, up_to: int | None = None) -> list[Any]:
    """``vault``'s time series up to block ``up_to``, oldest first (see ``VaultPoint``)."""
    table: Any = m.VaultPoint.__table__
    query = select(table).where(table.c.vault == vault).order_by(table.c.block_number)
    if up_to is not None:
        query = query.where(table.c.block_number <= up_to)
    return list(conn.execute(query).mappings())


def position_value(shares: int, share_price: int) -> int:
    """What ``shares`` are worth at ``share_price`` (a point's), in USD with 18 decimals."""
    return shares * share_price // (ONE * SHARES_PER_VALUE)


def portfolio(
    conn: Connection, holder: str, *, up_to: int | None = None
) -> dict[str, tuple[int, int]]:
    """``holder``'s pool shares in every vault, and what they are worth (USD, 18 decimals) at
    the vault's latest point with values up to block ``up_to``: vault -> (shares, value)."""
    query = select(m.ShareMove.vault, m.ShareMove.delta).where(m.ShareMove.holder == holder)
    if up_to is not None:
        query = query.where(m.ShareMove.block_number <= up_to)
    held: dict[str, int] = defaultdict(int)
    for vault, delta in conn.execute(query):
        held[vault] += delta
    result: dict[str, tuple[int, int]] = {}
    for vault, shares in sorted(held.items()):
        if not shares:
            continue
        priced = [p for p in vault_points(conn, vault, up_to=up_to) if p["share_price"]]
        value = position_value(shares, priced[-1]["share_price"]) if priced else 0
        result[vault] = (shares, value)
    return result

"""The rankings and a follower's portfolio as tables for a terminal, shared by ``tandem indexer
rankings | portfolio`` and the demo. Money in USD to the cent, ratios as METRICS.md rounds them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.table import Table

from .inputs import Position
from .rankings import RankingRow

USD = 10**18


def usd(amount: int) -> str:
    """USD with 18 decimals, to the cent (rounded towards zero), with a sign when negative."""
    cents = abs(amount) * 100 // USD
    return f"{'-' if amount < 0 else ''}{cents // 100:,}.{cents % 100:02d}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def bps(value: float | None) -> str:
    return "off" if value is None else f"{value:,.0f} bps"


def rankings_table(
    rows: Sequence[RankingRow], title: str, name: Callable[[str], str] = str
) -> Table:
    """One line per master: the figures a follower compares, and whether the rules rank them."""
    table = Table(title=title)
    for header in (
        "#",
        "master",
        "window",
        "ROI",
        "P&L (USD)",
        "max DD",
        "trades",
        "win rate",
        "risk",
        "AUM (USD)",
        "followers",
        "history",
        "ranked",
    ):
        table.add_column(header, justify="left" if header in ("master", "window") else "right")
    for place, row in enumerate(rows, 1):
        table.add_row(
            str(place),
            name(row.master),
            row.window,
            percent(row.roi),
            usd(row.pnl_usd),
            percent(row.max_drawdown),
            str(row.trades),
            percent(row.win_rate),
            "-" if row.risk_score is None else str(row.risk_score),
            usd(row.aum_usd),
            f"{row.followers_now}/{row.followers_ever}",
            f"{row.history_days} d",
            "yes" if row.ranked else "no",
        )
    return table


def portfolio_table(
    positions: Sequence[Position], title: str, name: Callable[[str], str] = str
) -> Table:
    """One line per allocation: entry, value, P&L, fees, and how far each limit is."""
    table = Table(title=title)
    for header in (
        "master",
        "entry (USD)",
        "value (USD)",
        "realised",
        "unrealised",
        "fees",
        "stop-loss",
        "max drawdown",
        "take-profit",
        "exits",
    ):
        table.add_column(header, justify="left" if header == "master" else "right")
    for p in positions:
        v = p.view
        limits = v.limits
        table.add_row(
            name(p.master),
            usd(v.entry_value_usd),
            usd(v.current_value_usd),
            usd(v.realised_pnl_usd),
            usd(v.unrealised_pnl_usd),
            usd(v.fees_paid_usd),
            _limit(limits.stop_loss_bps, v.stop_loss_distance_bps),
            _limit(limits.max_drawdown_bps, v.max_drawdown_distance_bps),
            _limit(limits.take_profit_bps, v.take_profit_distance_bps),
            "; ".join(
                f"block {x.block}: {usd(x.proceeds_usd)} for {usd(x.cost_usd)}" for x in v.exits
            )
            or "-",
        )
    return table


def _limit(limit_bps: int, distance: float | None) -> str:
    """A limit and the distance to it: ``10.00% (1,234 bps away)``; ``off`` when turned off."""
    if not limit_bps:
        return "off"
    if distance is None:
        return f"{limit_bps / 100:.2f}% (no position)"
    return f"{limit_bps / 100:.2f}% ({bps(distance)} away)"

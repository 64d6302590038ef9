"""The rankings and a follower's portfolio as tables for a terminal, shared by ``tandem indexer
rankings | portfolio`` and the demo. Money in USD to the cent, ratios as METRICS.md rounds them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.table import Table

from .inputs import Position
from .rankings import RankingRow

USD = 10**18


def usd(amount: int, *, cents: bool = True) -> str:
    """USD with 18 decimals, to the cent (or the dollar), rounded towards zero, signed."""
    sign = "-" if amount < 0 else ""
    if not cents:
        return f"{sign}{abs(amount) // USD:,}"
    hundredths = abs(amount) * 100 // USD
    return f"{sign}{hundredths // 100:,}.{hundredths % 100:02d}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def rankings_table(
    rows: Sequence[RankingRow], title: str, name: Callable[[str], str] = str
) -> Table:
    """One line per master and window (places counted within each window): the figures a
    follower compares, in whole USD, and whether the ranking rules admit the master."""
    table = Table(title=title)
    for header in (
        "#",
        "master",
        "window",
        "ROI",
        "P&L $",
        "max DD",
        "trades",
        "win rate",
        "risk",
        "AUM $",
        "followers",
        "days",
        "ranked",
    ):
        table.add_column(header, justify="left" if header in ("master", "window") else "right")
    places: dict[str, int] = {}
    for row in rows:
        places[row.window] = places.get(row.window, 0) + 1
        table.add_row(
            str(places[row.window]),
            name(row.master),
            row.window,
            percent(row.roi),
            usd(row.pnl_usd, cents=False),
            percent(row.max_drawdown),
            str(row.trades),
            percent(row.win_rate),
            "-" if row.risk_score is None else str(row.risk_score),
            usd(row.aum_usd, cents=False),
            f"{row.followers_now}/{row.followers_ever}",
            str(row.history_days),
            "yes" if row.ranked else "no",
        )
    return table


def portfolio_table(
    positions: Sequence[Position], title: str, name: Callable[[str], str] = str
) -> Table:
    """One line per allocation: entry, value, P&L, fees, and each limit with the distance to it
    (how far the value may fall before a stop-loss or drawdown limit holds, or must rise for a
    take-profit, in basis points of the value)."""
    table = Table(
        title=title, caption="Limits: the limit / how far the value is from it, in basis points."
    )
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
    """A limit and how far the value is from it in basis points: ``10% / 1,234``; ``off``."""
    if not limit_bps:
        return "off"
    if distance is None:
        return f"{limit_bps / 100:g}% / no position"
    return f"{limit_bps / 100:g}% / {distance:,.0f}"

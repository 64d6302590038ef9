"""Series a master's profile shows, computed from the vault's points: drawdowns and monthly
returns of the master's performance index (a ratio of two indexes: deposits and withdrawals
do not move it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime


def drawdowns(indexes: Sequence[int | None]) -> list[float | None]:
    """How far each index is below the highest one so far (None where a point has no index)."""
    peak = 0
    result: list[float | None] = []
    for index in indexes:
        if index is None:
            result.append(None)
            continue
        peak = max(peak, index)
        result.append(1 - index / peak if peak else 0.0)
    return result


def monthly_returns(points: Sequence[tuple[int, int]]) -> list[tuple[str, float]]:
    """Each UTC month's return from ``(timestamp, index)`` points in chain order: the month's
    last index over the previous month's last (the first point's for the first month), less
    one; zero where that base is zero (nothing was left to return on)."""
    closes: dict[str, int] = {}
    for timestamp, index in points:
        closes[datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m")] = index
    result = []
    base = points[0][1] if points else 0
    for month, close in closes.items():
        result.append((month, close / base - 1 if base else 0.0))
        base = close
    return result

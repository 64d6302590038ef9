"""What a request may ask: each list's query parameters as one model, unknown ones refused."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from indexer.metrics import Window
from indexer.rankings import SORTABLE

Order = Literal["asc", "desc"]


class Page(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200, description="rows per page, 1 to 200")
    cursor: str | None = Field(
        default=None,
        description="`next_cursor` of the previous page, as given (it is opaque); the same "
        "query without it starts at the first page",
    )


class MastersQuery(Page):
    """The rankings: one window, sorted by one metric, filtered."""

    sort: str = Field(
        default="roi",
        description="any metric of the rankings table",
        json_schema_extra={"enum": list(SORTABLE)},
    )
    order: Order | None = Field(
        default=None,
        description="`desc` or `asc`; by default the best first (highest ROI, lowest drawdown)",
    )
    window: Window = Field(default=Window.D30, description="7d, 30d, 90d or all")
    ranked_only: bool = Field(
        default=True,
        description="only masters with the track record the ranking rules ask for; false lists "
        "fresh masters too",
    )
    min_days: int | None = Field(
        default=None, ge=0, le=36_500, description="days of history, at least"
    )
    max_drawdown: float | None = Field(
        default=None, ge=0, le=1, description="the window's maximum drawdown, at most (0.2: 20%)"
    )
    max_risk_score: int | None = Field(default=None, ge=1, le=10, description="1 to 10, at most")
    include_closed: bool = Field(
        default=False, description="vaults whose master left and whose pool emptied, too"
    )

    @field_validator("sort")
    @classmethod
    def _sortable(cls, value: str) -> str:
        if value not in SORTABLE:
            raise ValueError(f"cannot sort by {value!r}: choose one of {', '.join(SORTABLE)}")
        return value


class TradesQuery(Page):
    """A master's trades in chain order, newest first unless ``order`` is ``asc``."""

    order: Order = Field(default="desc", description="`desc`: newest first; `asc`: oldest first")

"""A typed Python client for Tandem's REST API (``tandem api serve``), sync and async.

    from tandem.client import TandemClient

    with TandemClient("http://127.0.0.1:8000") as api:
        protocol = api.protocol()                      # models.Protocol
        for master in api.iter_masters(sort="sharpe", window="90d"):
            print(master.master, master.roi)           # every page, one master at a time
        profile = api.master(master.master)            # models.MasterProfile
        for trade in api.iter_trades(master.master):   # newest first
            print(trade.block_number, trade.master_in)

``AsyncTandemClient`` has the same methods as coroutines (``iter_*`` are async iterators).
Every answer is a model of ``tandem.client.models``: big integers (token amounts, USD with 18
decimals) are exact Python ints. An error answer raises ``ApiProblem`` with the API's problem
document (``status``, ``type``, ``title``, ``detail``, and ``errors`` for invalid parameters);
no answer at all raises ``ApiUnreachable``. Both are ``TandemError``s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from tandem.client import models
from tandem.client.models import (
    Follower,
    Health,
    MasterMetrics,
    MasterPage,
    MasterProfile,
    Problem,
    Protocol,
    Readiness,
    Trade,
    TradePage,
    VaultState,
)
from tandem.errors import TandemError

__all__ = [
    "ApiProblem",
    "ApiUnreachable",
    "AsyncTandemClient",
    "TandemClient",
    "UnexpectedAnswer",
    "models",
]

PROBLEM_PREFIX = "urn:tandem:problem:"
DEFAULT_TIMEOUT = 30.0
Order = Literal["asc", "desc"]
Window = Literal["7d", "30d", "90d", "all"]
M = TypeVar("M", bound=BaseModel)


class ApiProblem(TandemError):
    """The API answered with an error: ``problem`` is its RFC 9457 document."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}".rstrip(": "))
        self.problem = problem

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def name(self) -> str:
        """The problem's name (``not-found``, ``invalid-cursor``, ``invalid-request``,
        ``not-ready``), or the HTTP title for the framework's own answers."""
        kind = self.problem.type
        return kind.removeprefix(PROBLEM_PREFIX) if kind.startswith(PROBLEM_PREFIX) else kind

    @property
    def detail(self) -> str:
        return self.problem.detail

    @property
    def errors(self) -> list[models.ProblemError]:
        return list(self.problem.errors or [])


class ApiUnreachable(TandemError):
    """No answer from the API (nothing listens, a timeout, a broken connection)."""


class UnexpectedAnswer(TandemError):
    """The API answered something this client cannot read (another service, a newer API that
    dropped a field)."""


# --- one request: what to ask and how to read the answer, shared by both clients


@dataclass(frozen=True)
class _Request:
    path: str
    model: type[BaseModel]
    params: Mapping[str, Any] | None = None


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset ones; booleans as the API spells them."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


def _masters(
    sort: str,
    order: Order | None,
    window: Window,
    ranked_only: bool,
    min_days: int | None,
    max_drawdown: float | None,
    max_risk_score: int | None,
    include_closed: bool,
    limit: int,
    cursor: str | None,
) -> _Request:
    return _Request(
        "/v1/masters",
        MasterPage,
        _params(
            sort=sort,
            order=order,
            window=window,
            ranked_only=ranked_only,
            min_days=min_days,
            max_drawdown=max_drawdown,
            max_risk_score=max_risk_score,
            include_closed=include_closed,
            limit=limit,
            cursor=cursor,
        ),
    )


def _trades(master: str, order: Order, limit: int, cursor: str | None) -> _Request:
    return _Request(
        f"/v1/masters/{master}/trades",
        TradePage,
        _params(order=order, limit=limit, cursor=cursor),
    )


def _read(response: httpx.Response, model: type[M]) -> M:
    if response.status_code >= 400:
        raise ApiProblem(_problem(response))
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise UnexpectedAnswer(
            f"{response.request.url} answered what is no {model.__name__}: "
            f"{exc.error_count()} fields do not fit, first: {exc.errors()[0]['msg']}",
            "is this Tandem's API, and of a version this client knows?",
        ) from exc


def _problem(response: httpx.Response) -> Problem:
    try:
        return Problem.model_validate_json(response.content)
    except ValidationError:
        # Not a problem document (a proxy's error page): make one of the status.
        return Problem(
            type="about:blank",
            title=response.reason_phrase or "Error",
            status=response.status_code,
            detail=response.text[:200].strip(),
            instance=response.request.url.path,
        )


def _unreachable(base_url: str, exc: httpx.TransportError) -> ApiUnreachable:
    return ApiUnreachable(
        f"no answer from the API at {base_url}: {exc.__class__.__name__} {exc}".rstrip(),
        "is `tandem api serve` running there?",
    )


class TandemClient:
    """The API, synchronously. ``base_url`` is the server's root (``http://host:8000``);
    ``client`` may be an ``httpx.Client`` of your own (its base URL is then used)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self._owned = client is None
        self._http = client or httpx.Client(
            base_url=base_url, timeout=timeout, headers=dict(headers or {})
        )
        self.base_url = str(self._http.base_url)

    def __enter__(self) -> TandemClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def _get(self, request: _Request) -> Any:
        try:
            response = self._http.get(request.path, params=request.params)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _read(response, request.model)

    # --- /v1

    def protocol(self) -> Protocol:
        """The hub's parameters, the assets and adapters, the address book and the ABIs."""
        result: Protocol = self._get(_Request("/v1/protocol", Protocol))
        return result

    def masters(
        self,
        *,
        sort: str = "roi",
        order: Order | None = None,
        window: Window = "30d",
        ranked_only: bool = True,
        min_days: int | None = None,
        max_drawdown: float | None = None,
        max_risk_score: int | None = None,
        include_closed: bool = False,
        limit: int = 50,
        cursor: str | None = None,
    ) -> MasterPage:
        """One page of the rankings; pass its ``next_cursor`` as ``cursor`` for the next."""
        request = _masters(
            sort,
            order,
            window,
            ranked_only,
            min_days,
            max_drawdown,
            max_risk_score,
            include_closed,
            limit,
            cursor,
        )
        result: MasterPage = self._get(request)
        return result

    def iter_masters(
        self,
        *,
        sort: str = "roi",
        order: Order | None = None,
        window: Window = "30d",
        ranked_only: bool = True,
        min_days: int | None = None,
        max_drawdown: float | None = None,
        max_risk_score: int | None = None,
        include_closed: bool = False,
        page_size: int = 200,
    ) -> Iterator[MasterMetrics]:
        """Every master of the rankings, page by page (keyset pages: each once)."""
        cursor: str | None = None
        while True:
            page = self.masters(
                sort=sort,
                order=order,
                window=window,
                ranked_only=ranked_only,
                min_days=min_days,
                max_drawdown=max_drawdown,
                max_risk_score=max_risk_score,
                include_closed=include_closed,
                limit=page_size,
                cursor=cursor,
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def master(self, master: str) -> MasterProfile:
        """A master's profile: every window's metrics, the equity curve, followers, fees."""
        result: MasterProfile = self._get(_Request(f"/v1/masters/{master}", MasterProfile))
        return result

    def trades(
        self, master: str, *, order: Order = "desc", limit: int = 50, cursor: str | None = None
    ) -> TradePage:
        """One page of a master's trades (newest first unless ``order="asc"``)."""
        result: TradePage = self._get(_trades(master, order, limit, cursor))
        return result

    def iter_trades(
        self, master: str, *, order: Order = "desc", page_size: int = 200
    ) -> Iterator[Trade]:
        """Every trade of a master, page by page."""
        cursor: str | None = None
        while True:
            page = self.trades(master, order=order, limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def vault(self, vault: str) -> VaultState:
        """A vault's state: latest point, the master's book, every holder's shares."""
        result: VaultState = self._get(_Request(f"/v1/vaults/{vault}", VaultState))
        return result

    def follower(self, follower: str) -> Follower:
        """A follower's hub account and every allocation."""
        result: Follower = self._get(_Request(f"/v1/followers/{follower}", Follower))
        return result

    # --- health

    def health(self) -> Health:
        """The server process is up (``/healthz``)."""
        result: Health = self._get(_Request("/healthz", Health))
        return result

    def ready(self) -> Readiness:
        """The database answers and the indexer has a cursor (``/readyz``); ``ApiProblem``
        with status 503 when not."""
        result: Readiness = self._get(_Request("/readyz", Readiness))
        return result


class AsyncTandemClient:
    """The API, asynchronously: the methods of ``TandemClient`` as coroutines."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._owned = client is None
        self._http = client or httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers=dict(headers or {})
        )
        self.base_url = str(self._http.base_url)

    async def __aenter__(self) -> AsyncTandemClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def _get(self, request: _Request) -> Any:
        try:
            response = await self._http.get(request.path, params=request.params)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _read(response, request.model)

    async def protocol(self) -> Protocol:
        result: Protocol = await self._get(_Request("/v1/protocol", Protocol))
        return result

    async def masters(
        self,
        *,
        sort: str = "roi",
        order: Order | None = None,
        window: Window = "30d",
        ranked_only: bool = True,
        min_days: int | None = None,
        max_drawdown: float | None = None,
        max_risk_score: int | None = None,
        include_closed: bool = False,
        limit: int = 50,
        cursor: str | None = None,
    ) -> MasterPage:
        request = _masters(
            sort,
            order,
            window,
            ranked_only,
            min_days,
            max_drawdown,
            max_risk_score,
            include_closed,
            limit,
            cursor,
        )
        result: MasterPage = await self._get(request)
        return result

    async def iter_masters(
        self,
        *,
        sort: str = "roi",
        order: Order | None = None,
        window: Window = "30d",
        ranked_only: bool = True,
        min_days: int | None = None,
        max_drawdown: float | None = None,
        max_risk_score: int | None = None,
        include_closed: bool = False,
        page_size: int = 200,
    ) -> AsyncIterator[MasterMetrics]:
        cursor: str | None = None
        while True:
            page = await self.masters(
                sort=sort,
                order=order,
                window=window,
                ranked_only=ranked_only,
                min_days=min_days,
                max_drawdown=max_drawdown,
                max_risk_score=max_risk_score,
                include_closed=include_closed,
                limit=page_size,
                cursor=cursor,
            )
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def master(self, master: str) -> MasterProfile:
        result: MasterProfile = await self._get(_Request(f"/v1/masters/{master}", MasterProfile))
        return result

    async def trades(
        self, master: str, *, order: Order = "desc", limit: int = 50, cursor: str | None = None
    ) -> TradePage:
        result: TradePage = await self._get(_trades(master, order, limit, cursor))
        return result

    async def iter_trades(
        self, master: str, *, order: Order = "desc", page_size: int = 200
    ) -> AsyncIterator[Trade]:
        cursor: str | None = None
        while True:
            page = await self.trades(master, order=order, limit=page_size, cursor=cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def vault(self, vault: str) -> VaultState:
        result: VaultState = await self._get(_Request(f"/v1/vaults/{vault}", VaultState))
        return result

    async def follower(self, follower: str) -> Follower:
        result: Follower = await self._get(_Request(f"/v1/followers/{follower}", Follower))
        return result

    async def health(self) -> Health:
        result: Health = await self._get(_Request("/healthz", Health))
        return result

    async def ready(self) -> Readiness:
        result: Readiness = await self._get(_Request("/readyz", Readiness))
        return result

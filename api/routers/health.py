"""Health checks and metrics, outside ``/v1``: for the operator, not the integrator."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.problems import MEDIA_TYPE, TYPE_PREFIX, Problem
from indexer import reading
from tandem.config import Settings
from tandem.db import head_revision, revision_of

router = APIRouter(tags=["operations"])

NODE_TIMEOUT = 2.0  # seconds to wait for the node's head


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    cursor: int = Field(description="the last block the indexer indexed")
    final_block: int = Field(description="the block answers are read at")
    head: int | None = Field(description="the node's latest block (null: the node is not asked)")
    lag: int | None = Field(description="blocks the indexer is behind the node's head")


class NotReady(Problem):
    """Why the server is not ready; while the indexer catches up, how far behind it is."""

    cursor: int | None = Field(default=None, description="the indexer's last block, if any")
    head: int | None = Field(default=None, description="the node's latest block, if asked")
    lag: int | None = Field(default=None, description="head less cursor")
    max_lag: int | None = Field(default=None, description="the most lag that is still ready")


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (it says nothing of the database: see /readyz)."""
    # async: answered on the event loop, without a trip to a worker thread.
    return Health(status="up")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": NotReady, "content": {MEDIA_TYPE: {}}, "description": "not ready"}},
)
def readyz(request: Request) -> Readiness | JSONResponse:
    """Ready when the database answers, has the latest schema, the indexer has a cursor, and
    that cursor is at most `api.ready_max_lag` blocks behind the node's head (a backfilling
    indexer is not ready: its answers would be old)."""
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    try:
        if revision_of(engine) != head_revision():
            return _not_ready(
                request, "The database does not have the latest schema. Run `tandem db upgrade`."
            )
        with engine.connect() as conn:
            cursor = reading.cursor_block(conn)
    except SQLAlchemyError:
        return _not_ready(request, "The database does not answer. Check it runs.")
    if cursor is None:
        return _not_ready(
            request, "The indexer has not indexed a block yet. Run `tandem indexer run`."
        )
    final = cursor - settings.indexer.finality_depth
    max_lag = settings.api.ready_max_lag
    if max_lag is None:
        return Readiness(status="ready", cursor=cursor, final_block=final, head=None, lag=None)
    head = node_head(settings.rpc_url)
    if head is None:
        return _not_ready(
            request,
            "The node does not answer, so how far behind the indexer is cannot be told. Check "
            "the node at `rpc_url` (or set `api.ready_max_lag` to null not to ask it).",
            cursor=cursor,
            max_lag=max_lag,
        )
    lag = max(head - cursor, 0)
    if lag > max_lag:
        return _not_ready(
            request,
            f"The indexer is {lag} blocks behind the node's head (at most {max_lag} is ready): "
            "it is catching up. Answers would be old; try again once it has.",
            cursor=cursor,
            head=head,
            lag=lag,
            max_lag=max_lag,
        )
    return Readiness(status="ready", cursor=cursor, final_block=final, head=head, lag=lag)


def node_head(rpc_url: str) -> int | None:
    """The node's latest block number, or None when it does not answer in time."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
    try:
        answer = httpx.post(rpc_url, json=body, timeout=NODE_TIMEOUT).json()
        return int(answer["result"], 16)
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def _not_ready(request: Request, detail: str, **facts: Any) -> JSONResponse:
    problem = NotReady(
        type=TYPE_PREFIX + "not-ready",
        title="Not ready",
        status=503,
        detail=detail,
        instance=request.url.path,
        **facts,
    )
    return JSONResponse(problem.model_dump(exclude_none=True), 503, media_type=MEDIA_TYPE)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus metrics of this server process."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )

"""Health checks and metrics, outside ``/v1``: for the operator, not the integrator."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.problems import MEDIA_TYPE, Problem, ProblemException
from indexer import reading
from tandem.db import head_revision, revision_of

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    cursor: int = Field(description="the last block the indexer indexed")
    final_block: int = Field(description="the block answers are read at")


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up (it says nothing of the database: see /readyz)."""
    return Health(status="up")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Problem, "content": {MEDIA_TYPE: {}}, "description": "not ready"}},
)
def readyz(request: Request) -> Readiness:
    """Ready when the database answers, has the latest schema and the indexer has a cursor."""
    engine: Engine = request.app.state.engine
    try:
        if revision_of(engine) != head_revision():
            raise _not_ready(
                "The database does not have the latest schema. Run `tandem db upgrade`."
            )
        with engine.connect() as conn:
            cursor = reading.cursor_block(conn)
    except SQLAlchemyError:
        raise _not_ready("The database does not answer. Check it runs.") from None
    if cursor is None:
        raise _not_ready("The indexer has not indexed a block yet. Run `tandem indexer run`.")
    depth = request.app.state.settings.indexer.finality_depth
    return Readiness(status="ready", cursor=cursor, final_block=cursor - depth)


def _not_ready(detail: str) -> ProblemException:
    return ProblemException(503, "not-ready", "Not ready", detail)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus metrics of this server process."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )

"""Errors as RFC 9457 problem documents (``application/problem+json``): every 4xx says what was
wrong and what to do instead, and a 500 says nothing about the server's insides."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:tandem:problem:"


class ProblemError(BaseModel):
    """One invalid part of a request (validation problems list them all)."""

    where: str = Field(description="the parameter: `query.limit`, `path.master`")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(description=f"`{TYPE_PREFIX}<name>`, or `about:blank` for plain HTTP")
    title: str
    status: int
    detail: str = Field(description="what was wrong, and what to do")
    instance: str = Field(description="the path that was asked for")
    errors: list[ProblemError] | None = None


class ProblemException(Exception):
    """Raised by a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        name: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.name, self.title, self.detail = status, name, title, detail
        self.headers = headers


def not_found(what: str, hint: str) -> ProblemException:
    return ProblemException(404, "not-found", "Not found", f"{what}. {hint}")


def bad_request(name: str, title: str, detail: str) -> ProblemException:
    return ProblemException(400, name, title, detail)


def problem_response(
    request: Request,
    status: int,
    type_: str,
    title: str,
    detail: str,
    errors: list[ProblemError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=type_,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


# The problem documents every route may answer with, for the OpenAPI document.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {MEDIA_TYPE: {}}, "description": description}
    for status, description in (
        (400, "A parameter is not valid (a cursor from another query, say)"),
        (404, "Nothing is indexed under this address"),
        (422, "A parameter does not have the expected form"),
        (503, "The indexer has no final block yet"),
    )
}


def install(app: FastAPI) -> None:
    """Routes every error through a problem document."""

    @app.exception_handler(ProblemException)
    async def raised(request: Request, exc: ProblemException) -> JSONResponse:
        return problem_response(
            request,
            exc.status,
            TYPE_PREFIX + exc.name,
            exc.title,
            exc.detail,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            ProblemError(
                where=".".join(str(part) for part in e["loc"]),
                message=e["msg"].removeprefix("Value error, "),
            )
            for e in exc.errors()
        ]
        listed = "; ".join(f"{e.where}: {e.message}" for e in errors)
        return problem_response(
            request,
            422,
            TYPE_PREFIX + "invalid-request",
            "The request is not valid",
            f"{listed}. Fix these parameters (/openapi.json describes each) and ask again.",
            errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own answers (no such route, a method not allowed).
        allowed = (exc.headers or {}).get("Allow") or "other methods"
        hints = {
            404: "No such route: every resource is under /v1 (see /openapi.json).",
            405: f"This route answers {allowed} only (see /openapi.json).",
        }
        detail = hints.get(exc.status_code, str(exc.detail))
        return problem_response(request, exc.status_code, "about:blank", str(exc.detail), detail)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        # The cause goes to the server's log, never to the client.
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem_response(
            request,
            500,
            TYPE_PREFIX + "internal",
            "Internal error",
            "The server could not answer this request. Try again later; if it persists, "
            "tell the operator the time and path of the request.",
        )

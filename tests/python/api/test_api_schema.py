"""Every operation of the OpenAPI document, exercised by Schemathesis against a real server
process over a database the real indexer filled from a real chain: no answer is a 5xx, and every
answer has a status code, a media type and a body that the document declares for it.

Generated requests mostly name addresses nothing is indexed under (404s), so each request that
names a master, a vault or a follower is also sent with the path naming one that is indexed, with
the same generated query: the 200 answers are checked as thoroughly. Account routes are called
without a session: their 401 and 422 problems are checked the same way."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from conftest import World
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 30  # generated requests per operation


@pytest.fixture(scope="module")
def api_schema(api: httpx.Client) -> Any:
    return schemathesis.openapi.from_url(f"{str(api.base_url).rstrip('/')}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")
seen: dict[str, set[int]] = {}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_operation_answers_as_documented(case: Any, world: World, api: httpx.Client) -> None:
    base_url = str(api.base_url).rstrip("/")
    response = case.call_and_validate(base_url=base_url, checks=CHECKS)
    operation = f"{case.method} {case.path}"
    seen.setdefault(operation, set()).add(response.status_code)
    known = {
        "master": world.a.master,
        "vault": world.a.vault.address,
        "follower": world.a.followers[0],
    }
    parameters = case.path_parameters or {}
    if any(name in known for name in parameters):
        for name in parameters:
            if name in known:
                parameters[name] = known[name]
        response = case.call_and_validate(base_url=base_url, checks=CHECKS)
        seen[operation].add(response.status_code)


def test_every_get_route_answered_200_and_the_account_routes_refused(
    api: httpx.Client,
) -> None:
    """What the run above saw (it runs first): each data route answered 200 at least once,
    and every account route was refused without a session."""
    if not seen:
        pytest.skip("runs after the generated requests")
    document = api.get("/openapi.json").json()
    operations = {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    }
    # Every operation was exercised (Schemathesis also tries methods a path does not take).
    assert operations <= set(seen), operations - set(seen)
    for operation in operations:
        statuses = seen[operation]
        method, path = operation.split(" ", 1)
        if path.startswith(("/v1/account", "/v1/auth/session")):
            assert 401 in statuses, (operation, statuses)
        elif method == "GET":
            assert 200 in statuses, (operation, statuses)

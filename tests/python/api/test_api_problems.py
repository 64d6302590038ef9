"""Bad input never gets a 500: every invalid parameter, unknown address or foreign cursor is a
4xx problem document (RFC 9457) saying what was wrong and what to do; and the OpenAPI document
is valid, with every resource under /v1."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from conftest import World
from openapi_spec_validator import validate

NOBODY = "0x" + "ab" * 20


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] and body["title"] and body["detail"]
    assert body["instance"] == response.request.url.path
    return body


@pytest.mark.parametrize(
    ("path", "params", "where", "says"),
    [
        ("/v1/masters/0x1234", {}, "path.master", "not an address"),
        ("/v1/masters/nobody/trades", {}, "path.master", "not an address"),
        ("/v1/vaults/0x" + "zz" * 20, {}, "path.vault", "not an address"),
        ("/v1/followers/" + "12" * 20, {}, "path.follower", "not an address"),
        ("/v1/masters", {"sort": "luck"}, "query.sort", "choose one of roi, pnl_usd"),
        ("/v1/masters", {"limit": 0}, "query.limit", "greater than or equal to 1"),
        ("/v1/masters", {"limit": 201}, "query.limit", "less than or equal to 200"),
        ("/v1/masters", {"limit": "ten"}, "query.limit", "valid integer"),
        ("/v1/masters", {"window": "1y"}, "query.window", "'7d', '30d', '90d' or 'all'"),
        ("/v1/masters", {"order": "up"}, "query.order", "'asc' or 'desc'"),
        ("/v1/masters", {"max_drawdown": 2}, "query.max_drawdown", "less than or equal to 1"),
        ("/v1/masters", {"max_risk_score": 0}, "query.max_risk_score", "greater than"),
        ("/v1/masters", {"ranked_only": "maybe"}, "query.ranked_only", "valid boolean"),
        ("/v1/masters", {"colour": "red"}, "query.colour", "Extra inputs are not permitted"),
        (f"/v1/masters/{NOBODY}/trades", {"limit": -1}, "query.limit", "greater than"),
    ],
)
def test_an_invalid_parameter_is_a_422_problem_naming_it(
    api: httpx.Client, path: str, params: dict[str, Any], where: str, says: str
) -> None:
    body = problem(api.get(path, params=params), 422)
    assert body["type"] == "urn:tandem:problem:invalid-request"
    assert [e["where"] for e in body["errors"]] == [where]
    assert says in body["errors"][0]["message"]
    assert says in body["detail"] and "/openapi.json" in body["detail"]


def cursor_of(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "cursor", "says"),
    [
        ("/v1/masters", "not-a-cursor", "not a cursor this API gave"),
        ("/v1/masters", "%%%", "not a cursor this API gave"),
        ("/v1/masters", cursor_of([1, 2]), "not a cursor this API gave"),
        ("/v1/masters", cursor_of({"q": ["roi", "desc", "30d"], "k": ["x"]}), "not a cursor"),
        ("/v1/masters", cursor_of({"q": ["roi", "desc", "30d"], "k": [True, NOBODY]}), "not a"),
        ("/v1/masters", cursor_of({"q": ["trades", "desc", "30d"], "k": [1, NOBODY]}), "another"),
        (f"/v1/masters/{NOBODY}/trades", "AAAA", "not a cursor this API gave"),
    ],
)
def test_a_cursor_the_api_did_not_give_for_this_query_is_a_400_problem(
    api: httpx.Client, world: World, path: str, cursor: str, says: str
) -> None:
    # The master must exist for the trades' cursor to be read at all.
    path = path.replace(NOBODY, world.a.master)
    body = problem(api.get(path, params={"cursor": cursor}), 400)
    assert body["type"] == "urn:tandem:problem:invalid-cursor"
    assert says in body["detail"] and "leave cursor out" in body["detail"]


def test_a_cursor_of_another_sort_is_refused_and_one_of_the_same_query_is_not(
    api: httpx.Client,
) -> None:
    params = {"sort": "trades", "window": "all", "ranked_only": "false", "limit": 1}
    first = api.get("/v1/masters", params=params).json()
    cursor = first["next_cursor"]
    assert cursor
    assert api.get("/v1/masters", params={**params, "cursor": cursor}).status_code == 200
    other = api.get("/v1/masters", params={**params, "sort": "roi", "cursor": cursor})
    assert "another sort" in problem(other, 400)["detail"]
    trades = api.get(f"/v1/masters/{first['items'][0]['master']}/trades", params={"cursor": cursor})
    problem(trades, 400)


@pytest.mark.parametrize(
    "path",
    [f"/v1/masters/{NOBODY}", f"/v1/masters/{NOBODY}/trades", f"/v1/vaults/{NOBODY}"],
)
def test_an_unknown_master_vault_or_follower_is_a_404_problem(
    api: httpx.Client, world: World, path: str
) -> None:
    body = problem(api.get(path), 404)
    assert body["type"] == "urn:tandem:problem:not-found"
    assert "0xaBaB" in body["detail"] or NOBODY in body["detail"].lower()
    # A master's address is not a vault's, and a vault's is not a master's.
    problem(api.get(f"/v1/vaults/{world.a.master}"), 404)
    problem(api.get(f"/v1/masters/{world.a.vault.address}"), 404)
    problem(api.get(f"/v1/followers/{world.a.vault.address}"), 404)


def test_unknown_routes_and_methods_are_problems_too(api: httpx.Client) -> None:
    assert "/v1" in problem(api.get("/v2/masters"), 404)["detail"]
    assert "GET" in problem(api.post("/v1/masters"), 405)["detail"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=1e400",
        "max_drawdown=nan",
        "max_drawdown=inf",
        "min_days=99999999999999999999999999",
        "cursor=" + "A" * 5000,
        "sort=roi&sort=pnl_usd",
        "window=%00",
        "cursor=%F0%9F%92%A5",
    ],
)
def test_odd_input_is_never_a_500(api: httpx.Client, query: str) -> None:
    response = api.get(f"/v1/masters?{query}")
    assert 200 <= response.status_code < 500, response.text
    if response.status_code >= 400:
        problem(response, response.status_code)


def test_the_openapi_document_is_valid_and_every_resource_is_under_v1(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    validate(spec)
    operational = {"/healthz", "/readyz", "/metrics"}
    assert operational <= set(spec["paths"])
    assert all(path.startswith("/v1/") for path in set(spec["paths"]) - operational)
    assert "JSON strings of decimal digits" in spec["info"]["description"]
    amount = spec["components"]["schemas"]["Trade"]["properties"]["master_in"]
    assert amount["type"] == "string"
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            if path.startswith(("/v1/auth", "/v1/account")):
                # The accounts' routes: a session, a second factor; never the indexer's 503.
                assert "application/problem+json" in responses["401"]["content"], path
            elif path.startswith("/v1/demo"):
                # The local demo's faucet and relay: not found unless `api.demo` is on.
                assert "application/problem+json" in responses["404"]["content"], path
            else:
                assert method == "get", path
                assert "application/problem+json" in responses["503"]["content"], path
            if operation.get("parameters") or operation.get("requestBody"):
                assert "application/problem+json" in responses["422"]["content"], path

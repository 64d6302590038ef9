"""tandem.client against a real `tandem api serve`: typed answers equal the API's JSON, keyset
pages are walked to the end, problems raise ApiProblem, sync and async alike."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import pytest
from conftest import World
from pydantic import BaseModel

from api.problems import Problem as ApiProblemDocument
from api.routers import health as api_health
from api.schemas import resources as api_models
from tandem.client import ApiProblem, ApiUnreachable, AsyncTandemClient, TandemClient, models
from tandem.node import free_port


@pytest.fixture(scope="module")
def url(api: httpx.Client) -> str:
    return str(api.base_url)


@pytest.fixture
def client(url: str) -> Iterator[TandemClient]:
    with TandemClient(url) as tandem:
        yield tandem


def same(model: BaseModel, raw: dict[str, Any]) -> None:
    """The typed answer says what the JSON says: big integers as ints, the rest as is."""
    assert model.model_dump(mode="python") == normalised(raw, type(model))


def normalised(raw: Any, model: Any) -> Any:
    if isinstance(raw, list):
        return [normalised(item, model) for item in raw]
    if not isinstance(raw, dict):
        return raw
    fields = getattr(model, "model_fields", None)
    if fields is None:  # a plain dict field (shares, contracts, abis)
        return {k: int(v) if isinstance(v, str) and v.isdigit() else v for k, v in raw.items()}
    out = {}
    for name, value in raw.items():
        annotation = fields[name].annotation
        inner = next(
            (a for a in (annotation, *get_args(annotation)) if hasattr(a, "model_fields")),
            next(
                (
                    a
                    for arg in get_args(annotation)
                    for a in get_args(arg)
                    if hasattr(a, "model_fields")
                ),
                None,
            ),
        )
        if inner is not None:
            out[name] = normalised(value, inner)
        elif isinstance(value, str) and value.lstrip("-").isdigit() and "int" in str(annotation):
            out[name] = int(value)
        elif value == "Infinity":
            out[name] = math.inf
        elif isinstance(value, dict) and name in ("shares",):
            out[name] = {k: int(v) for k, v in value.items()}
        else:
            out[name] = value
    return out


def test_the_models_mirror_the_apis_resources() -> None:
    """Each model has the fields of the API's resource of the same name, so an answer of the
    API always reads (a field the API adds is ignored, one it drops is caught here)."""
    mirrored = 0
    for name, theirs in vars(api_models).items():
        if isinstance(theirs, type) and issubclass(theirs, BaseModel) and name != "Resource":
            ours = getattr(models, name)
            assert set(ours.model_fields) == set(theirs.model_fields), name
            for field, info in theirs.model_fields.items():
                assert ours.model_fields[field].is_required() == info.is_required(), (name, field)
            mirrored += 1
    assert mirrored >= 20
    for ours, theirs in (
        (models.Problem, ApiProblemDocument),
        (models.Health, api_health.Health),
        (models.Readiness, api_health.Readiness),
    ):
        assert set(ours.model_fields) == set(theirs.model_fields)


def test_every_endpoint_answers_typed(
    world: World, api: httpx.Client, client: TandemClient
) -> None:
    protocol = client.protocol()
    assert isinstance(protocol, models.Protocol)
    assert protocol.hub == world.dep.hub.address
    assert isinstance(protocol.params.min_order_value, int)
    same(protocol, api.get("/v1/protocol").json())

    a = world.a
    profile = client.master(a.master)
    assert isinstance(profile, models.MasterProfile)
    assert profile.vault == a.vault.address
    assert all(isinstance(p.total_shares, int) for p in profile.equity_curve)
    same(profile, api.get(f"/v1/masters/{a.master}").json())

    vault = client.vault(a.vault.address)
    assert vault.master == a.master
    assert all(isinstance(v, int) for v in vault.shares.values())
    same(vault, api.get(f"/v1/vaults/{a.vault.address}").json())

    follower = client.follower(world.b.followers[0])
    assert follower.positions and isinstance(follower.positions[0].shares, int)
    same(follower, api.get(f"/v1/followers/{world.b.followers[0]}").json())

    assert client.health().status == "up"
    ready = client.ready()
    assert ready.status == "ready" and ready.final_block == profile.block


def test_pages_are_walked_to_the_end(world: World, api: httpx.Client, client: TandemClient) -> None:
    everyone = list(
        client.iter_masters(sort="trades", window="all", ranked_only=False, page_size=1)
    )
    assert len(everyone) == 3 and len({m.master for m in everyone}) == 3
    assert [m.trades for m in everyone] == sorted((m.trades for m in everyone), reverse=True)
    first = client.masters(sort="trades", window="all", ranked_only=False, limit=1)
    assert first.next_cursor is not None and first.items[0] == everyone[0]
    assert isinstance(everyone[0].pnl_usd, int)

    master = world.a.master
    newest_first = list(client.iter_trades(master, page_size=1))
    assert len(newest_first) == len(world.a.trades) >= 2
    oldest_first = list(client.iter_trades(master, order="asc", page_size=1))
    assert oldest_first == newest_first[::-1]
    raw = api.get(f"/v1/masters/{master}/trades", params={"limit": 200}).json()["items"]
    assert [t.tx_hash for t in newest_first] == [t["tx_hash"] for t in raw]
    assert all(isinstance(t.master_in, int) for t in newest_first)


def test_problems_raise_typed(world: World, client: TandemClient) -> None:
    nobody = "0x" + "12" * 20
    with pytest.raises(ApiProblem) as caught:
        client.master(nobody)
    problem = caught.value
    assert (problem.status, problem.name) == (404, "not-found")
    assert "has no vault" in problem.detail
    assert problem.problem.instance == f"/v1/masters/{nobody}"

    with pytest.raises(ApiProblem) as caught:
        client.masters(limit=0)
    assert (caught.value.status, caught.value.name) == (422, "invalid-request")
    assert [e.where for e in caught.value.errors] == ["query.limit"]

    with pytest.raises(ApiProblem) as caught:
        client.trades(world.a.master, cursor="not-a-cursor")
    assert (caught.value.status, caught.value.name) == (400, "invalid-cursor")

    with pytest.raises(ApiProblem) as caught:
        client.vault("0xnot")
    assert caught.value.status == 422


def test_nothing_listening_is_unreachable() -> None:
    with (
        TandemClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client,
        pytest.raises(ApiUnreachable, match="no answer from the API"),
    ):
        client.health()


def test_the_async_client_answers_the_same(world: World, url: str, client: TandemClient) -> None:
    async def run() -> tuple[Any, ...]:
        async with AsyncTandemClient(url) as tandem:
            protocol = await tandem.protocol()
            masters = [
                m
                async for m in tandem.iter_masters(
                    sort="trades", window="all", ranked_only=False, page_size=1
                )
            ]
            trades = [t async for t in tandem.iter_trades(world.a.master, page_size=1)]
            profile = await tandem.master(world.a.master)
            vault = await tandem.vault(world.a.vault.address)
            follower = await tandem.follower(world.b.followers[0])
            ready = await tandem.ready()
            try:
                await tandem.follower("0x" + "34" * 20)
            except ApiProblem as exc:
                problem = exc
            return protocol, masters, trades, profile, vault, follower, ready, problem

    protocol, masters, trades, profile, vault, follower, ready, problem = asyncio.run(run())
    assert protocol == client.protocol()
    assert masters == list(
        client.iter_masters(sort="trades", window="all", ranked_only=False, page_size=50)
    )
    assert trades == list(client.iter_trades(world.a.master))
    assert profile == client.master(world.a.master)
    assert vault == client.vault(world.a.vault.address)
    assert follower == client.follower(world.b.followers[0])
    assert ready == client.ready()
    assert (problem.status, problem.name) == (404, "not-found")

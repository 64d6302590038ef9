"""``GET /v1/protocol``: what a dApp needs to talk to the deployment: the hub's parameters, the
assets and adapters, the contracts' addresses and the interfaces' ABIs."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import Connection, select

from api.database import Read
from api.problems import PROBLEM_RESPONSES
from api.schemas import resources as out
from tandem.config import Settings
from tandem.db import models as m

router = APIRouter(tags=["protocol"], responses={503: PROBLEM_RESPONSES[503]})

# Hub events: the address that emitted one is the hub the indexer follows.
HUB_EVENTS = ("AssetSet", "VaultCreated", "ParamsSet", "AdapterSet")


@router.get("/protocol", response_model=out.Protocol)
def protocol(request: Request, read: Read) -> out.Protocol:
    conn, block = read.conn, read.block
    settings: Settings = request.app.state.settings
    hub = (
        settings.indexer.hub
        or conn.execute(
            select(m.Event.address).where(m.Event.name.in_(HUB_EVENTS)).limit(1)
        ).scalar()
    )
    chain_id, contracts = address_book(settings, hub)
    return out.Protocol(
        block=block,
        chain_id=chain_id,
        hub=hub,
        params=_params(conn, block),
        assets=_assets(conn, block),
        adapters=[
            out.Adapter.model_validate(row) for row in _latest(conn, m.Adapter, "adapter", block)
        ],
        contracts=contracts,
        abis=request.app.state.abis,
    )


def _params(conn: Connection, block: int) -> out.HubParams | None:
    row = conn.execute(
        select(m.HubParams)
        .where(m.HubParams.block_number <= block)
        .order_by(m.HubParams.block_number.desc(), m.HubParams.log_index.desc())
        .limit(1)
    ).first()
    return None if row is None else out.HubParams.model_validate(row)


def _latest(conn: Connection, model: Any, key: str, block: int) -> list[Any]:
    """The latest row per ``key`` at or below ``block`` (a state is a row per change)."""
    rows = conn.execute(
        select(model)
        .where(model.block_number <= block)
        .order_by(model.block_number, model.log_index)
    ).all()
    latest = {getattr(row, key): row for row in rows}
    return [latest[k] for k in sorted(latest)]


def _assets(conn: Connection, block: int) -> list[out.Asset]:
    answers: dict[str, tuple[int, int]] = {}
    query = (
        select(m.Price.token, m.Price.answer, m.Price.updated_at)
        .where(m.Price.block_number <= block)
        .order_by(m.Price.block_number, m.Price.log_index)
    )
    for token, value, updated_at in conn.execute(query):
        answers[token] = (value, updated_at)
    assets = []
    for row in _latest(conn, m.Asset, "token", block):
        answer: int | None = None
        answered_at: int | None = None
        if row.token in answers:
            answer, answered_at = answers[row.token]
        assets.append(
            out.Asset(
                token=row.token,
                feed=row.feed,
                heartbeat=row.heartbeat,
                token_decimals=row.token_decimals,
                feed_decimals=row.feed_decimals,
                tradable=row.tradable,
                answer=answer,
                answered_at=answered_at,
            )
        )
    return assets


def address_book(settings: Settings, hub: str | None) -> tuple[int | None, dict[str, str]]:
    """The chain id and the address book of the deployment whose hub is ``hub``: the one of
    ``chain_id`` when the settings name it, else the book in the deployments folder that holds
    this hub (the API asks no node)."""
    folder = settings.paths.deployments_dir
    books = sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in books:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            chain_id = int(data.get("chainId", path.stem))
        except (OSError, ValueError):
            continue
        contracts = dict(data.get("contracts", {}))
        if settings.chain_id not in (None, chain_id):
            continue
        if hub is None or contracts.get("TandemHub") == hub:
            return chain_id, contracts
    return settings.chain_id, {"TandemHub": hub} if hub else {}

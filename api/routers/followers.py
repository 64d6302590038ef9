"""``GET /v1/followers/{follower}``: a follower's account and portfolio across masters."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.database import Read
from api.problems import PROBLEM_RESPONSES, not_found
from api.schemas import resources as out
from api.schemas.types import Address
from indexer import inputs
from tandem.db import models as m

router = APIRouter(prefix="/followers", tags=["followers"], responses=PROBLEM_RESPONSES)


@router.get("/{follower}", response_model=out.Follower)
def follower(follower: Address, read: Read) -> out.Follower:
    """The hub account (deposits, withdrawals, free balance) and every allocation the follower
    made, as ``tandem indexer portfolio`` shows them: entry, value, P&L, fees, each limit with
    the distance to it, exits."""
    conn, block = read.conn, read.block
    flows = conn.execute(
        select(m.FollowerFlow.kind, m.FollowerFlow.amount).where(
            m.FollowerFlow.follower == follower, m.FollowerFlow.block_number <= block
        )
    ).all()
    free = conn.execute(
        select(m.AllocationChange.free)
        .where(m.AllocationChange.follower == follower, m.AllocationChange.block_number <= block)
        .order_by(m.AllocationChange.block_number.desc(), m.AllocationChange.log_index.desc())
        .limit(1)
    ).scalar()
    positions = inputs.portfolio(conn, follower, block)
    if not flows and not positions and free is None:
        raise not_found(
            f"{follower} has no deposit and no allocation up to block {block}",
            "Check the address, or wait until the follower's first deposit is final.",
        )
    return out.Follower(
        block=block,
        follower=follower,
        account=out.Account(
            deposited=sum(amount for kind, amount in flows if kind == "deposit"),
            withdrawn=sum(amount for kind, amount in flows if kind == "withdrawal"),
            free=free,
        ),
        fees_paid_usd=sum(p.view.fees_paid_usd for p in positions),
        positions=[
            out.Position(
                vault=p.vault,
                master=p.master,
                shares=p.view.shares,
                entry_value_usd=p.view.entry_value_usd,
                current_value_usd=p.view.current_value_usd,
                peak_value_usd=p.view.peak_value_usd,
                realised_pnl_usd=p.view.realised_pnl_usd,
                unrealised_pnl_usd=p.view.unrealised_pnl_usd,
                fees_paid_usd=p.view.fees_paid_usd,
                limits=out.Limits.model_validate(p.view.limits),
                stop_loss_distance_bps=p.view.stop_loss_distance_bps,
                take_profit_distance_bps=p.view.take_profit_distance_bps,
                max_drawdown_distance_bps=p.view.max_drawdown_distance_bps,
                exits=[
                    out.ExitRecord(
                        block=x.block,
                        timestamp=x.timestamp,
                        shares=x.shares,
                        proceeds_usd=x.proceeds_usd,
                        cost_usd=x.cost_usd,
                        realised_pnl_usd=x.realised_pnl_usd,
                    )
                    for x in p.view.exits
                ],
            )
            for p in positions
        ],
    )

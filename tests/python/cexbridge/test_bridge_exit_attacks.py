"""Attacks on the exits' retries and the follow-ups of orders whose end was not confirmed:
what a follower, the exchange or a crash can do to make the bridge sell what a follow does not
hold, book a fill twice, or leave a follower untold."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import insert, select

from api.notifications.produce import Draft, store
from tandem.db import accounts as a

from .support import database


def test_a_webhook_filtered_to_exit_limit_receives_exit_failed(tmp_path: Path) -> None:
    """A webhook whose kinds name ``exit.limit`` (chosen before ``exit.failed`` existed)
    receives an exit given up, as the notification list does; one filtered to other kinds does
    not, nor does another address's."""
    _, engine = database(tmp_path)
    alice, bob = "0x" + "a1" * 20, "0x" + "b2" * 20
    now = time.time()
    with engine.begin() as conn:
        hooks = {}
        for name, address, kinds in (
            ("limits", alice, ["exit.limit"]),
            ("fills", alice, ["bridge.filled"]),
            ("every", alice, None),
            ("bob", bob, ["exit.limit"]),
        ):
            hooks[name] = conn.execute(
                insert(a.webhooks)
                .values(address=address, url=f"https://{name}.example/", secret="x", kinds=kinds)
                .values(created_at=now)
                .returning(a.webhooks.c.id)
            ).scalar_one()
        draft = Draft(alice, "exit.failed", None, 0, 0, "", "", 0, {"attempt": 3}, ref="tdm1")
        assert store(conn, [draft], now) == 1
        assert store(conn, [draft], now) == 0  # stored once
    with engine.connect() as conn:
        got = sorted(conn.execute(select(a.deliveries.c.webhook_id)).scalars())
    assert got == sorted([hooks["limits"], hooks["every"]])

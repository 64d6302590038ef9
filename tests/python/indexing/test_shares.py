"""A vault's share balances as the indexer keeps them between ranges: the sum and the number of
holders with shares, kept as shares move, equal what counting every balance again gives."""

from __future__ import annotations

import random

from indexer.handler import _Shares


def test_sum_and_holders_kept_as_shares_move_equal_a_count_of_every_balance() -> None:
    rng = random.Random(11)
    holders = [f"0x{i:040x}" for i in range(30)]
    shares = _Shares()
    for _ in range(5_000):
        holder = rng.choice(holders)
        held = shares.balances.get(holder, 0)
        # Mints and burns, whole exits to exactly zero included (a burn never takes more than
        # is held, as on chain).
        delta = rng.choice([rng.randrange(1, 10**6), -held, -rng.randrange(0, held + 1)])
        shares.move(holder, delta)
        assert shares.total == sum(shares.balances.values())
        assert shares.holders == sum(1 for b in shares.balances.values() if b > 0)
        assert shares.holds(holder) == (shares.balances[holder] > 0)
    assert not shares.holds("0x" + "ff" * 20)  # never held

"""Every kind of notification. Followers hear about the vaults they hold shares in; an address
that watches a master (its watchlist) hears about the master's trades and suspensions too; a
follower copying through the CEX bridge hears about the orders copied for them."""

from __future__ import annotations

KINDS: dict[str, str] = {
    "position.opened": "a master you copy or watch bought a token its book did not hold",
    "position.closed": "a master you copy or watch sold all of a token",
    "position.changed": "a master you copy or watch added to or reduced a position",
    "exit.limit": "a limit of yours (stop-loss, take-profit, drawdown) fired its exit, in a vault "
    "or at an exchange",
    "exit.failed": "an exit of your limit at an exchange could not sell everything: the bridge "
    "gave up (its attempts spent, or the key refused), and what is left is yours to sell there",
    "limit.near": "your position came within your set distance of its stop-loss or drawdown limit",
    "copying.suspended": "copying of a master you copy or watch was suspended",
    "copying.resumed": "copying of a master you copy or watch resumed",
    "fee.charged": "a performance fee was charged on your position",
    "mirror.executed": "a pending mirror of a vault you are in was executed",
    "mirror.dropped": "a pending mirror of a vault you are in was dropped",
    "bridge.filled": "an order the CEX bridge copied for you filled, with its execution drag",
    "bridge.skipped": "an order the CEX bridge would have copied for you was below the "
    "exchange's minimum: skipped, its value carried to the next",
    "bridge.failed": "an order the CEX bridge copied for you was refused by the exchange",
    "bridge.expired": "an order the CEX bridge copied for you was not done within the bridge's "
    "time: what filled is booked, the rest was cancelled at the exchange",
}

# What the CEX bridge's orders alone tell (api.notifications.bridge), besides the exit.limit it
# shares with the vaults: exit.failed is an exit at an exchange given up.
BRIDGE_KINDS = frozenset(
    {"bridge.filled", "bridge.skipped", "bridge.failed", "bridge.expired", "exit.failed"}
)


def implied(kind: str, wanted: object) -> bool:
    """Whether a choice of kinds (an address's settings, a webhook's filter) that does not name
    ``kind`` still receives it: an exit given up (``exit.failed``) is sent to whoever wants to
    hear of their limits' exits (``exit.limit``), as choices made before the kind existed would
    otherwise leave a follower unaware of a position the bridge could not sell."""
    return (
        kind == "exit.failed"
        and isinstance(wanted, list | tuple | set | frozenset)
        and ("exit.limit" in wanted)
    )


# What a watcher (no capital in the vault) is told.
WATCHER_KINDS = frozenset(
    {
        "position.opened",
        "position.closed",
        "position.changed",
        "copying.suspended",
        "copying.resumed",
    }
)

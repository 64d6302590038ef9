"""Following the chain, for every service: new heads, the logs a service asks for from a durable
cursor, and reorganisations, which roll the cursor and what the service stored back together.

- ``heads``: new blocks by WebSocket subscription where the node offers it, by polling where not;
- ``cursor``: the last block fully processed and recent block hashes, in the service's database;
- ``reorg``: notices when the chain changed under the cursor and finds the common ancestor;
- ``chain_follower``: reads logs from the cursor to the head in ranges that adapt to the node,
  and hands them to the service's ``LogHandler`` in the transaction that moves the cursor;
- ``feeds``: where a price feed's answers are emitted (the aggregator behind a Chainlink proxy);
- ``protocol``: the async client on the node, the hub's address, and the vaults and aggregators
  the hub's own logs add to what a service follows.
"""

from tandem.follower.chain_follower import ChainFollower, ChainMoved, LogHandler
from tandem.follower.cursor import Cursor, CursorStore, CursorTables, cursor_tables
from tandem.follower.feeds import FeedSources
from tandem.follower.heads import Head, HeadSource
from tandem.follower.reorg import ReorgMonitor

__all__ = [
    "ChainFollower",
    "ChainMoved",
    "Cursor",
    "CursorStore",
    "CursorTables",
    "FeedSources",
    "Head",
    "HeadSource",
    "LogHandler",
    "ReorgMonitor",
    "cursor_tables",
]

"""Keepers: turn the protocol's on-chain limits into action within seconds of a price move.

The pipeline, one module per stage:

- ``watch``: the keeper's part of following the chain (the shared ``tandem.follower`` brings
  heads, logs from a durable cursor and reorganisations): the hub, its vaults and the aggregators
  behind the price feeds, what their events mean to the keeper, and what it stores;
- ``decide`` (with ``calls``): reads many followers per call (``followerStates``) and turns
  what is due into jobs: risk exits, peaks, crystallisations, pending-mirror slices;
- ``queue``: hands jobs to workers, in process or through Redis Streams for several keepers;
  each piece of work is claimed once, so no two keepers race for it;
- ``act`` and ``sender``: simulate, send with one nonce counter per key, bump stuck fees,
  confirm by receipt; a job whose effect is already on-chain counts as done;
- ``service``: wires these together with the schedule, metrics, logs and a graceful stop.

Every decision is made from the chain's current state, not from the events alone: events only
say *when* to look. A keeper that crashed, missed a block or lost a race therefore recovers by
looking again, and the contracts make every action safe to repeat.
"""

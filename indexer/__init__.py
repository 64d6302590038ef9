"""Indexer: turns the protocol's events into trader metrics and rankings anyone can recompute.

- ``metrics``: pure, typed functions over plain inputs (a master's performance index, round
  trips, followers' outcomes): every formula of ``METRICS.md``, and nothing that reads a chain
  or a database;
- ``rankings``: one row per (master, window) with every metric, the ``master_rankings`` table
  that holds them, an incremental recompute for the masters a block touched, and the top-N
  query by any metric and window with the eligibility filters.
"""

"""The indexer: every protocol event into the project's database, decoded, with per-vault time
series, correct under reorganisations; and from them trader metrics and rankings anyone can
recompute.

- ``handler``: the chain follower's ``LogHandler``: what each event stores, what a reorganisation
  forgets, and the time-series points computed at the end of each block;
- ``writer``: a range's rows written, and on PostgreSQL the writer process that stores them with
  the cursor while the next range is decoded;
- ``service``: ``tandem indexer run | status | reindex``: connecting, following heads, metrics;
- ``reading``: what readers (rankings, the API) need: the final block, balances, time series;
- ``monitoring``: Prometheus metrics and log lines;
- ``metrics``: pure, typed functions over plain inputs (a master's performance index, round
  trips, followers' outcomes): every formula of ``METRICS.md``, and nothing that reads a chain
  or a database;
- ``rankings``: one row per (master, window) with every metric, the ``master_rankings`` table
  that holds them, an incremental recompute for the masters a block touched, and the top-N
  query by any metric and window with the eligibility filters.
"""

"""The indexer service: every protocol event into the project's database, decoded, with per-vault
time series, correct under reorganisations.

- ``handler``: the chain follower's ``LogHandler``: what each event stores, what a reorganisation
  forgets, and the time-series points computed at the end of each block;
- ``service``: ``tandem indexer run | status | reindex``: connecting, following heads, metrics;
- ``reading``: what readers (rankings, the API) need: the final block, balances, time series;
- ``monitoring``: Prometheus metrics and log lines.
"""

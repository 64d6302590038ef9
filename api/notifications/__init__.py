"""Notifications: what each address is told, derived from the rows the indexer stored, kept in
the ``notifications`` table (one monotonic id per row, per address in order), and delivered by
webhooks signed with HMAC-SHA256, with retries, backoff and a delivery log.

- ``kinds``: every kind of notification, and who gets it;
- ``produce``: notifications from indexed rows, and ``notifications_after`` for readers (the
  account's list, a live stream);
- ``bridge``: notifications from the CEX bridge's orders (filled, skipped, failed, its exits);
- ``webhooks``: signing, and the delivery of due webhooks with their attempts;
- ``worker``: the loop one process at a time runs (a lease in the database): produce, deliver.
"""

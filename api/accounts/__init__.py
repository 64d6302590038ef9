"""Accounts: Sign-In with Ethereum (EIP-4361), sessions, a second factor (TOTP), and what a
signed-in address may do with its own records: a watchlist of masters, notification settings,
webhooks (with their delivery log) and its notifications.

- ``crypto``: random tokens, hashes, and encryption at rest with the settings' key;
- ``signin``: nonces and the checks of a signed message;
- ``auth``: the session of a request (bearer token or cookie) and the second factor;
- ``schemas``: request and response models;
- ``router``: the endpoints under ``/v1/auth`` and ``/v1/account``.
"""

"""The integrator API: read-only REST under ``/v1`` over the indexer's database.

Services import ``tandem``, never each other, with one exception made here on purpose: the API
reads the tables the indexer writes, so it imports the indexer's read side (``indexer.reading``,
``indexer.inputs``, ``indexer.rankings``, ``indexer.metrics``) rather than a copy of it. It
imports nothing that writes, follows a chain or runs a service.

- ``app``: the application factory (``create_app``) and the one uvicorn's workers call;
- ``database``: the engine, and the final block every answer is read at;
- ``problems``: RFC 9457 problem documents for every error;
- ``schemas``: the query models (``queries``) and the response models (``resources``);
- ``routers``: one per resource (protocol, masters, vaults, followers) and the health checks;
- ``serve``: ``tandem api serve``.
"""

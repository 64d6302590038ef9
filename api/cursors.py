"""Opaque page cursors: the last row's sort key, and the query it belongs to, in URL-safe base64.

A cursor names values (a metric's value and a master; a block and a log index), never an
offset, so the next page starts after the last row shown even when rows were added, removed or
reordered meanwhile: every row that stays is listed exactly once.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from api.problems import ProblemException, bad_request


def encode(query: list[Any], key: list[Any]) -> str:
    text = json.dumps({"q": query, "k": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: str, query: list[Any]) -> list[Any]:
    """The key in ``cursor``, which must have been made for ``query``."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key = data["k"]
        made_for = data["q"]
    except (ValueError, binascii.Error, KeyError, TypeError):
        raise _invalid("it is not a cursor this API gave") from None
    if not isinstance(key, list):
        raise _invalid("it is not a cursor this API gave")
    if made_for != query:
        raise _invalid("it was given for another sort, order or window")
    return key


def _invalid(why: str) -> ProblemException:
    return bad_request(
        "invalid-cursor",
        "Invalid cursor",
        f"The cursor cannot be used: {why}. Pass a next_cursor exactly as a page of the same "
        "query gave it, or leave cursor out to start at the first page.",
    )


def invalid_key() -> ProblemException:
    return _invalid("it is not a cursor this API gave")

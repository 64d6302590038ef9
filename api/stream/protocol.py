"""The stream's wire protocol: JSON text frames, the subscribe message a client sends, the
topics it names, and the error frames (each with the close code that follows it) that say what
was wrong and what to do."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from eth_utils.address import is_address, to_checksum_address

# Close codes (4000-4999 are the application's): each error frame names the one that follows.
INVALID = 4400  # a message or subscription the server cannot use: fix it, then reconnect
EXPIRED = 4410  # the cursor is older than the journal keeps: read state again, then subscribe
TIMEOUT = 4408  # no subscribe message in time
TOO_SLOW = 4429  # the client did not keep up: reconnect with its last cursor
UNAVAILABLE = 4503  # the database does not answer, or the server is full: try again later

TOPICS_HELP = (
    "a topic is `protocol`, `prices`, `prices:<asset>`, `master:<address>`, `vault:<address>` "
    "or `follower:<address>` (addresses as 0x and 40 hexadecimal digits)"
)
ADDRESSED = ("master", "vault", "follower", "prices")


class StreamError(Exception):
    """Told to the client as an error frame, then the connection is closed with ``code``."""

    def __init__(self, error: str, detail: str, code: int = INVALID) -> None:
        super().__init__(detail)
        self.error, self.detail, self.code = error, detail, code

    def frame(self) -> str:
        return json.dumps(
            {"type": "error", "error": self.error, "detail": self.detail, "close_code": self.code}
        )


@dataclass(frozen=True)
class Subscription:
    topics: frozenset[str]
    cursor: int | None


def parse_topic(topic: Any) -> str:
    """``topic`` in its one written form (addresses checksummed), or ValueError saying why."""
    if not isinstance(topic, str):
        raise ValueError(f"{json.dumps(topic)} is not a string")
    if topic in ("protocol", "prices"):
        return topic
    kind, sep, value = topic.partition(":")
    if not sep or kind not in ADDRESSED:
        raise ValueError(f"{topic!r} is not a topic")
    if not (value.startswith(("0x", "0X")) and is_address(value)):
        raise ValueError(f"{topic!r}: {value!r} is not an address")
    return f"{kind}:{to_checksum_address(value)}"


def parse_cursor(cursor: Any) -> int | None:
    if cursor is None:
        return None
    if isinstance(cursor, bool) or not isinstance(cursor, str | int):
        raise ValueError("cursor must be a string of digits, as a message's `cursor` gave it")
    text = str(cursor)
    if not text.isdigit() or len(text) > 19:
        raise ValueError(
            f"cursor {json.dumps(cursor)} is not one this API gave: pass a message's `cursor` "
            "exactly, or leave it out to start from now"
        )
    return int(text)


def parse_subscribe(text: str, max_topics: int) -> Subscription:
    """The client's subscribe message, or a ``StreamError`` listing every problem with it."""
    try:
        message = json.loads(text)
    except ValueError:
        raise StreamError(
            "invalid-message",
            'The message is not JSON. Send {"type": "subscribe", "topics": [...], '
            '"cursor": "<optional>"}.',
        ) from None
    if not isinstance(message, dict) or message.get("type") != "subscribe":
        raise StreamError(
            "invalid-message",
            'The first message must be {"type": "subscribe", "topics": [...]} (with an optional '
            '"cursor"); no other message is taken before it.',
        )
    problems: list[str] = []
    unknown = sorted(set(message) - {"type", "topics", "cursor"})
    if unknown:
        problems.append(f"unknown fields {unknown}: a subscribe message has topics and cursor")
    topics = message.get("topics")
    found: set[str] = set()
    if not isinstance(topics, list) or not topics:
        problems.append(f"topics must be a non-empty list: {TOPICS_HELP}")
    elif len(topics) > max_topics:
        problems.append(
            f"{len(topics)} topics, more than the {max_topics} one subscription may name: "
            "split them over several connections"
        )
    else:
        for topic in topics:
            try:
                found.add(parse_topic(topic))
            except ValueError as exc:
                problems.append(f"{exc}: {TOPICS_HELP}")
    cursor = None
    try:
        cursor = parse_cursor(message.get("cursor"))
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise StreamError("invalid-subscription", "; ".join(problems) + ".")
    return Subscription(frozenset(found), cursor)


def message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))

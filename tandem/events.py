"""The protocol's events, decoded from logs with the interfaces' ABIs (never an implementation's
or a test contract's): one table from each event's first topic to its decoder, for every service.

``Decoder.decode`` turns a log into an ``Event``: the event's name, where and when it was logged,
and its arguments by name as plain Python values (ints, checksummed addresses, ``0x`` hex for
bytes, lists for arrays), ready for a database row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_typing import ChecksumAddress
from eth_utils.abi import collapse_if_tuple, event_abi_to_log_topic
from eth_utils.address import to_checksum_address as _checksum
from hexbytes import HexBytes

from tandem import artifacts
from tandem.config import Settings

# Where each event comes from: the interface whose ABI decodes it.
SOURCES: dict[str, str] = {
    "hub": "ITandemHub",
    "vault": "ITandemVault",
    "feed": "IChainlinkAggregator",
}

# The interfaces' enums, by value (the ABI gives only uint8): names in snake case, as stored.
SKIP_REASONS = ("no_pool_position", "below_min_order", "master_suspended")  # SkipReason
EXIT_REASONS = ("none", "stop_loss", "max_drawdown", "take_profit")  # ExitReason
MIRROR_DROPS = ("expired", "master_sold", "superseded")  # MirrorDrop


def enum_name(names: Sequence[str], value: int) -> str:
    """An enum member's name, or its number for a member this code does not know yet."""
    return names[value] if 0 <= value < len(names) else str(value)


@dataclass(frozen=True)
class Event:
    """One decoded log."""

    name: str
    source: str  # hub | vault | feed: the kind of contract that emits it
    address: str
    block_number: int
    block_hash: str
    log_index: int
    tx_hash: str
    timestamp: int | None  # the block's, when the node puts it in the log (most do)
    args: dict[str, Any]


@functools.lru_cache(maxsize=1 << 16)
def checksum(address: str) -> ChecksumAddress:
    """``address`` checksummed. A few contracts and people make most of the protocol's events:
    remembered, each costs a keccak once rather than at every event."""
    return _checksum(address)


def word_reader(kind: str) -> Callable[[bytes], Any] | None:
    """How to read a static elementary value from its 32-byte word, or None for other types
    (decoded by eth_abi)."""
    if kind.endswith("]") or kind.startswith("("):
        return None
    if kind == "address":
        return lambda word: checksum("0x" + word[12:].hex())
    if kind == "bool":
        return lambda word: word != bytes(32)
    if kind.startswith("uint"):
        return lambda word: int.from_bytes(word, "big")
    if kind.startswith("int"):
        return lambda word: int.from_bytes(word, "big", signed=True)
    if kind == "bytes32":
        return lambda word: "0x" + word.hex()
    return None


def _dynamic(kind: str) -> bool:
    return kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("(")


class _Malformed(Exception):
    """Data a reader cannot take as its type says: eth_abi is asked instead."""


def _word(data: bytes, at: int) -> bytes:
    word = data[at : at + 32]
    if len(word) != 32:
        raise _Malformed
    return word


def _offset(data: bytes, at: int) -> int:
    value = int.from_bytes(_word(data, at), "big")
    if value > len(data):
        raise _Malformed
    return value


def _data_reader(kind: str) -> Callable[[bytes, int], Any] | None:
    """How to read a value of ``kind`` whose head word is at a given offset of an event's data:
    a static elementary value, a one-dimensional array of them, or ``bytes``."""
    if (read := word_reader(kind)) is not None:
        return lambda data, at: read(_word(data, at))
    if kind == "bytes":

        def read_bytes(data: bytes, at: int) -> str:
            start = _offset(data, at)
            length = _offset(data, start)
            value = data[start + 32 : start + 32 + length]
            if len(value) != length:
                raise _Malformed
            return "0x" + value.hex()

        return read_bytes
    if kind.endswith("[]") and (element := word_reader(kind[:-2])) is not None:

        def read_array(data: bytes, at: int) -> list[Any]:
            start = _offset(data, at)
            length = _offset(data, start)
            first = start + 32
            if first + 32 * length > len(data):
                raise _Malformed
            return [element(data[i : i + 32]) for i in range(first, first + 32 * length, 32)]

        return read_array
    return None


class _EventAbi:
    def __init__(self, source: str, abi: Mapping[str, Any]) -> None:
        self.source = source
        self.name: str = abi["name"]
        inputs = abi["inputs"]
        self.indexed = [(i["name"], collapse_if_tuple(i)) for i in inputs if i["indexed"]]
        self.data = [(i["name"], collapse_if_tuple(i)) for i in inputs if not i["indexed"]]
        self.order = [i["name"] for i in inputs]
        # Values are read word by word, at a fraction of eth_abi's cost, when every field is a
        # static elementary value or, in the data, a one-dimensional array of them or `bytes`
        # (every event of the protocol). Anything else, or data whose offsets and lengths do not
        # hold, goes to eth_abi, which decodes it or says what is wrong.
        self.topic_readers = [word_reader(kind) for _, kind in self.indexed]
        self.data_readers = [_data_reader(kind) for _, kind in self.data]
        self.fast = all(r is not None for r in (*self.topic_readers, *self.data_readers))
        # Data of static values only has exactly one word per value.
        self.data_size = None if any(_dynamic(k) for _, k in self.data) else 32 * len(self.data)
        # Where each argument is, in the event's order: its topic's index and how to read it,
        # or its head word's offset in the data and how to read from there.
        topic_at = {name: i + 1 for i, (name, _) in enumerate(self.indexed)}
        data_at = {name: 32 * i for i, (name, _) in enumerate(self.data)}
        topic_read = dict(zip((n for n, _ in self.indexed), self.topic_readers, strict=True))
        data_read = dict(zip((n for n, _ in self.data), self.data_readers, strict=True))
        self.plan: list[tuple[str, int, Any, bool]] = [
            (name, topic_at[name], topic_read[name], True)
            if name in topic_at
            else (name, data_at[name], data_read[name], False)
            for name in self.order
        ]

    def args(self, topics: Sequence[bytes], data: bytes) -> dict[str, Any]:
        size_holds = self.data_size is None or len(data) == self.data_size
        if self.fast and size_holds and len(topics) == len(self.indexed) + 1:
            values: dict[str, Any] = {}
            try:
                for name, at, read, in_topic in self.plan:
                    values[name] = read(topics[at]) if in_topic else read(data, at)
            except _Malformed:
                return self._decoded(topics, data)
            return values
        return self._decoded(topics, data)

    def _decoded(self, topics: Sequence[bytes], data: bytes) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for (name, kind), topic in zip(self.indexed, topics[1:], strict=True):
            # An indexed dynamic value is logged as its hash: the hash is all there is.
            values[name] = (
                HexBytes(topic).to_0x_hex() if _dynamic(kind) else abi_decode([kind], topic)[0]
            )
        decoded = abi_decode([kind for _, kind in self.data], data)
        values.update(zip((name for name, _ in self.data), decoded, strict=True))
        return {name: plain(values[name]) for name in self.order}


def plain(value: Any) -> Any:
    """An ABI value as a plain Python one: checksummed addresses, ``0x`` hex bytes, lists."""
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        return checksum(value)
    if isinstance(value, bytes | bytearray):
        return HexBytes(value).to_0x_hex()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """``value`` for a JSON column: integers as decimal strings (JSON numbers stop being exact
    at 2**53), booleans as booleans."""
    kind = type(value)  # exact types first: this runs for every argument of every event
    if kind is int:
        return str(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is dict:  # an event's arguments: their plain values converted here, without a call
        return {
            k: str(v) if type(v) is int else v if type(v) is str else jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class Decoder:
    """The protocol's events by first topic. ``names`` limits it to some events (all by
    default); an event name is unique across the hub, the vault and the feed."""

    def __init__(
        self, settings: Settings | None = None, names: Iterable[str] | None = None
    ) -> None:
        wanted = set(names) if names is not None else None
        self._by_topic: dict[bytes, _EventAbi] = {}
        self._by_name: dict[str, bytes] = {}
        for source, interface in SOURCES.items():
            for item in artifacts.load(interface, settings).abi:
                if item["type"] != "event" or (wanted is not None and item["name"] not in wanted):
                    continue
                topic = bytes(event_abi_to_log_topic(item))  # type: ignore[arg-type]
                self._by_topic[topic] = _EventAbi(source, item)
                self._by_name[item["name"]] = topic
        if wanted is not None and (missing := wanted - set(self._by_name)):
            raise KeyError(f"no such events in the interfaces: {', '.join(sorted(missing))}")

    @property
    def topics(self) -> list[bytes]:
        """Every known event's first topic (what to ask ``eth_getLogs`` for)."""
        return list(self._by_topic)

    def topic(self, name: str) -> bytes:
        return self._by_name[name]

    def source(self, name: str) -> str:
        return self._by_topic[self._by_name[name]].source

    def decode(self, entry: Mapping[str, Any]) -> Event | None:
        """``entry`` (a log as web3 returns it) decoded, or None for an event not known here."""
        topics = [bytes(t) for t in entry["topics"]]
        event = self._by_topic.get(topics[0]) if topics else None
        if event is None:
            return None
        timestamp = entry.get("blockTimestamp")
        return Event(
            name=event.name,
            source=event.source,
            address=checksum(entry["address"]),
            block_number=int(entry["blockNumber"]),
            block_hash=_hex(entry["blockHash"]),
            log_index=int(entry["logIndex"]),
            tx_hash=_hex(entry["transactionHash"]),
            timestamp=None if timestamp is None else _int(timestamp),
            args=event.args(topics, _bytes(entry["data"])),
        )


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


# web3 gives bytes (HexBytes); raw answers give hex text. Each converted the cheap way.
def _hex(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else HexBytes(value).to_0x_hex()


def _bytes(value: Any) -> bytes:
    # Plain bytes: slicing a HexBytes costs several times more.
    return value if type(value) is bytes else bytes(HexBytes(value))

"""Decoding logs with the interfaces' ABIs: names, arguments as plain values, arrays, indexed and
unindexed arguments, unknown events, and JSON-safe integers."""

from __future__ import annotations

import json

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from web3 import Web3

from tandem.config import Settings
from tandem.events import EXIT_REASONS, Decoder, enum_name, jsonable

VAULT = "0x" + "11" * 20
FOLLOWER = "0x" + "aB" * 20
TOKENS = ["0x" + "22" * 20, "0x" + "33" * 20]
BLOCK_HASH = "0x" + "44" * 32
TX_HASH = "0x" + "55" * 32


def log(topics: list[bytes], data: bytes, **extra: object) -> dict[str, object]:
    return {
        "address": VAULT,
        "topics": topics,
        "data": data,
        "blockNumber": 7,
        "blockHash": bytes.fromhex(BLOCK_HASH[2:]),
        "transactionHash": bytes.fromhex(TX_HASH[2:]),
        "logIndex": 3,
        **extra,
    }


def topic_of(signature: str) -> bytes:
    return keccak(text=signature)


def test_an_exit_to_base_decodes_with_its_arrays_and_its_indexed_follower(
    settings: Settings,
) -> None:
    decoder = Decoder(settings)
    signature = "ExitedToBase(address,uint256,address[],uint256[],uint256)"
    assert decoder.topic("ExitedToBase") == topic_of(signature)
    amounts = [2**256 - 1, 5]
    data = encode(["uint256", "address[]", "uint256[]", "uint256"], [10**27, TOKENS, amounts, 99])
    follower_topic = bytes(12) + bytes.fromhex(FOLLOWER[2:])
    event = decoder.decode(log([topic_of(signature), follower_topic], data, blockTimestamp="0x10"))
    assert event is not None
    assert (event.name, event.source, event.block_number, event.log_index) == (
        "ExitedToBase",
        "vault",
        7,
        3,
    )
    assert (event.block_hash, event.tx_hash, event.timestamp) == (BLOCK_HASH, TX_HASH, 16)
    # Addresses come back checksummed, in the event's own argument order.
    assert list(event.args) == ["follower", "shares", "tokens", "amounts", "baseOut"]
    assert event.args["follower"] == Web3.to_checksum_address(FOLLOWER)
    assert event.args["tokens"] == [
        "0x2222222222222222222222222222222222222222",
        "0x3333333333333333333333333333333333333333",
    ]
    assert event.args["amounts"] == amounts and event.args["baseOut"] == 99
    assert event.address == "0x1111111111111111111111111111111111111111"


def test_a_feed_answer_decodes_a_negative_indexed_int(settings: Settings) -> None:
    decoder = Decoder(settings)
    signature = "AnswerUpdated(int256,uint256,uint256)"
    current = encode(["int256"], [-42])
    round_id = encode(["uint256"], [9])
    event = decoder.decode(log([topic_of(signature), current, round_id], encode(["uint256"], [5])))
    assert event is not None and event.source == "feed" and event.timestamp is None
    assert event.args == {"current": -42, "roundId": 9, "updatedAt": 5}


def test_unknown_events_are_not_decoded_and_limits_are_checked(settings: Settings) -> None:
    decoder = Decoder(settings, ["Traded"])
    assert decoder.topics == [decoder.topic("Traded")]
    other = topic_of("OwnershipTransferred(address,address)")
    assert decoder.decode(log([other], b"")) is None
    assert decoder.decode(log([], b"")) is None
    with pytest.raises(KeyError, match="NoSuchEvent"):
        Decoder(settings, ["Traded", "NoSuchEvent"])


def test_json_keeps_every_integer_exact_and_enums_have_names() -> None:
    args = {"amount": 2**256 - 1, "ok": True, "list": [1, -2], "who": FOLLOWER}
    assert json.loads(json.dumps(jsonable(args))) == {
        "amount": str(2**256 - 1),
        "ok": True,
        "list": ["1", "-2"],
        "who": FOLLOWER,
    }
    assert enum_name(EXIT_REASONS, 1) == "stop_loss"
    assert enum_name(EXIT_REASONS, 9) == "9"  # a member added later still shows


def test_every_event_decodes_as_eth_abi_decodes_it(settings: Settings) -> None:
    """Events of static types are read word by word, not by eth_abi: for every event of the
    interfaces, with values at the edges of their types, both ways give the same arguments."""
    import random

    from eth_utils.abi import collapse_if_tuple, event_abi_to_log_topic

    from tandem import artifacts
    from tandem.events import SOURCES

    rng = random.Random(7)

    def value(kind: str) -> object:
        if kind == "address":
            return Web3.to_checksum_address(rng.randbytes(20))
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "bytes32":
            return rng.randbytes(32)
        if kind.endswith("[]"):
            return [value(kind[:-2]) for _ in range(rng.randrange(3))]
        if kind == "bytes":
            return rng.randbytes(rng.randrange(70))
        bits = int(kind.lstrip("uint") or 256)
        if kind.startswith("u"):
            return rng.choice([0, 1, 2**bits - 1, rng.randrange(2**bits)])
        return rng.choice([-(2 ** (bits - 1)), -1, 0, 2 ** (bits - 1) - 1])

    decoder = Decoder(settings)
    checked = 0
    for interface in SOURCES.values():
        for item in artifacts.load(interface, settings).abi:
            if item["type"] != "event":
                continue
            for _ in range(5):
                inputs = [(i, collapse_if_tuple(i)) for i in item["inputs"]]
                values = {i["name"]: value(kind) for i, kind in inputs}
                topics = [bytes(event_abi_to_log_topic(item))]  # type: ignore[arg-type]
                topics += [encode([k], [values[i["name"]]]) for i, k in inputs if i["indexed"]]
                unindexed = [(i["name"], k) for i, k in inputs if not i["indexed"]]
                data = encode([k for _, k in unindexed], [values[n] for n, _ in unindexed])
                event = decoder.decode(log(topics, data))
                assert event is not None
                slow = decoder._by_topic[topics[0]]._decoded(topics, data)
                assert event.args == slow, item["name"]
                checked += 1
    assert checked >= 5 * 30  # every event of the hub, the vault and the feed


@pytest.mark.parametrize(
    "damage",
    ["offset past the end", "array longer than the data", "bytes longer than the data", "cut"],
)
def test_data_that_does_not_hold_is_refused_as_eth_abi_refuses_it(
    settings: Settings, damage: str
) -> None:
    """The word-by-word reader trusts no offset or length: damaged data goes to eth_abi, which
    refuses it, rather than being read into wrong values."""
    from eth_abi.exceptions import DecodingError

    decoder = Decoder(settings)
    follower = Web3.to_checksum_address("0x" + "ab" * 20)
    exited = topic_of("ExitedToBase(address,uint256,address[],uint256[],uint256)")
    topics = [exited, encode(["address"], [follower])]
    tokens = [Web3.to_checksum_address("0x" + "cd" * 20)]
    data = bytearray(encode(["uint256", "address[]", "uint256[]", "uint256"], [5, tokens, [7], 9]))
    assert decoder.decode(log(topics, bytes(data))) is not None  # whole, it reads
    if damage == "offset past the end":
        data[32:64] = (len(data) + 32).to_bytes(32, "big")  # where the tokens array starts
    elif damage == "array longer than the data":
        start = int.from_bytes(data[32:64], "big")
        data[start : start + 32] = (1000).to_bytes(32, "big")
    elif damage == "bytes longer than the data":
        route = topic_of("RouteSet(address,address,address,bytes)")
        topics = [route, encode(["address"], [follower]), encode(["address"], [follower])]
        data = bytearray(encode(["address", "bytes"], [follower, b"\x01" * 40]))
        data[64:96] = (41 * 32).to_bytes(32, "big")
    else:
        data = data[:-32]
    with pytest.raises(DecodingError):
        decoder.decode(log(topics, bytes(data)))

"""Field types shared by the API's models: addresses, and integers too big for JSON numbers."""

from __future__ import annotations

from typing import Annotated

from eth_utils.address import is_address, to_checksum_address
from pydantic import AfterValidator, PlainSerializer, WithJsonSchema

BIG_INTEGER_NOTE = (
    "Token amounts, prices, shares and USD values are the chain's integers (USD with 18 "
    "decimals), sent as JSON strings of decimal digits: a JSON number loses precision past "
    "2**53, and these go up to 2**256."
)


def _checksummed(value: str) -> str:
    if not (value.startswith("0x") and is_address(value)):
        raise ValueError("not an address: give 0x followed by 40 hexadecimal digits")
    return str(to_checksum_address(value))


Address = Annotated[
    str,
    AfterValidator(_checksummed),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^0x[0-9a-fA-F]{40}$",
            "description": "an address; answers give it EIP-55 checksummed",
        }
    ),
]

BigInt = Annotated[
    int,
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^-?[0-9]+$",
            "description": "an exact integer as decimal digits",
        }
    ),
]

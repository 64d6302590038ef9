"""What a master trade's event does not say and the bridge needs: the master's fraction (of
equity for a buy, of the position for a sale), read from the chain as the vault sized the
pool's part of the same trade, and the trade's block (its time and hash)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from eth_typing import ChecksumAddress

from tandem.config import Settings

ZERO = Decimal(0)
WAD = 10**18
# The vault's events that move the master's book: what the vault's state one block before a
# trade misses of the trades, deposits and withdrawals earlier in the same block.
MASTER_BOOK_EVENTS = ("Traded", "MasterDeposited", "MasterWithdrew")


@dataclass(frozen=True)
class Context:
    """The master's fraction, and the trade's block: its time (Unix seconds) and hash."""

    fraction: Decimal
    block_time: float | None
    block_hash: str | None = None


class ContextSource(Protocol):
    async def context(self, trade: dict[str, Any], side: str, log_index: int) -> Context: ...


class ChainContext:
    """The fraction as the vault sized the pool's part: a buy spends the value spent over the
    master's equity (``equities()``), a sale sells the amount sold over the master's holding
    (``books(tokenIn)``), both as they stood just before the trade: the vault's state one block
    before, moved by the vault's own events earlier in the trade's block (a trade in the block
    before it would otherwise be missed: a master closing a position in two sales of one block
    would be copied as half a close). Each is an exact integer from the chain; the fraction is
    their quotient. A feed answer moved earlier in the same block is not seen (the equity is
    valued at the block before's prices, the trades of the block at their own)."""

    def __init__(self, settings: Settings) -> None:
        from tandem import artifacts, chain
        from tandem.events import Decoder

        self.w3 = chain.connect(settings.rpc_url, settings=settings)
        self.vault_abi = artifacts.load("ITandemVault", settings).abi
        self.hub_abi = artifacts.load("ITandemHub", settings).abi
        self.decoder = Decoder(settings, names=MASTER_BOOK_EVENTS)

    def _earlier(self, vault: ChecksumAddress, block: int, log_index: int) -> list[Any]:
        """The vault's events moving the master's book, in ``block`` before ``log_index``."""
        logs = self.w3.eth.get_logs(
            {
                "address": vault,
                "fromBlock": block,
                "toBlock": block,
                "topics": [["0x" + self.decoder.topic(n).hex() for n in MASTER_BOOK_EVENTS]],
            }
        )
        events = (self.decoder.decode(entry) for entry in logs)
        return [e for e in events if e is not None and e.log_index < log_index]

    def _read(self, trade: dict[str, Any], side: str, log_index: int) -> Context:
        block = int(trade["block"])
        vault = self.w3.eth.contract(address=trade["vault"], abi=self.vault_abi)
        before = block - 1
        master_in = int(trade["masterIn"])
        earlier = self._earlier(vault.address, block, log_index)
        if side == "buy":
            equity = int(vault.functions.equities().call(block_identifier=before)[0])
            equity += sum(self._value_moved(vault, e, before) for e in earlier)
            spent = master_in * int(trade["priceIn"]) // WAD
            fraction = Decimal(spent) / Decimal(equity) if equity > 0 else ZERO
        else:
            token = trade["tokenIn"]
            held = int(vault.functions.books(token).call(block_identifier=before)[0])
            held += sum(_amount_moved(e, token) for e in earlier)
            fraction = Decimal(master_in) / Decimal(held) if held > 0 else ZERO
        header = self.w3.eth.get_block(block)
        return Context(
            min(fraction, Decimal(1)),
            float(header["timestamp"]),
            "0x" + bytes(header["hash"]).hex(),
        )

    def _value_moved(self, vault: Any, e: Any, before: int) -> int:
        """What an earlier event of the block moved the master's equity by, in USD with 18
        decimals: a trade at its own prices, a deposit or withdrawal at the oracle's."""
        a = e.args
        if e.name == "Traded":
            return int(a["masterOut"]) * int(a["priceOut"]) // WAD - (
                int(a["masterIn"]) * int(a["priceIn"]) // WAD
            )
        token = a["token"] if e.name == "MasterWithdrew" else vault.functions.baseAsset().call()
        hub = self.w3.eth.contract(address=vault.functions.hub().call(), abi=self.hub_abi)
        value = int(a["amount"]) * int(hub.functions.priceOf(token).call(block_identifier=before))
        return value // WAD if e.name == "MasterDeposited" else -(value // WAD)

    async def context(self, trade: dict[str, Any], side: str, log_index: int) -> Context:
        return await asyncio.to_thread(self._read, trade, side, log_index)


def _amount_moved(e: Any, token: str) -> int:
    """What an earlier event of the block moved the master's book of ``token`` by."""
    a, token = e.args, token.lower()
    if e.name == "Traded":
        moved = int(a["masterOut"]) if a["tokenOut"].lower() == token else 0
        return moved - (int(a["masterIn"]) if a["tokenIn"].lower() == token else 0)
    if e.name == "MasterWithdrew":
        return -int(a["amount"]) if a["token"].lower() == token else 0
    return 0  # a deposit is of the base asset, which is never sold as a position

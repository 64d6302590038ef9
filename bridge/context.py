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
from tandem.events import checksum

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
    master's equity, a sale sells the amount sold over the master's holding (``books(tokenIn)``),
    both as they stood just before the trade: the vault's books one block before, moved by the
    vault's own events earlier in the trade's block (a trade in the block before it would
    otherwise be missed: a master closing a position in two sales of one block would be copied
    as half a close). The equity is valued as the vault values it (``_equities``): each token's
    master book at its price, floored token by token, the price being the hub's ``priceOf`` one
    block before, or the answer the token's feed moved to earlier in the block, converted as
    ``priceOf`` converts it. A block in which neither the vault's book nor any feed moved before
    the trade takes the vault's own ``equities()`` one block before (the same number, in one
    call). Each is an exact integer from the chain; the fraction is their quotient.

    Why logs and calls at the block before rather than the state just before the transaction:
    no standard JSON-RPC call reads state at a transaction index (``debug_traceTransaction``'s
    prestate or ``trace_callMany`` would, but many providers serve neither), while
    ``eth_getLogs`` and ``eth_call`` at a block are served by every node and provider. What
    moves the equity within a block without a log of the vault or a feed (a proxy re-pointed
    at another aggregator, a hub's ``setAsset``) is not seen."""

    def __init__(self, settings: Settings) -> None:
        from tandem import artifacts, chain
        from tandem.events import Decoder

        self.w3 = chain.connect(settings.rpc_url, settings=settings)
        self.vault_abi = artifacts.load("ITandemVault", settings).abi
        self.hub_abi = artifacts.load("ITandemHub", settings).abi
        self.proxy_abi = artifacts.load("IChainlinkProxy", settings).abi
        self.decoder = Decoder(settings, names=MASTER_BOOK_EVENTS)
        self.answer_topic = (
            "0x" + Decoder(settings, names=("AnswerUpdated",)).topic("AnswerUpdated").hex()
        )
        self._hubs: dict[str, ChecksumAddress] = {}  # vault -> its hub (immutable)

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
            answers = self._answers(block, log_index)
            if earlier or answers:
                equity = self._equity(vault, block, log_index, earlier, answers)
            else:  # nothing moved it in the block: the vault's own valuation the block before
                equity = int(vault.functions.equities().call(block_identifier=before)[0])
            spent = master_in * int(trade["priceIn"]) // WAD
            fraction = Decimal(spent) / Decimal(equity) if equity > 0 else ZERO
        else:
            token = trade["tokenIn"]
            held = int(vault.functions.books(token).call(block_identifier=before)[0])
            held += sum(_amount_moved(e, token, None) for e in earlier)
            fraction = Decimal(master_in) / Decimal(held) if held > 0 else ZERO
        header = self.w3.eth.get_block(block)
        return Context(
            min(fraction, Decimal(1)),
            float(header["timestamp"]),
            "0x" + bytes(header["hash"]).hex(),
        )

    def _answers(self, block: int, log_index: int) -> list[Any]:
        """Every feed's ``AnswerUpdated`` in ``block`` before ``log_index``, in order (one
        query, whichever feeds they are: most blocks have none of the hub's)."""
        logs = self.w3.eth.get_logs(
            {"fromBlock": block, "toBlock": block, "topics": [self.answer_topic]}
        )
        earlier = [entry for entry in logs if int(entry["logIndex"]) < log_index]
        return sorted(earlier, key=lambda entry: int(entry["logIndex"]))

    def _equity(
        self, vault: Any, block: int, log_index: int, earlier: list[Any], answers: list[Any]
    ) -> int:
        """The master's equity just before the trade at ``log_index``, in USD with 18
        decimals, as the vault's ``_equities`` computes it."""
        before = block - 1
        base = vault.functions.baseAsset().call()
        tokens = list(vault.functions.tokens().call(block_identifier=before))
        for e in earlier:  # a token an earlier trade of the block brought in
            if e.name == "Traded" and e.args["tokenOut"] not in tokens:
                tokens.append(e.args["tokenOut"])
        held = {
            token: int(vault.functions.books(token).call(block_identifier=before)[0])
            + sum(_amount_moved(e, token, base) for e in earlier)
            for token in tokens
        }
        held = {token: amount for token, amount in held.items() if amount > 0}
        hub = self.w3.eth.contract(address=self._hub_of(vault), abi=self.hub_abi)
        moved = self._moved_prices(hub, list(held), block, answers) if answers else {}
        equity = 0
        for token, amount in held.items():
            price = moved.get(token)
            if price is None:
                price = int(hub.functions.priceOf(token).call(block_identifier=before))
            equity += amount * price // WAD  # the vault's _value: mulDiv, rounded down
        return equity

    def _hub_of(self, vault: Any) -> ChecksumAddress:
        if vault.address not in self._hubs:
            self._hubs[vault.address] = vault.functions.hub().call()
        return self._hubs[vault.address]

    def _moved_prices(
        self, hub: Any, tokens: list[str], block: int, answers: list[Any]
    ) -> dict[str, int]:
        """token -> its price after the last of ``answers`` from its feed, converted as the
        hub's ``priceOf`` converts an answer; tokens whose feed did not move are absent."""
        before = block - 1
        by_source: dict[ChecksumAddress, list[tuple[str, int]]] = {}
        for token in tokens:
            feed, _, token_decimals, feed_decimals, _ = hub.functions.asset(token).call(
                block_identifier=before
            )
            scale = 10 ** (36 - int(feed_decimals) - int(token_decimals))
            for source in {self._source(feed, before), self._source(feed, block)}:
                by_source.setdefault(source, []).append((token, scale))
        prices: dict[str, int] = {}
        for entry in answers:
            answer = int.from_bytes(bytes(entry["topics"][1]), "big", signed=True)
            for token, scale in by_source.get(checksum(entry["address"]), []):
                prices[token] = answer * scale
        return prices

    def _source(self, feed: str, block: int) -> ChecksumAddress:
        """Where ``feed``'s answers are emitted at ``block``: the aggregator behind a proxy, or
        the feed itself (see ``tandem.follower.feeds``)."""
        from web3.exceptions import BadFunctionCallOutput, ContractLogicError

        proxy = self.w3.eth.contract(address=checksum(feed), abi=self.proxy_abi)
        try:
            aggregator = proxy.functions.aggregator().call(block_identifier=block)
        except (ContractLogicError, BadFunctionCallOutput):
            return checksum(feed)
        return checksum(feed) if int(aggregator, 16) == 0 else checksum(aggregator)

    async def context(self, trade: dict[str, Any], side: str, log_index: int) -> Context:
        return await asyncio.to_thread(self._read, trade, side, log_index)


def _amount_moved(e: Any, token: str, base: str | None) -> int:
    """What an earlier event of the block moved the master's book of ``token`` by (a deposit
    moves the base asset's, ``base``)."""
    a, token = e.args, token.lower()
    if e.name == "Traded":
        moved = int(a["masterOut"]) if a["tokenOut"].lower() == token else 0
        return moved - (int(a["masterIn"]) if a["tokenIn"].lower() == token else 0)
    if e.name == "MasterWithdrew":
        return -int(a["amount"]) if a["token"].lower() == token else 0
    return int(a["amount"]) if base is not None and base.lower() == token else 0

"""What a master trade's event does not say and the bridge needs: the master's fraction (of
equity for a buy, of the position for a sale), read from the chain as the vault sized the
pool's part of the same trade, and the trade's block (its time and hash)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, cast

from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3 import Web3
from web3.providers.base import JSONBaseProvider
from web3.types import FilterParams

from tandem.config import Settings
from tandem.events import checksum

ZERO = Decimal(0)
log = logging.getLogger("tandem.bridge")
WAD = 10**18
# The vault's events that move the master's book: what the vault's state one block before a
# trade misses of the trades, deposits and withdrawals earlier in the same block.
MASTER_BOOK_EVENTS = ("Traded", "MasterDeposited", "MasterWithdrew")
# What a feed proxy of Chainlink's later contracts (AggregatorProxy) emits as its owner confirms
# a new aggregator. The older EACAggregatorProxy, like the test proxy, emits nothing.
AGGREGATOR_CONFIRMED = "0x" + keccak(text="AggregatorConfirmed(address,address)").hex()


@dataclass(frozen=True)
class BlockMoves:
    """What moved prices in a trade's block, from anyone (one ``eth_getLogs``): the feeds'
    answers and the hub's ``AssetSet`` before the trade, and every proxy's
    ``AggregatorConfirmed`` of the block with its log index (one after the trade tells that
    the trade saw the aggregator before it)."""

    answers: list[Any]
    assets: list[Any]  # decoded AssetSet of the vault's hub
    confirmed: list[tuple[int, ChecksumAddress, ChecksumAddress]]  # (log index, proxy, latest)

    def __bool__(self) -> bool:
        return bool(self.answers or self.assets or self.confirmed)


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
    ``eth_getLogs`` and ``eth_call`` at a block are served by every node and provider.

    What else moves a price within the block is looked for too: the hub's ``AssetSet`` (a new
    feed or decimals for a token: the price from then on is the new feed's answer, converted
    with the new decimals) and a proxy re-pointed at another aggregator (its new answer). A
    proxy that says so (``AggregatorConfirmed``) tells where in the block; one that emits
    nothing (Chainlink's EACAggregatorProxy) does not, so each held token's feed is asked for
    its aggregator at the block before and at the block: the same, the trade saw it; not the
    same, the trade saw one of the two, and no log says which. The token's price is then the
    higher of the two answers: the equity the higher, the fraction the lower, so the follower
    never spends a larger share of their equity than the master could have spent of theirs
    (a proxy re-pointed inside the block is rare: its owner announces it). The tokens the trade
    itself spends and buys need none of this: the vault's event carries the prices it used
    (``priceIn``, ``priceOut``). A block where nothing logged any of this is checked for a
    silent re-pointing by the hub's ``pricesOf`` of the vault's tokens at the block before and
    at the block: equal, the vault's ``equities()`` the block before is the equity (7
    requests a buy, in two round trips: see ``_read``); not, each price is found as above."""

    def __init__(self, settings: Settings) -> None:
        from tandem import artifacts, chain
        from tandem.events import Decoder

        self.w3 = chain.connect(settings.rpc_url, settings=settings)
        self.vault_abi = artifacts.load("ITandemVault", settings).abi
        self.hub_abi = artifacts.load("ITandemHub", settings).abi
        self.proxy_abi = artifacts.load("IChainlinkProxy", settings).abi
        self.aggregator_abi = artifacts.load("IAggregatorV3", settings).abi
        self.decoder = Decoder(settings, names=MASTER_BOOK_EVENTS)
        self.hub_decoder = Decoder(settings, names=("AssetSet",))
        self.answer_topic = (
            "0x" + Decoder(settings, names=("AnswerUpdated",)).topic("AnswerUpdated").hex()
        )
        self.asset_topic = "0x" + self.hub_decoder.topic("AssetSet").hex()
        self._hubs: dict[str, ChecksumAddress] = {}  # vault -> its hub (immutable)

    def _earlier_query(self, vault: ChecksumAddress, block: int) -> FilterParams:
        """The vault's events moving the master's book in ``block``."""
        return {
            "address": vault,
            "fromBlock": block,
            "toBlock": block,
            "topics": [["0x" + self.decoder.topic(n).hex() for n in MASTER_BOOK_EVENTS]],
        }

    def _earlier(self, logs: list[Any], log_index: int) -> list[Any]:
        """Of the vault's ``logs`` (``_earlier_query``), its events before ``log_index``."""
        events = (self.decoder.decode(entry) for entry in logs)
        return [e for e in events if e is not None and e.log_index < log_index]

    def _moves_query(self, block: int) -> FilterParams:
        """Every feed's ``AnswerUpdated``, every hub's ``AssetSet`` and every proxy's
        ``AggregatorConfirmed`` in ``block``, whoever emitted them (see ``_moves``)."""
        return {
            "fromBlock": block,
            "toBlock": block,
            "topics": [[self.answer_topic, self.asset_topic, AGGREGATOR_CONFIRMED]],
        }

    def _read(self, trade: dict[str, Any], side: str, log_index: int) -> Context:
        """The requests independent of each other go together, in one JSON-RPC batch (one
        round trip to the node): a buy in a block where nothing moved takes two (after the
        vault's first, which asks the vault's hub once), a sale one."""
        w3 = self.w3
        block = int(trade["block"])
        vault = w3.eth.contract(address=trade["vault"], abi=self.vault_abi)
        before = block - 1
        master_in = int(trade["masterIn"])
        if side == "buy":
            hub = w3.eth.contract(address=self._hub_of(vault), abi=self.hub_abi)
            vault_logs, block_logs, tokens, header = _batch(
                w3,
                lambda: w3.eth.get_logs(self._earlier_query(vault.address, block)),
                lambda: w3.eth.get_logs(self._moves_query(block)),
                lambda: vault.functions.tokens().call(block_identifier=before),
                lambda: w3.eth.get_block(block),
            )
            earlier = self._earlier(_result(vault_logs), log_index)
            moves = self._moves(vault, hub, block, log_index, earlier, block_logs)
            # Nothing moved in the block before the trade: the vault's own valuation the block
            # before, unless a price moved without a log.
            equity = (
                None
                if earlier or moves
                else self._equity_if_no_price_moved(vault, hub, block, list(_result(tokens)))
            )
            if equity is None:
                equity = self._equity(vault, hub, trade, block, log_index, earlier, moves)
            spent = master_in * int(trade["priceIn"]) // WAD
            fraction = Decimal(spent) / Decimal(equity) if equity > 0 else ZERO
        else:
            token = trade["tokenIn"]
            vault_logs, books, header = _batch(
                w3,
                lambda: w3.eth.get_logs(self._earlier_query(vault.address, block)),
                lambda: vault.functions.books(token).call(block_identifier=before),
                lambda: w3.eth.get_block(block),
            )
            earlier = self._earlier(_result(vault_logs), log_index)
            held = int(_result(books)[0])
            held += sum(_amount_moved(e, token, None) for e in earlier)
            fraction = Decimal(master_in) / Decimal(held) if held > 0 else ZERO
        header = _result(header)
        return Context(
            min(fraction, Decimal(1)),
            float(header["timestamp"]),
            "0x" + bytes(header["hash"]).hex(),
        )

    def _moves(
        self,
        vault: Any,
        hub: Any,
        block: int,
        log_index: int,
        earlier: list[Any],
        answer: Any,
    ) -> BlockMoves:
        """Every feed's ``AnswerUpdated`` and the hub's ``AssetSet`` in ``block`` before
        ``log_index``, and every ``AggregatorConfirmed`` of the block, in order, from
        ``answer``: the node's answer to ``_moves_query`` (one query, whoever emitted them:
        most blocks have none of the hub's feeds), the logs or the error it was answered
        with. Anyone can emit these topics: a block filled with them is more than a provider
        answers one query with, and the query is then asked again of the addresses that
        price the vault alone (``_logs_of_feeds``)."""
        from web3.exceptions import Web3Exception

        query = self._moves_query(block)
        try:
            logs = list(_result(answer))
        except (ValueError, Web3Exception) as exc:  # the provider's cap on one answer, say
            log.warning("block %s: its logs not read whole (%s), asked by address", block, exc)
            logs = self._logs_of_feeds(vault, hub, block, earlier, query)
        hub_address = checksum(hub.address)
        logs = sorted(logs, key=lambda entry: int(entry["logIndex"]))
        answers, assets, confirmed = [], [], []
        for entry in logs:
            topic = "0x" + bytes(entry["topics"][0]).hex()
            at = int(entry["logIndex"])
            if topic == AGGREGATOR_CONFIRMED and len(entry["topics"]) == 3:
                latest = checksum("0x" + bytes(entry["topics"][2])[-20:].hex())
                confirmed.append((at, checksum(entry["address"]), latest))
            elif at >= log_index:
                continue
            elif topic == self.answer_topic:
                answers.append(entry)
            elif topic == self.asset_topic and checksum(entry["address"]) == hub_address:
                event = self.hub_decoder.decode(entry)
                if event is not None:
                    assets.append(event)
        return BlockMoves(answers, assets, confirmed)

    def _logs_of_feeds(
        self, vault: Any, hub: Any, block: int, earlier: list[Any], query: FilterParams
    ) -> list[Any]:
        """``query``'s logs emitted by the hub, the feeds of the vault's tokens (those it held
        the block before, and those an earlier trade of the block brought in) and their
        aggregators at the block before and at the block; then, asked again, by the feeds the
        hub set and the aggregators proxies confirmed in the block. What others logged is
        left out: it prices nothing of the vault."""
        before = block - 1
        tokens = list(vault.functions.tokens().call(block_identifier=before))
        tokens += [e.args["tokenOut"] for e in earlier if e.name == "Traded"]
        feeds = {
            checksum(hub.functions.asset(token).call(block_identifier=before)[0])
            for token in set(tokens)
        }
        asked = {checksum(hub.address), *feeds}
        asked |= {self._source(feed, at) for feed in feeds for at in (before, block)}
        logs = list(self.w3.eth.get_logs(FilterParams(**query, address=sorted(asked))))
        more: set[ChecksumAddress] = set()
        for entry in logs:
            topic = "0x" + bytes(entry["topics"][0]).hex()
            if topic == AGGREGATOR_CONFIRMED and len(entry["topics"]) == 3:
                more.add(checksum("0x" + bytes(entry["topics"][2])[-20:].hex()))
            elif topic == self.asset_topic and checksum(entry["address"]) == checksum(hub.address):
                event = self.hub_decoder.decode(entry)
                if event is not None:
                    feed = checksum(event.args["feed"])
                    more |= {feed, self._source(feed, block)}
        more -= asked
        if more:
            logs += list(self.w3.eth.get_logs(FilterParams(**query, address=sorted(more))))
        return logs

    def _equity_if_no_price_moved(
        self, vault: Any, hub: Any, block: int, tokens: list[str]
    ) -> int | None:
        """The vault's own ``equities()`` the block before, in a block where no log said a
        price moved, unless the hub prices one of the vault's ``tokens`` otherwise at the
        block than the block before (a proxy re-pointed silently): then None. A price that
        cannot be read (stale, say) is not judged equal. The equity is asked with the prices,
        in the same round trip, and left unread when they differ."""
        from web3.exceptions import BadFunctionCallOutput, ContractLogicError

        before, after, equities = _batch(
            self.w3,
            lambda: hub.functions.pricesOf(tokens).call(block_identifier=block - 1),
            lambda: hub.functions.pricesOf(tokens).call(block_identifier=block),
            lambda: vault.functions.equities().call(block_identifier=block - 1),
        )
        try:
            if list(_result(before)) != list(_result(after)):
                return None
        except (ContractLogicError, BadFunctionCallOutput):
            return None
        return int(_result(equities)[0])

    def _equity(
        self,
        vault: Any,
        hub: Any,
        trade: dict[str, Any],
        block: int,
        log_index: int,
        earlier: list[Any],
        moves: BlockMoves,
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
        equity = 0
        for token, amount in held.items():
            if amount > 0:  # the vault's _value: mulDiv, rounded down
                equity += amount * self._price(hub, token, trade, block, log_index, moves) // WAD
        return equity

    def _price(
        self,
        hub: Any,
        token: str,
        trade: dict[str, Any],
        block: int,
        log_index: int,
        moves: BlockMoves,
    ) -> int:
        """``token``'s price as the hub's ``priceOf`` gave it to the trade at ``log_index``."""
        # The vault's event carries the prices of the trade's own tokens, as it used them.
        for side in ("In", "Out"):
            if checksum(token) == checksum(trade[f"token{side}"]):
                return int(trade[f"price{side}"])
        before = block - 1
        sets = [e for e in moves.assets if checksum(e.args["token"]) == checksum(token)]
        if sets:  # the hub's owner gave the token a new feed, or decimals, earlier in the block
            a = sets[-1].args
            feed, token_decimals, feed_decimals = a["feed"], a["tokenDecimals"], a["feedDecimals"]
        else:
            feed, _, token_decimals, feed_decimals, _ = hub.functions.asset(token).call(
                block_identifier=before
            )
        scale: int = 10 ** (36 - int(feed_decimals) - int(token_decimals))
        sources = self._sources(checksum(feed), block, log_index, moves)
        return max(self._answer(source, block, moves) for source in sources) * scale

    def _sources(
        self, feed: ChecksumAddress, block: int, log_index: int, moves: BlockMoves
    ) -> list[ChecksumAddress]:
        """Where ``feed``'s answer came from at ``log_index``: the aggregator behind a proxy,
        or the feed itself. One, but two when the proxy was re-pointed in the block without
        saying where (see the class's note)."""
        confirmed = [(at, latest) for at, proxy, latest in moves.confirmed if proxy == feed]
        first = self._source(feed, block - 1)
        if confirmed:  # the proxy says where: the last re-pointing before the trade, if any
            seen = [latest for at, latest in confirmed if at < log_index]
            return [seen[-1] if seen else first]
        last = self._source(feed, block)
        return [first] if first == last else [first, last]

    def _answer(self, source: ChecksumAddress, block: int, moves: BlockMoves) -> int:
        """``source``'s answer just before the trade: the last it logged earlier in the block,
        else its answer at the block before (at the block, for an aggregator made in it)."""
        from web3.exceptions import BadFunctionCallOutput, ContractLogicError

        logged = [e for e in moves.answers if checksum(e["address"]) == source]
        if logged:
            return int.from_bytes(bytes(logged[-1]["topics"][1]), "big", signed=True)
        aggregator = self.w3.eth.contract(address=source, abi=self.aggregator_abi)
        try:
            return int(aggregator.functions.latestRoundData().call(block_identifier=block - 1)[1])
        except (ContractLogicError, BadFunctionCallOutput):
            return int(aggregator.functions.latestRoundData().call(block_identifier=block)[1])

    def _hub_of(self, vault: Any) -> ChecksumAddress:
        if vault.address not in self._hubs:
            self._hubs[vault.address] = vault.functions.hub().call()
        return self._hubs[vault.address]

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


def _batch(w3: Web3, *requests: Callable[[], Any]) -> list[Any]:
    """Each of ``requests`` (a function making one web3 request) answered in one JSON-RPC
    batch: one HTTP round trip for all. Each answer is the request's result, or the exception
    the request alone would have raised, to be raised where it is used (``_result``): web3's
    own ``execute`` raises the first error of a batch and drops the other answers, and a
    refused logs query must be asked again alone while the rest of its batch is used. A node
    answering the batch as a whole with an error (one serving no batches, or fewer than
    these) is asked each request alone."""
    try:
        # Each answer checked and formatted as web3's ``execute`` does it, one at a time.
        format_answer = w3.manager._format_batched_response
        provider = cast(JSONBaseProvider, w3.provider)  # HTTP, as chain.connect makes it
        send = provider.batch_request_func(w3, w3.middleware_onion)
    except AttributeError:  # a web3 release without these (web3 7's own): each asked alone
        return [_answered(request) for request in requests]
    with w3.batch_requests():
        # While batching, web3 makes no request: each gives its method, parameters and the
        # formatters of its answer.
        asked = [request() for request in requests]
        answers = send([method_and_params for method_and_params, _ in asked])
    if not isinstance(answers, list) or len(answers) != len(asked):
        return [_answered(request) for request in requests]
    return [
        _answered(functools.partial(format_answer, info, answer))
        for info, answer in zip(asked, answers, strict=True)
    ]


def _answered(request: Callable[[], Any]) -> Any:
    try:
        return request()
    except Exception as exc:  # raised again by _result, where it is used
        return exc


def _result(answer: Any) -> Any:
    """A ``_batch`` answer's result, or its error raised."""
    if isinstance(answer, Exception):
        raise answer
    return answer


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

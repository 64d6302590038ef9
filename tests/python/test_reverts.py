"""Every revert decodes by name with its arguments: the hub's, an adapter's and a vault's, from
plain web3.py with the shipped error ABI; and a router's bare string becomes the protocol's
own error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_abi.abi import encode
from web3.exceptions import ContractLogicError

from tandem import artifacts, cli, reverts
from tandem.chain import deploy
from tandem.config import Settings
from tandem.errors import RevertError
from tandem.protocol import BASE, Deployment, create_master, trade


def test_the_shipped_error_abi_holds_every_error_of_the_build(settings: Settings) -> None:
    built = reverts.build_error_abi(artifacts.project_artifacts(settings))
    assert built == reverts.error_abi(), "run `tandem errors-abi --write`"
    names = {e["name"] for e in reverts.error_abi()}
    # The hub's, both adapters', the vault's parts', the timelock's and OpenZeppelin's.
    assert {
        "InsufficientFreeBalance",
        "CallerNotVault",
        "HopNotAllowed",
        "FeeTierNotAllowed",
        "NotMasterOrDelegate",
        "LossBudgetExceeded",
        "TimelockUnexpectedOperationState",
        "SafeERC20FailedOperation",
        "ERC20InsufficientBalance",
    } <= names
    # The reason it ships: one contract's ABI lacks the others' errors.
    vault_errors = {e.get("name") for e in artifacts.load("TandemVault", settings).abi}
    assert "CallerNotVault" not in vault_errors and "HopNotAllowed" not in vault_errors
    assert {e["name"] for e in artifacts.vault_abi(settings) if e["type"] == "error"} >= names


def plain(dep: Deployment, name: str, address: str):
    """The contract as an integrator's web3.py sees it from one compiled artifact's ABI."""
    return dep.w3.eth.contract(address=address, abi=artifacts.load(name).abi)


def reverted(call, sender: str) -> reverts.DecodedRevert:
    with pytest.raises(ContractLogicError) as caught:
        call.call({"from": sender})
    data = caught.value.data
    assert isinstance(data, str) and data.startswith("0x")
    return reverts.decode(data)


def test_hub_adapter_and_vault_reverts_decode_by_name_with_arguments(dep: Deployment) -> None:
    w3 = dep.w3
    master, stranger = w3.eth.accounts[3], w3.eth.accounts[4]
    vault = create_master(dep, master, dep.units(BASE, 10_000))

    hub = plain(dep, "TandemHub", dep.hub.address)
    decoded = reverted(hub.functions.allocate(vault.address, 123, 50), stranger)
    assert decoded.kind == "custom"
    assert decoded.name == "InsufficientFreeBalance"
    assert decoded.args == {"available": 0, "requested": 123}

    adapter = plain(dep, "UniswapV2Adapter", dep.v2_adapter.address)
    route = dep.v2_route(BASE, "WETH")
    call = adapter.functions.swapCall(
        dep.address_of(BASE), dep.address_of("WETH"), 1, 0, route.data
    )
    decoded = reverted(call, stranger)
    assert (decoded.name, decoded.args) == ("CallerNotVault", {"caller": stranger})

    # An adapter's revert passed on by the vault: not in TandemVault.json's ABI.
    outsider, _ = deploy(w3, "TestToken", "Outsider", "OUT", 18, sender=master)
    via = dep.v2_route(BASE, outsider.address, "WETH")
    order = (dep.address_of(BASE), dep.address_of("WETH"), 10**9, 0, via.adapter, via.data, 0)
    vault_plain = plain(dep, "TandemVault", vault.address)
    assert not any(e.get("name") == "HopNotAllowed" for e in vault_plain.abi)
    decoded = reverted(vault_plain.functions.trade(order), master)
    assert (decoded.name, decoded.args) == ("HopNotAllowed", {"token": outsider.address})
    assert decoded.signature == "HopNotAllowed(address)"
    assert str(decoded) == f"HopNotAllowed(token={outsider.address})"

    decoded = reverted(vault_plain.functions.trade(order), stranger)
    assert (decoded.name, decoded.args) == ("NotMasterOrDelegate", {"caller": stranger})

    # The tooling's own transactions say the same.
    with pytest.raises(RevertError) as caught:
        trade(dep, vault, master, BASE, "WETH", 10**9, via)
    assert caught.value.error_name == "HopNotAllowed"
    assert caught.value.error_args == {"token": outsider.address}


@pytest.mark.parametrize(
    ("venue", "router_says"),
    [("v2", "UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT"), ("v3", "Too little received")],
)
def test_a_router_slippage_string_is_the_protocols_slippage_error(
    dep: Deployment, venue: str, router_says: str
) -> None:
    master = dep.w3.eth.accounts[3]
    vault = create_master(dep, master, dep.units(BASE, 10_000))
    route = dep.v2_route(BASE, "WETH") if venue == "v2" else dep.v3_route(BASE, "WETH")
    with pytest.raises(RevertError) as caught:
        # A minimum no swap can pay: the router refuses in its own words.
        trade(dep, vault, master, BASE, "WETH", dep.units(BASE, 1_000), route, 10**40)
    error = caught.value
    assert error.error_name == "SlippageExceeded"
    assert error.decoded is not None and error.decoded.kind == "router"
    assert error.decoded.router_reason == router_says
    assert "less than its minimum output" in str(error)
    assert router_says in error.reason  # what keepers match on


def test_decoding_strings_panics_and_the_unknown() -> None:
    text = "0x08c379a0" + encode(["string"], ["plain"]).hex()
    assert reverts.decode(text).name == "Error"
    assert str(reverts.decode(text)) == "Error('plain')"
    router = "0x08c379a0" + encode(["string"], ["Too little received"]).hex()
    assert reverts.decode(router).name == "SlippageExceeded"
    panic = "0x4e487b71" + encode(["uint256"], [0x11]).hex()
    assert str(reverts.decode(panic)) == "Panic(0x11: arithmetic overflow or underflow)"
    assert reverts.decode("0x").kind == "empty"
    unknown = reverts.decode("0xdeadbeef")
    assert unknown.kind == "unknown" and "0xdeadbeef" in unknown.message


@pytest.mark.parametrize(("router_says", "means"), sorted(reverts.ROUTER_REASONS.items()))
def test_every_router_string_has_the_protocols_name(
    router_says: str, means: tuple[str, str]
) -> None:
    decoded = reverts.decode("0x08c379a0" + encode(["string"], [router_says]).hex())
    assert (decoded.kind, decoded.name, decoded.message) == ("router", *means)
    assert decoded.router_reason == router_says
    assert str(decoded).startswith(f"{means[0]}(router={router_says!r}): ")


def test_the_errors_abi_command(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["errors-abi"]) == 0
    assert json.loads(capsys.readouterr().out) == reverts.error_abi()
    assert cli.main(["errors-abi", "--check"]) == 0
    assert "as compiled" in capsys.readouterr().out

    # A stale shipped copy fails the check in one line; --write renews it.
    stale = tmp_path / "TandemErrors.json"
    stale.write_text(reverts.render(reverts.error_abi()[1:]))
    monkeypatch.setattr(reverts, "ERRORS_ABI_PATH", stale)
    reverts._shipped.cache_clear()
    try:
        assert cli.main(["errors-abi", "--check"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "--write" in err[0]
        assert cli.main(["errors-abi", "--write"]) == 0
        reverts._shipped.cache_clear()
        assert cli.main(["errors-abi", "--check"]) == 0
    finally:
        reverts._shipped.cache_clear()

    # Nothing compiled: one error line.
    monkeypatch.setenv("TANDEM_BUILD_DIR", str(tmp_path / "empty"))
    assert cli.main(["errors-abi", "--check"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: nothing is compiled under build/contracts: run `tandem compile`"]

"""Ape drives the same compiler and the same deployment as the `tandem` command line.

Ape runs as a subprocess, the way a user runs it, with the environment ape-config.yaml asks for.
Its data folder (normally ~/.ape) is a temporary directory, so the tests leave no trace there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_utils.crypto import keccak

from tandem import artifacts, chain, protocol
from tandem.compiler import prepare_ape, project_sources, solc_package_version
from tandem.config import Settings
from tandem.node import LocalNode, free_port, port_in_use
from tandem.protocol import BASE

pytestmark = pytest.mark.ape

HUB_LINE = re.compile(r"TandemHub deployed at (0x[0-9a-fA-F]{40}) on chain (\d+)")


def ape_binary() -> str:
    ape = Path(sys.executable).with_name("ape")
    if not ape.is_file():
        pytest.skip("ape is not installed (pip install -e '.[ape]')")
    return str(ape)


@pytest.fixture(scope="module")
def ape_env(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of ape-config.yaml's instructions, plus a private Ape data folder."""
    root = prepare_ape(settings)
    paths = settings.paths
    return {
        **os.environ,
        "SOLCX_BINARY_PATH": str(root / "solcx"),
        "PATH": f"{paths.node_modules / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "APE_DATA_FOLDER": str(tmp_path_factory.mktemp("ape-data")),
    }


def run_ape(
    settings: Settings, env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    # The timeout only catches a hang: a loaded 2-core machine takes minutes to compile.
    return subprocess.run(
        [ape_binary(), *args],
        cwd=settings.project_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_ape_compile_uses_the_npm_pinned_solc(settings: Settings, ape_env: dict[str, str]) -> None:
    result = run_ape(settings, ape_env, "compile", "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "compiled" in result.stdout + result.stderr

    manifest = json.loads(
        (settings.project_root / ".build" / "__local__.json").read_text(encoding="utf-8")
    )
    (solidity,) = (c for c in manifest["compilers"] if c["name"] == "solidity")
    pinned = solc_package_version(settings.paths)
    assert pinned == "0.8.28"
    assert solidity["version"].split("+")[0] == pinned
    for name in (
        "TandemHub",
        "TandemVault",
        "TandemVaultExits",
        "TandemVaultLens",
        "UniswapV2Adapter",
        "UniswapV3Adapter",
    ):
        assert name in solidity["contractTypes"]
        assert manifest["contractTypes"][name]["deploymentBytecode"]["bytecode"].startswith("0x")

    # Ape copies dependency sources into contracts/.cache; `tandem compile` must not see them.
    assert not [name for name in project_sources(settings.paths) if "/." in name]


# What the README shows in `ape console`: the node's book, a contract from it, a call.
CONSOLE = """
from ape import Contract, chain, networks
from tandem import artifacts
with networks.parse_network_choice({url!r}):
    book = artifacts.load_deployment(artifacts.book_key(chain.provider.web3))
    hub = Contract(book["TandemHub"], abi=artifacts.load("ITandemHub").abi)
    print("base asset", hub.baseAsset())
"""


def test_ape_run_deploy_to_a_node_the_user_runs_leaves_a_usable_deployment(
    settings: Settings, ape_env: dict[str, str], tmp_path: Path
) -> None:
    deployments = tmp_path / "deployments"
    local = settings.model_copy(update={"deployments_dir": deployments})
    env = {**ape_env, "TANDEM_DEPLOYMENTS_DIR": str(deployments)}
    with LocalNode(settings=settings, port=free_port()) as node:
        # The README's way: the node's URL as the network.
        result = run_ape(settings, env, "run", "deploy", "--network", node.rpc_url)
        assert result.returncode == 0, result.stdout + result.stderr
        found = HUB_LINE.search(result.stdout)
        assert found, result.stdout
        hub, chain_id = found.group(1), int(found.group(2))
        assert node.running  # ape did not stop a node it did not start

        # After ape is gone, the deployment works: its book names it, and it trades.
        w3 = chain.connect(node.rpc_url, settings=local)
        key = artifacts.book_key(w3)
        assert key.chain_id == chain_id == 31337 and key.genesis
        book_path = deployments / f"{key.name}.json"
        assert str(book_path) in result.stdout
        dep = protocol.load_local(w3, local)
        assert dep.hub.address == hub
        master = w3.eth.accounts[2]
        vault = protocol.create_master(dep, master, dep.units(BASE, 10_000))
        done = protocol.trade(
            dep, vault, master, BASE, "WETH", dep.units(BASE, 1_000), dep.v2_route(BASE, "WETH")
        )
        assert done.master_out > 0

        # Ape's console reads the same book.
        console = subprocess.run(
            [str(Path(sys.executable)), "-c", CONSOLE.format(url=node.rpc_url)],
            env=env,
            cwd=settings.project_root,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert console.returncode == 0, console.stdout + console.stderr
        assert f"base asset {dep.base.address}" in console.stdout

        # A second deployment would overwrite a live book: refused unless forced.
        again = run_ape(settings, env, "run", "deploy", "--network", node.rpc_url)
        assert again.returncode != 0
        assert "records a live deployment on this node" in again.stdout + again.stderr
        forced = run_ape(settings, env, "run", "deploy", "--force", "--network", node.rpc_url)
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert json.loads(book_path.read_text())["contracts"]["TandemHub"] != hub


def test_ape_run_deploy_starts_and_stops_its_own_anvil(
    settings: Settings, ape_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **ape_env,
        # Nothing listens here yet, so ape-foundry starts anvil (found on PATH) on this port.
        "APE_FOUNDRY_HOST": f"http://127.0.0.1:{port}",
        "TANDEM_DEPLOYMENTS_DIR": str(tmp_path / "deployments"),
    }
    result = run_ape(settings, env, "run", "deploy", "--network", "ethereum:local:foundry")
    assert result.returncode == 0, result.stdout + result.stderr
    assert HUB_LINE.search(result.stdout), result.stdout
    # Its node goes when the script ends: no book names contracts that are gone.
    assert "no address book was written" in result.stdout
    assert not (tmp_path / "deployments").exists()
    # ape stops anvil through npm's launcher, which passes the signal on: allow a moment.
    deadline = time.monotonic() + 5
    while port_in_use(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not port_in_use(port)
    if pgrep := shutil.which("pgrep"):
        leftover = subprocess.run(
            [pgrep, "-f", f"anvil.*--port {port}"], capture_output=True, text=True, check=False
        )
        assert leftover.stdout == "", f"anvil still running: {leftover.stdout}"


# A vault reverting with the hub's error, seen through Ape: first with TandemVault.json's ABI
# alone (an unknown selector), then through tandem.ape_contracts (the error by name).
APE_REVERT = """
import json
from ape import Contract, accounts, networks
from ape.exceptions import ContractLogicError, CustomError
from tandem import ape_contracts, artifacts

with networks.parse_network_choice({url!r}):
    order = {order!r}
    plain = Contract({plain!r}, abi=artifacts.load("TandemVault").abi)
    try:
        plain.trade(order, sender=accounts.test_accounts[{plain_master}])
    except ContractLogicError as err:
        print("plain", json.dumps({{"custom": isinstance(err, CustomError), "message": str(err)}}))
    vault = ape_contracts.vault({vault!r})
    try:
        vault.trade(order, sender=accounts.test_accounts[{master}])
    except vault.HopNotAllowed as err:
        found = {{"name": err.name, "inputs": err.inputs, "repr": repr(err), "text": str(err)}}
        print("named", json.dumps({{**found, "custom": isinstance(err, CustomError)}}))
"""


def test_ape_names_a_hub_error_a_vault_passed_on(
    settings: Settings, ape_env: dict[str, str]
) -> None:
    with LocalNode(settings=settings, port=free_port()) as node:
        w3 = chain.connect(node.rpc_url, settings=settings)
        dep = protocol.deploy_local(w3, settings=settings, save=False)
        plain_master, master = 2, 3
        plain = protocol.create_master(dep, w3.eth.accounts[plain_master], dep.units(BASE, 10_000))
        vault = protocol.create_master(dep, w3.eth.accounts[master], dep.units(BASE, 10_000))
        # A route through a token the hub does not allow: the adapter's check, passed on.
        outsider, _ = chain.deploy(
            w3, "TestToken", "Outsider", "OUT", 18, sender=w3.eth.accounts[master]
        )
        via = dep.v2_route(BASE, outsider.address, "WETH")
        order = [dep.address_of(BASE), dep.address_of("WETH"), 10**9, 0, via.adapter, via.data, 0]
        script = APE_REVERT.format(
            url=node.rpc_url,
            order=[*order[:5], "0x" + via.data.hex(), 0],
            plain=plain.address,
            plain_master=plain_master,
            vault=vault.address,
            master=master,
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=ape_env,
            cwd=settings.project_root,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    # Ape prints each failed call's trace too: the two answers are the lines the script wrote.
    seen = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " {" in line)
    before = json.loads(seen["plain"])
    selector = "0x" + keccak(text="HopNotAllowed(address)")[:4].hex()
    assert not before["custom"] and before["message"].startswith(selector)
    named = json.loads(seen["named"])
    assert named["custom"] and named["name"] == "HopNotAllowed"
    assert named["inputs"] == {"token": outsider.address}
    assert named["repr"] == f"HopNotAllowed(token={outsider.address})"

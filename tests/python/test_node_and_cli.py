"""LocalNode lifecycle and the command line's behaviour against live and dead nodes.

The command line runs as a real subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from node_proxy import node_proxy
from terminal import as_from_a_terminal, sigint_state
from web3 import Web3

from tandem import artifacts, chain, cli, protocol
from tandem.config import Settings
from tandem.errors import DeploymentError, NodeError
from tandem.node import LocalNode, free_port, port_in_use, rpc_request
from tandem.protocol import Deployment

TANDEM = [sys.executable, "-m", "tandem.cli"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TANDEM, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def process_gone(pid: int) -> bool:
    """True when ``pid`` neither runs nor lingers as a zombie."""
    return not Path(f"/proc/{pid}").exists()


def test_local_node_starts_answers_and_stops(settings: Settings) -> None:
    node = LocalNode(settings=settings, chain_id=4242)
    with node:
        pid = node.pid
        assert pid is not None and node.running
        assert int(rpc_request(node.rpc_url, "eth_chainId"), 16) == 4242
    assert not node.running
    assert process_gone(pid)
    assert not port_in_use(node.port)


def test_port_in_use_is_a_clear_error(settings: Settings) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(NodeError, match=f"port {port} .* already in use"):
            LocalNode(port=port, settings=settings).start()


def test_anvil_failure_shows_its_output(settings: Settings) -> None:
    node = LocalNode(settings=settings, extra_args=["--no-such-flag"])
    with pytest.raises(NodeError, match="anvil exited") as caught:
        node.start()
    assert caught.value.details and "--no-such-flag" in caught.value.details
    assert not node.running


def test_cli_against_dead_rpc_prints_one_error_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("--rpc-url", url, "status")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: no node answers at {url}")
    assert "tandem node" in lines[0]


def test_cli_rejects_a_malformed_rpc_url() -> None:
    result = run_cli("--rpc-url", "localhost:8545", "status")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: invalid settings: rpc_url: Value error, must start with http:// or https://"
    ]


def test_cli_status_against_a_live_node(node: LocalNode) -> None:
    result = run_cli("--rpc-url", node.rpc_url, "status")
    assert result.returncode == 0, result.stderr
    assert "Chain id 31337" in result.stdout


def test_cli_reports_missing_artifacts_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @cli.command("load-nothing", "test command that needs an artifact")
    def load_nothing(args: object, settings: Settings) -> int:
        artifacts.load("TandemNothing", settings)
        return 0

    monkeypatch.setenv("TANDEM_PROJECT_ROOT", str(tmp_path))
    try:
        assert cli.main(["load-nothing"]) == 1
    finally:
        del cli.COMMANDS["load-nothing"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no compiled contract named 'TandemNothing'")
    assert err[0].endswith("run `tandem compile`")


def test_cli_node_runs_until_interrupted() -> None:
    port = free_port()
    process = subprocess.Popen(
        as_from_a_terminal([*TANDEM, "node", "--port", str(port), "--accounts", "3"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        seen = ""
        deadline = time.monotonic() + 30
        while "Press Ctrl-C" not in seen and time.monotonic() < deadline:
            seen += process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in seen
        assert seen.count("0x") >= 3  # the funded accounts
        assert port_in_use(port)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0, sigint_state()
        assert not port_in_use(port)  # anvil went down with it
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


# --- deploy and demo

ANVIL_AT = re.compile(r"anvil at (http://127\.0\.0\.1:(\d+))")
LATE_JOINER = re.compile(r"^Late joiner: WETH weight (.*)$", re.MULTILINE)


def anvil_processes_on(port: int) -> str:
    """Command lines of anvil processes listening on ``port`` (empty when there are none)."""
    found = subprocess.run(
        ["pgrep", "-af", f"anvil .*--port {port}( |$)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip()


def test_cli_deploy_writes_the_address_book(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployments = tmp_path / "deployments"
    monkeypatch.setenv("TANDEM_DEPLOYMENTS_DIR", str(deployments))
    with LocalNode(settings=settings, chain_id=4343) as node:  # a chain of its own
        result = run_cli("--rpc-url", node.rpc_url, "deploy", timeout=120)
        assert result.returncode == 0, result.stderr

        book_path = deployments / "4343.json"
        book = json.loads(book_path.read_text(encoding="utf-8"))
        assert book["chainId"] == 4343
        hub = book["contracts"]["TandemHub"]
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        assert len(w3.eth.get_code(Web3.to_checksum_address(hub))) > 0
        # The deployment is live: deploying again would overwrite its book, so it is refused
        # (one error line, nothing deployed) unless forced.
        again = run_cli("--rpc-url", node.rpc_url, "deploy", timeout=120)
        assert again.returncode == 1
        lines = again.stderr.strip().splitlines()
        assert len(lines) == 1, again.stderr
        assert lines[0].startswith(f"error: {book_path} records a live deployment on this node")
        assert hub in lines[0] and "--force" in lines[0]
        assert "Deploying" not in again.stdout
        assert json.loads(book_path.read_text(encoding="utf-8")) == book
        forced = run_cli("--rpc-url", node.rpc_url, "deploy", "--force", timeout=120)
        assert forced.returncode == 0, forced.stderr
        rebook = json.loads(book_path.read_text(encoding="utf-8"))
        assert rebook["contracts"]["TandemHub"] != hub
    for name in ("UniswapV2Adapter", "UniswapV3Adapter", "UniswapV2Router02", "token:USDC"):
        assert name in book["contracts"]
    assert hub in result.stdout
    assert str(book_path) in result.stdout


def test_local_nodes_keep_books_of_their_own(
    settings: Settings, node: LocalNode, deployment: Deployment, tmp_path: Path
) -> None:
    """Two anvils both run chain 31337; their books are told apart by the genesis hash, and a
    book whose contracts are gone (a restarted node) does not stop a deployment."""
    local = settings.model_copy(update={"deployments_dir": tmp_path})
    w3 = deployment.w3
    with LocalNode(settings=settings) as other:
        other_w3 = Web3(Web3.HTTPProvider(other.rpc_url))
        mine, theirs = artifacts.book_key(w3), artifacts.book_key(other_w3)
        assert mine.chain_id == theirs.chain_id == 31337
        assert mine.name != theirs.name
        assert mine.genesis == w3.eth.get_block(0)["hash"].to_0x_hex()
        assert mine.name == f"31337-{mine.genesis[2:14]}"
        path = artifacts.save_deployment(mine, deployment.addresses(), local)
        assert path == tmp_path / f"{mine.name}.json"
        assert json.loads(path.read_text())["genesis"] == mine.genesis
        with pytest.raises(DeploymentError, match="nothing is deployed on chain 31337"):
            artifacts.load_deployment(theirs, local)
        # The other node has none of these contracts: its own book may name them, unrefused.
        artifacts.save_deployment(theirs, deployment.addresses(), local)
        protocol.refuse_live_book(other_w3, local)
    with pytest.raises(DeploymentError, match="records a live deployment on this node"):
        protocol.refuse_live_book(w3, local)
    assert protocol.load_local(w3, local).hub.address == deployment.hub.address


def test_cli_status_names_the_nodes_book(
    settings: Settings,
    node: LocalNode,
    deployment: Deployment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TANDEM_DEPLOYMENTS_DIR", str(tmp_path))
    local = settings.model_copy(update={"deployments_dir": tmp_path})
    key = artifacts.book_key(deployment.w3)
    path = artifacts.save_deployment(key, deployment.addresses(), local)
    result = run_cli("--rpc-url", node.rpc_url, "status")
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout
    assert deployment.hub.address in result.stdout


def test_cli_deploy_without_a_node_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_DEPLOYMENTS_DIR", str(tmp_path))
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("--rpc-url", url, "deploy")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: no node answers at {url}")
    assert "Traceback" not in result.stdout + result.stderr
    assert not any(tmp_path.iterdir())  # nothing was recorded


def test_cli_demo_runs_to_completion_and_stops_its_anvil() -> None:
    started = time.monotonic()
    result = run_cli("demo", timeout=90)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "Trade 8" in result.stdout
    # A follower joins Ben's pool once it holds WETH: the master, the pool and every follower
    # (Cleo, Dev, Eve and the newcomer) hold the same weight of WETH.
    late = LATE_JOINER.search(result.stdout)
    assert late, result.stdout
    weights = dict(re.findall(r"(\w+) (\d+\.\d\d)%", late.group(1)))
    assert list(weights) == ["master", "pool", "Cleo", "Dev", "Eve", "Finn"], late.group(0)
    assert len(set(weights.values())) == 1 and float(weights["master"]) > 0, late.group(0)
    # The risk scene: a fee on a gain, a losing streak that suspends copying, stop-losses.
    assert "Performance fee:" in result.stdout
    assert "pool part skipped: master suspended" in result.stdout
    assert "Copying suspended:" in result.stdout
    assert "stop-loss" in result.stdout
    # The indexer reads the demo's chain and shows its vaults and a follower from its database.
    assert re.search(r"The indexer reads the chain: \d+ events, 2 vaults", result.stdout)
    assert "Finn's portfolio" in result.stdout
    # It ends with the rankings the indexer computed (every window, nobody ranked yet on a chain
    # days old, and why) and Finn's allocation to Ben from storage.
    rankings = re.findall(
        r"│ +\d │ (Ada|Ben) +│ (7d|30d|90d|all) +│ +(-?\d+\.\d\d)% │.*│ +(\d+) │ +(yes|no) │",
        result.stdout,
    )
    assert {(m, w) for m, w, *_ in rankings} == {
        (m, w) for m in ("Ada", "Ben") for w in ("7d", "30d", "90d", "all")
    }, result.stdout[-4000:]
    assert {ranked for *_, ranked in rankings} == {"no"}
    assert all(-100 < float(roi) < 100 and int(days) >= 1 for _, _, roi, days, _ in rankings)
    assert any(float(roi) != 0 for _, _, roi, _, _ in rankings)
    assert "Nobody is ranked yet (ranked: no): a ranking needs 30 days" in result.stdout
    finn = re.search(
        r"│ Ben +│ +([\d,]+\.\d\d) │ +([\d,]+\.\d\d) │.*10% / ([\d,]+) ", result.stdout
    )
    assert finn, result.stdout[-2000:]
    entry, value = (float(x.replace(",", "")) for x in finn.group(1, 2))
    assert entry > 1_000 and 0.5 * entry < value < 2 * entry
    assert "Done: the local chain is stopped." in result.stdout
    assert elapsed < 30, f"the demo took {elapsed:.0f} s"

    found = ANVIL_AT.search(result.stdout)
    assert found, result.stdout[:500]
    port = int(found.group(2))
    assert not port_in_use(port)
    assert anvil_processes_on(port) == ""


def test_the_chain_client_asks_the_node_for_its_chain_id_once(
    node: LocalNode, settings: Settings
) -> None:
    # web3 validates every call and transaction against the node's chain id: asked of the node
    # each time, it was two more round trips to every eth_call (three for one, to a remote node).
    with node_proxy(node.rpc_url) as proxy:
        w3 = chain.connect(proxy.url, settings=settings)
        sender = w3.eth.accounts[0]
        proxy.posts.clear()
        for _ in range(3):
            w3.eth.call({"from": sender, "to": sender, "data": "0x"})
        w3.eth.estimate_gas({"from": sender, "to": sender, "value": 1})
    asked = [method for post in proxy.posts for method in post]
    assert asked == ["eth_call"] * 3 + ["eth_estimateGas"]

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
from web3 import Web3

from tandem.compiler import prepare_ape, project_sources, solc_package_version
from tandem.config import Settings
from tandem.node import LocalNode, free_port, port_in_use

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


def test_ape_run_deploy_on_a_running_anvil(
    settings: Settings, ape_env: dict[str, str], tmp_path: Path
) -> None:
    deployments = tmp_path / "deployments"
    with LocalNode(settings=settings) as node:
        env = {
            **ape_env,
            "APE_FOUNDRY_HOST": node.rpc_url,  # ape connects to this node instead of its own
            "TANDEM_DEPLOYMENTS_DIR": str(deployments),
        }
        result = run_ape(settings, env, "run", "deploy", "--network", "ethereum:local:foundry")
        assert result.returncode == 0, result.stdout + result.stderr
        found = HUB_LINE.search(result.stdout)
        assert found, result.stdout
        hub, chain_id = found.group(1), int(found.group(2))
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        assert len(w3.eth.get_code(Web3.to_checksum_address(hub))) > 0
        assert node.running  # ape did not stop a node it did not start

    book = json.loads((deployments / f"{chain_id}.json").read_text(encoding="utf-8"))
    assert book["contracts"]["TandemHub"] == hub


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
    assert (tmp_path / "deployments" / "31337.json").is_file()
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

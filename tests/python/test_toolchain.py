"""Settings, compiler, artifacts, revert decoding and the forge configuration.

Compiles a small sample project (its own contracts/, the repository's compiler and node_modules).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from tandem import artifacts, chain
from tandem.compiler import compile_project, compile_sources
from tandem.config import Settings, load_settings
from tandem.errors import ArtifactError, CompileError, ConfigError, DeploymentError, RevertError

REPO = Path(__file__).resolve().parents[2]

SAMPLE = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ISwapRouter} from "@uniswap/v3-periphery/contracts/interfaces/ISwapRouter.sol";
import "@uniswap/v2-periphery/contracts/interfaces/IUniswapV2Router02.sol";

contract Sample is ERC20 {
    struct Limit { uint256 cap; address owner; }
    error OverLimit(Limit limit, uint256 requested);
    error Closed();

    constructor() ERC20("Sample", "SMP") { _mint(msg.sender, 1e24); }

    function overLimit(uint256 requested) external view {
        revert OverLimit(Limit(100, msg.sender), requested);
    }
    function closed() external pure { revert Closed(); }
    function message() external pure { revert("plain message"); }
    function divide(uint256 a, uint256 b) external pure returns (uint256) { return a / b; }
}
"""


def make_project(root: Path, sources: dict[str, str]) -> Settings:
    """A project root sharing the repository's compiler and node_modules."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "package.json").write_text("{}\n")
    for name in ("bin", "node_modules"):
        (root / name).symlink_to(REPO / name)
    for name, text in sources.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return load_settings(project_root=root)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = make_project(tmp_path_factory.mktemp("sample"), {"contracts/Sample.sol": SAMPLE})
    compile_project(settings)
    return settings


# --- settings


def test_settings_defaults_point_into_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TANDEM_"):
            monkeypatch.delenv(key)
    settings = load_settings()
    assert settings.project_root == REPO
    assert settings.rpc_url == "http://127.0.0.1:8545"
    assert settings.paths.artifacts_dir == REPO / "build" / "contracts"
    assert settings.paths.deployment(31337) == REPO / "deployments" / "31337.json"
    assert settings.paths.solc == REPO / "bin" / "solc"
    assert settings.paths.foundry_binary("anvil").is_file()


def test_environment_beats_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "custom.toml"
    config.write_text('rpc_url = "http://10.0.0.1:8545"\nanvil_port = 9000\nbuild_dir = "out"\n')
    monkeypatch.setenv("TANDEM_CONFIG", str(config))
    monkeypatch.setenv("TANDEM_ANVIL_PORT", "9100")
    settings = load_settings()
    assert settings.rpc_url == "http://10.0.0.1:8545"
    assert settings.anvil_port == 9100
    assert settings.build_dir == settings.project_root / "out"


def test_bad_settings_raise_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tandem.toml"
    config.write_text("anvil_prot = 9000\n")
    with pytest.raises(ConfigError, match="anvil_prot"):
        load_settings(config)
    monkeypatch.setenv("TANDEM_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


# --- compiler and artifacts


def test_compile_writes_artifacts_and_reuses_them(sample: Settings) -> None:
    art = artifacts.load("Sample", sample)
    assert art.deployable and art.deployed_bytecode.startswith("0x6080")
    assert art.source_name == "contracts/Sample.sol"
    assert art.compiler is not None and "0.8.28" in art.compiler
    assert "transfer(address,uint256)" in art.method_identifiers
    # Library contracts are stored too, so their ABIs (and errors) are available by name.
    assert artifacts.load("ISwapRouter", sample).abi
    assert artifacts.load("IUniswapV2Router02", sample).abi

    again = compile_project(sample)
    assert again.cached and "Sample" in again.contracts


def test_changed_source_is_recompiled(tmp_path: Path) -> None:
    settings = make_project(tmp_path, {"contracts/A.sol": "pragma solidity ^0.8.0; contract A {}"})
    assert not compile_project(settings).cached
    (tmp_path / "contracts" / "A.sol").write_text("pragma solidity ^0.8.0; contract B {}")
    result = compile_project(settings)
    assert not result.cached and result.contracts == ["B"]
    assert not settings.paths.artifact("A").exists()  # stale artifacts are removed


def test_compile_errors_are_readable(tmp_path: Path) -> None:
    settings = make_project(
        tmp_path, {"contracts/Bad.sol": "pragma solidity ^0.8.0;\ncontract X {"}
    )
    with pytest.raises(CompileError) as caught:
        compile_project(settings)
    assert "contracts/Bad.sol:2" in str(caught.value)
    assert caught.value.details and "ParserError" in caught.value.details


def test_compile_sources_in_memory(sample: Settings) -> None:
    found, warnings = compile_sources(
        {"Tmp.sol": "pragma solidity ^0.8.0; contract Tmp { function f() external {} }"}, sample
    )
    assert set(found) == {"Tmp"}
    # The project's own warnings are reported (this source has no SPDX line); libraries' are not.
    assert len(warnings) == 1 and "SPDX" in warnings[0]


def test_missing_artifact_says_to_compile(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="tandem compile"):
        artifacts.load("Nothing", load_settings(project_root=tmp_path))


def test_uniswap_artifacts_come_from_npm(settings: Settings) -> None:
    for name in artifacts.UNISWAP_ARTIFACTS:
        art = artifacts.uniswap(name, settings)
        assert art.abi
        assert art.deployable == (name != "IERC20")
    with pytest.raises(ArtifactError):
        artifacts.uniswap("UniswapV4", settings)


def test_deployments_round_trip(tmp_path: Path) -> None:
    settings = load_settings(project_root=tmp_path)
    with pytest.raises(DeploymentError, match="tandem deploy"):
        artifacts.load_deployment(31337, settings)
    artifacts.save_deployment(31337, {"A": "0x1"}, settings)
    path = artifacts.save_deployment(31337, {"B": "0x2"}, settings)
    assert artifacts.load_deployment(31337, settings) == {"A": "0x1", "B": "0x2"}
    assert json.loads(path.read_text())["chainId"] == 31337


# --- reverts


def test_reverts_are_decoded(w3: Web3, sample: Settings) -> None:
    contract, _ = chain.deploy(w3, "Sample", settings=sample)
    me = w3.eth.default_account
    cases = [
        (contract.functions.overLimit(7), f"OverLimit(limit=(100, {me}), requested=7)"),
        (contract.functions.closed(), "Closed()"),
        (contract.functions.message(), "Error('plain message')"),
        (contract.functions.divide(1, 0), "Panic(0x12: division or modulo by zero)"),
        (
            contract.functions.transfer(contract.address, 10**30),
            f"ERC20InsufficientBalance(sender={me}, balance={10**24}, needed={10**30})",
        ),
    ]
    for fn, reason in cases:
        with pytest.raises(RevertError) as caught:
            chain.transact(fn, settings=sample)
        assert caught.value.reason == reason


def test_mined_revert_is_decoded_by_replay(w3: Web3, sample: Settings) -> None:
    contract, _ = chain.deploy(w3, "Sample", settings=sample)
    # A fixed gas limit skips estimation, so the transaction is mined and fails on chain.
    with pytest.raises(RevertError) as caught:
        chain.transact(contract.functions.closed(), gas=100_000, settings=sample)
    assert caught.value.error_name == "Closed"


# --- command line and forge


def test_cli_compile(tmp_path: Path) -> None:
    make_project(tmp_path, {"contracts/C.sol": "pragma solidity ^0.8.0; contract C {}"})
    env = {**os.environ, "TANDEM_PROJECT_ROOT": str(tmp_path)}
    command = [sys.executable, "-m", "tandem.cli", "compile"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert "Compiled 1 contracts" in first.stdout
    second = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert second.returncode == 0 and "Up to date" in second.stdout
    assert (tmp_path / "build" / "contracts" / "C.json").is_file()


def test_forge_builds_with_the_project_config(tmp_path: Path) -> None:
    make_project(tmp_path, {"contracts/Sample.sol": SAMPLE})
    shutil.copy(REPO / "foundry.toml", tmp_path / "foundry.toml")
    forge = load_settings(project_root=tmp_path).paths.foundry_binary("forge")
    result = subprocess.run(
        [str(forge), "build"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    built = json.loads((tmp_path / "build/forge/Sample.sol/Sample.json").read_text())
    assert built["bytecode"]["object"].startswith("0x6080")


def test_bin_forge_passes_a_failing_test_runs_exit_status_on(tmp_path: Path) -> None:
    """make and CI run bin/forge: a failing forge test must fail them (the npm launcher would
    report success)."""
    failing = (
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.28;\n"
        'contract FailingTest { function test_fails() public pure { require(false, "boom"); } }\n'
    )
    make_project(tmp_path, {"tests/forge/Failing.t.sol": failing, "contracts/Sample.sol": SAMPLE})
    shutil.copy(REPO / "foundry.toml", tmp_path / "foundry.toml")
    result = subprocess.run(
        [str(REPO / "bin" / "forge"), "test"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "test_fails" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1, result.stdout + result.stderr


# --- the project's own contracts

# A vault's three parts run on one storage (each reaches the next by delegatecall), so their
# layouts must be the same, slot for slot.
VAULT_PARTS = ("TandemVault", "TandemVaultExits", "TandemVaultLens")
# Every contract the protocol deploys; the test contracts (contracts/testing/) are not deployed
# on a live chain, nor the read-only calls' code (contracts/reads/: its constructor answers an
# eth_call).
DEPLOYED = (
    "TandemHub",
    *VAULT_PARTS,
    "UniswapV2Adapter",
    "UniswapV3Adapter",
    "TandemTimelock",
)
# EIP-170 and EIP-3860 limits, and the room each contract keeps below the runtime one so that a
# fix does not have to fight for bytes. (It was 2 KB; the entry bound checked token by token and
# from above, a security fix, spent about 230 bytes of TandemVault's, which is what it is for.)
MAX_RUNTIME_BYTES = 24_576
MAX_INITCODE_BYTES = 49_152
RUNTIME_HEADROOM = 1_536
# solc names struct, enum and contract types with the AST id of their definition, which differs
# between the parts' compilations of the same definition: compare the names without it.
_AST_ID = re.compile(r"(t_(?:struct|enum|contract|userDefinedValueType)\(\w+\))\d+")


def _type_name(name: str) -> str:
    return _AST_ID.sub(r"\1", name)


def _layout(settings: Settings, name: str) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """A contract's storage as (slot, offset, label, type) entries, and the types they use
    (structs with their members' places), without AST ids."""
    layout = artifacts.load(name, settings).storage_layout
    assert layout is not None, f"{name} was compiled without its storage layout"
    entries = [
        (int(e["slot"]), e["offset"], e["label"], _type_name(e["type"])) for e in layout["storage"]
    ]
    types = {}
    for key, info in (layout.get("types") or {}).items():
        described = {
            field: _type_name(value) if isinstance(value, str) else value
            for field, value in info.items()
            if field != "members"
        }
        described["members"] = [
            (int(m["slot"]), m["offset"], m["label"], _type_name(m["type"]))
            for m in info.get("members", [])
        ]
        types[_type_name(key)] = described
    return entries, types


@pytest.fixture(scope="module")
def project(settings: Settings) -> Settings:
    """The project's own contracts, compiled (a no-op when the build is up to date)."""
    compile_project(settings)
    return settings


def test_the_vault_parts_share_one_storage_layout(project: Settings) -> None:
    trade_path, trade_types = _layout(project, "TandemVault")
    assert [label for _, _, label, _ in trade_path][:2] == ["_delegate", "_totalShares"]
    for part in VAULT_PARTS[1:]:
        entries, types = _layout(project, part)
        assert entries == trade_path, f"{part}'s storage differs from TandemVault's"
        assert types == trade_types, f"{part}'s storage types differ from TandemVault's"


def test_every_deployed_contract_fits_the_size_limits_with_room_to_spare(
    project: Settings,
) -> None:
    compiled = {
        a.name: a
        for a in artifacts.project_artifacts(project)
        if a.deployable
        and (a.source_name or "").startswith("contracts/")
        and not (a.source_name or "").startswith(("contracts/testing/", "contracts/reads/"))
    }
    # Nothing deployed is left out of the check, and nothing is checked that is not deployed.
    assert set(compiled) == set(DEPLOYED)
    for name in DEPLOYED:
        runtime = (len(compiled[name].deployed_bytecode) - 2) // 2
        initcode = (len(compiled[name].bytecode) - 2) // 2
        assert runtime <= MAX_RUNTIME_BYTES - RUNTIME_HEADROOM, (
            f"{name}: {runtime:,} bytes of runtime code, "
            f"{MAX_RUNTIME_BYTES - runtime:,} below the limit"
        )
        assert initcode < MAX_INITCODE_BYTES, f"{name}: {initcode:,} bytes of initcode"

"""Contract ABIs and bytecode, and the per-chain address book of deployments.

The one module that knows where artifacts live: compiled project contracts in build/contracts,
the real Uniswap V2/V3 builds shipped in node_modules, and deployments/<chain_id>.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.config import ProjectPaths, Settings, load_settings
from tandem.errors import ArtifactError, DeploymentError

# Uniswap's own published builds (not recompiled: the V2 router hard-codes the pair init-code
# hash of exactly this factory build, and V3 was built with solc 0.7.6).
UNISWAP_ARTIFACTS: dict[str, str] = {
    "WETH9": "@uniswap/v2-periphery/build/WETH9.json",
    "UniswapV2Factory": "@uniswap/v2-core/build/UniswapV2Factory.json",
    "UniswapV2Pair": "@uniswap/v2-core/build/UniswapV2Pair.json",
    "UniswapV2Router02": "@uniswap/v2-periphery/build/UniswapV2Router02.json",
    "UniswapV3Factory": (
        "@uniswap/v3-core/artifacts/contracts/UniswapV3Factory.sol/UniswapV3Factory.json"
    ),
    "UniswapV3Pool": "@uniswap/v3-core/artifacts/contracts/UniswapV3Pool.sol/UniswapV3Pool.json",
    "SwapRouter": "@uniswap/v3-periphery/artifacts/contracts/SwapRouter.sol/SwapRouter.json",
    "NonfungiblePositionManager": (
        "@uniswap/v3-periphery/artifacts/contracts/NonfungiblePositionManager.sol/"
        "NonfungiblePositionManager.json"
    ),
    "QuoterV2": "@uniswap/v3-periphery/artifacts/contracts/lens/QuoterV2.sol/QuoterV2.json",
    # A plain ERC20 interface, handy for approving and reading any token.
    "IERC20": "@uniswap/v2-core/build/IERC20.json",
}

# A vault runs in three contracts behind one address (the trade path, which forwards what it does
# not have to the exits part, which forwards views to the lens): its ABI is the interface of all
# three, not any one part's.
VAULT_INTERFACE = "ITandemVault"

NPM_INSTALL_HINT = "run `npm install` in the project root"
COMPILE_HINT = "run `tandem compile`"


@dataclass(frozen=True)
class Artifact:
    """A contract's interface and code; ``bytecode`` is 0x-prefixed, ``0x`` for interfaces."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str = "0x"
    source_name: str | None = None
    compiler: str | None = None
    method_identifiers: dict[str, str] = field(default_factory=dict)
    # solc's storageLayout: the vault's parts must agree on it (they share one storage).
    storage_layout: dict[str, Any] | None = None

    @property
    def deployable(self) -> bool:
        return len(self.bytecode) > 2

    def to_json(self) -> dict[str, Any]:
        return {
            "contractName": self.name,
            "sourceName": self.source_name,
            "compiler": self.compiler,
            "abi": self.abi,
            "bytecode": self.bytecode,
            "deployedBytecode": self.deployed_bytecode,
            "methodIdentifiers": self.method_identifiers,
            "storageLayout": self.storage_layout,
        }

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> Artifact:
        """Accepts the project's format, Hardhat's, and Uniswap V2's (waffle) build format."""
        return cls(
            name=data.get("contractName") or name,
            abi=list(data["abi"]),
            bytecode=_hex(data.get("bytecode")),
            deployed_bytecode=_hex(data.get("deployedBytecode")),
            source_name=data.get("sourceName"),
            compiler=data.get("compiler"),
            method_identifiers=dict(data.get("methodIdentifiers") or {}),
            storage_layout=data.get("storageLayout"),
        )


def _hex(value: Any) -> str:
    """Normalise bytecode to a 0x-prefixed string (waffle builds omit the prefix)."""
    if isinstance(value, Mapping):  # some tools nest it as {"object": "..."}
        value = value.get("object")
    text = str(value or "")
    return text if text.startswith("0x") else "0x" + text


def _paths(settings: Settings | None) -> ProjectPaths:
    return (settings or load_settings()).paths


def _read_json(path: Path, missing: str, hint: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(missing, hint) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}", hint) from exc


def load(name: str, settings: Settings | None = None) -> Artifact:
    """A compiled project contract (or a library contract it imports) by contract name."""
    paths = _paths(settings)
    path = paths.artifact(name)
    data = _read_json(
        path, f"no compiled contract named {name!r} in {paths.artifacts_dir}", COMPILE_HINT
    )
    return Artifact.from_json(name, data)


def vault_abi(settings: Settings | None = None) -> list[dict[str, Any]]:
    """The ABI to call a vault with: every function, error and event of its three parts, and
    every error of the hub, the adapters and the libraries a vault's revert may pass on."""
    from tandem.reverts import with_errors

    return with_errors(load(VAULT_INTERFACE, settings).abi)


def project_artifacts(settings: Settings | None = None) -> list[Artifact]:
    """Every compiled artifact in build/contracts (empty when nothing was compiled yet)."""
    return artifacts_in(_paths(settings).artifacts_dir)


def artifacts_in(directory: Path) -> list[Artifact]:
    """Every artifact file in ``directory``."""
    if not directory.is_dir():
        return []
    return [
        Artifact.from_json(path.stem, _read_json(path, f"{path} vanished", COMPILE_HINT))
        for path in sorted(directory.glob("*.json"))
    ]


def write(artifact: Artifact, settings: Settings | None = None) -> Path:
    path = _paths(settings).artifact(artifact.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(artifact.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def uniswap(name: str, settings: Settings | None = None) -> Artifact:
    """A real Uniswap artifact from node_modules, by contract name (see UNISWAP_ARTIFACTS)."""
    if name not in UNISWAP_ARTIFACTS:
        known = ", ".join(sorted(UNISWAP_ARTIFACTS))
        raise ArtifactError(f"unknown Uniswap artifact {name!r}", f"choose one of {known}")
    path = _paths(settings).node_modules / UNISWAP_ARTIFACTS[name]
    data = _read_json(path, f"Uniswap artifact {name} not found at {path}", NPM_INSTALL_HINT)
    return Artifact.from_json(name, data)


# --- deployments: deployments/<key>.json = {"chainId": 31337, "genesis": "0x..", "contracts": {}}
#
# A public chain's book is deployments/<chain id>.json. Every local node (anvil, Hardhat) runs
# chain 31337 or 1337, and a restarted one forgets its contracts: a local node's book is keyed by
# the chain id and the hash of the node's genesis block as well, deployments/31337-<hash>.json
# (the hash's first 12 hex digits), so two nodes, or a node and its restart, never share a book.

LOCAL_CHAIN_IDS = frozenset({31337, 1337})
GENESIS_DIGITS = 12


@dataclass(frozen=True)
class BookKey:
    """Which address book a node's deployment is recorded in."""

    chain_id: int
    genesis: str | None = None  # block 0's hash, 0x-prefixed: local chains only

    @property
    def name(self) -> str:
        if self.genesis is None:
            return str(self.chain_id)
        return f"{self.chain_id}-{self.genesis.removeprefix('0x')[:GENESIS_DIGITS].lower()}"

    @classmethod
    def of(cls, chain_id: int, genesis_hash: str | bytes | None) -> BookKey:
        """The key for a chain whose block 0 has ``genesis_hash`` (ignored off local chains)."""
        if chain_id not in LOCAL_CHAIN_IDS or genesis_hash is None:
            return cls(chain_id)
        text = genesis_hash.hex() if isinstance(genesis_hash, bytes) else str(genesis_hash)
        return cls(chain_id, "0x" + text.removeprefix("0x").lower())


def book_key(w3: Any) -> BookKey:
    """The address book of the node ``w3`` talks to (a ``web3.Web3``)."""
    chain_id = int(w3.eth.chain_id)
    if chain_id not in LOCAL_CHAIN_IDS:
        return BookKey(chain_id)
    return BookKey.of(chain_id, bytes(w3.eth.get_block(0)["hash"]))


async def book_key_async(w3: Any) -> BookKey:
    """``book_key`` for a ``web3.AsyncWeb3``."""
    chain_id = int(await w3.eth.chain_id)
    if chain_id not in LOCAL_CHAIN_IDS:
        return BookKey(chain_id)
    return BookKey.of(chain_id, bytes((await w3.eth.get_block(0))["hash"]))


def _key(key: int | BookKey) -> BookKey:
    return key if isinstance(key, BookKey) else BookKey(int(key))


def deployment_path(key: int | BookKey, settings: Settings | None = None) -> Path:
    return _paths(settings).deployment(_key(key).name)


def load_deployment(key: int | BookKey, settings: Settings | None = None) -> dict[str, str]:
    """Contract name -> address recorded for ``key`` (a node's ``book_key``, or a chain id)."""
    key = _key(key)
    path = deployment_path(key, settings)
    where = f"chain {key.chain_id}" + (f" (genesis {key.genesis[:14]}..)" if key.genesis else "")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeploymentError(
            f"nothing is deployed on {where} (no {path})", "run `tandem deploy`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DeploymentError(f"cannot read {path}: {exc}", "delete it and redeploy") from exc
    return dict(data.get("contracts", {}))


def save_deployment(
    key: int | BookKey,
    contracts: Mapping[str, str],
    settings: Settings | None = None,
    *,
    merge: bool = True,
) -> Path:
    """Record addresses for ``key``; with ``merge`` keep entries not named in ``contracts``."""
    key = _key(key)
    path = deployment_path(key, settings)
    book: dict[str, str] = {}
    if merge and path.is_file():
        book = load_deployment(key, settings)
    book.update(contracts)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"chainId": key.chain_id}
    if key.genesis is not None:
        payload["genesis"] = key.genesis
    payload["contracts"] = dict(sorted(book.items()))
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path

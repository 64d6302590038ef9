"""Compile the Solidity sources under contracts/ into build/contracts/<Name>.json.

Drives the project's bin/solc (solc-js behind the native command line) through py-solc-x.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import solcx
import solcx.wrapper
from solcx.exceptions import SolcError

from tandem import artifacts
from tandem.artifacts import Artifact
from tandem.config import ProjectPaths, Settings, load_settings
from tandem.errors import CompileError

# Remappings rather than --include-path: compile_standard() cannot pass --include-path, and
# foundry.toml uses the same remappings, so both builds name library sources identically.
REMAPPINGS = [
    "@openzeppelin/=node_modules/@openzeppelin/",
    "@uniswap/=node_modules/@uniswap/",
]

# The same settings in foundry.toml and ape-config.yaml. Vaults run `trade` far more often than
# they are deployed: optimise for runtime gas (via-IR saved about 5% of a trade), with as many
# runs as keep the vault under the 24 KiB contract size limit.
SOLC_SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 20_000},
    "evmVersion": "cancun",
    "viaIR": True,
    "remappings": REMAPPINGS,
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.methodIdentifiers",
                "storageLayout",
            ]
        }
    },
}

SOLC_HINT = "run `npm install` in the project root (bin/solc runs the npm `solc` package)"
_LOCATION = re.compile(r"-->\s*(\S+?:\d+:\d+)")


@dataclass(frozen=True)
class CompileResult:
    """What a compile produced; ``cached`` is True when the previous build was reused."""

    contracts: list[str]
    compiler_version: str
    cached: bool
    warnings: list[str] = field(default_factory=list)


def solc_package_version(paths: ProjectPaths) -> str:
    """The compiler version pinned by npm, read without starting the compiler."""
    package = paths.node_modules / "solc" / "package.json"
    try:
        return str(json.loads(package.read_text(encoding="utf-8"))["version"])
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise CompileError(
            f"the Solidity compiler is not installed ({package})", SOLC_HINT
        ) from exc


def project_sources(paths: ProjectPaths) -> dict[str, str]:
    """Every .sol file under contracts/, keyed by its path relative to the project root.

    Hidden folders are skipped: `ape compile` copies dependency sources into contracts/.cache.
    """
    if not paths.contracts_dir.is_dir():
        raise CompileError(f"no contracts directory at {paths.contracts_dir}")
    return {
        path.relative_to(paths.root).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(paths.contracts_dir.rglob("*.sol"))
        if not any(part.startswith(".") for part in path.relative_to(paths.contracts_dir).parts)
    }


def _digest(paths: ProjectPaths, sources: Mapping[str, str], version: str) -> str:
    """Hash of everything that decides the output: sources, settings, compiler, npm lock."""
    digest = hashlib.sha256()
    digest.update(version.encode())
    digest.update(json.dumps(SOLC_SETTINGS, sort_keys=True).encode())
    lock = paths.root / "package-lock.json"
    if lock.is_file():  # library sources come from node_modules; the lock pins their versions
        digest.update(lock.read_bytes())
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return digest.hexdigest()


def _short(error: Mapping[str, Any]) -> str:
    """One line per diagnostic: ``contracts/X.sol:12:5: TypeError: message``."""
    where = _LOCATION.search(error.get("formattedMessage", ""))
    prefix = f"{where.group(1)}: " if where else ""
    return f"{prefix}{error.get('type', 'Error')}: {error.get('message', '').strip()}"


def _raise_compile_errors(errors: list[Mapping[str, Any]]) -> None:
    failures = [e for e in errors if e.get("severity") == "error"]
    if not failures:
        return
    details = "\n\n".join(str(e.get("formattedMessage") or _short(e)).rstrip() for e in failures)
    count = f"{len(failures)} error{'s' if len(failures) > 1 else ''}"
    raise CompileError(
        f"compilation failed with {count}; first: {_short(failures[0])}", details=details
    )


def _run_solc(paths: ProjectPaths, sources: Mapping[str, str]) -> dict[str, Any]:
    if not paths.solc.is_file():
        raise CompileError(f"the project compiler {paths.solc} is missing")
    if shutil.which("node") is None:
        raise CompileError("Node.js is not installed", "bin/solc needs `node` on PATH")
    standard_input = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": SOLC_SETTINGS,
    }
    try:
        # solc_binary= instead of solcx.import_installed_solc(): importing copies bin/solc to
        # ~/.solcx, where the script can no longer find node_modules next to it.
        output: dict[str, Any] = solcx.compile_standard(
            standard_input,
            base_path=paths.root,
            allow_paths=[paths.root],
            solc_binary=paths.solc,
            allow_empty=True,
        )
    except SolcError as exc:
        if exc.error_dict:  # despite its name: the compiler's list of diagnostics
            _raise_compile_errors(list(exc.error_dict))
        raise CompileError(
            f"the compiler failed: {(exc.stderr_data or exc.message).strip()}", SOLC_HINT
        ) from exc
    except OSError as exc:
        raise CompileError(f"cannot run {paths.solc}: {exc}", SOLC_HINT) from exc
    _raise_compile_errors(output.get("errors", []))
    return output


def compile_sources(
    sources: Mapping[str, str], settings: Settings | None = None
) -> tuple[dict[str, Artifact], list[str]]:
    """Compile in memory: source unit name -> text in, (contract name -> artifact, warnings) out.

    Imports of ``@openzeppelin/...`` and ``@uniswap/...`` resolve from node_modules. When two
    contracts share a name, the one from ``sources`` wins over an imported library contract.
    """
    paths = (settings or load_settings()).paths
    output = _run_solc(paths, sources)
    version = str(solcx.wrapper.get_solc_version(paths.solc, with_commit_hash=True))
    found: dict[str, Artifact] = {}
    # Own sources first, so their names take precedence over imported ones.
    ordered = sorted(output.get("contracts", {}).items(), key=lambda item: item[0] not in sources)
    for source_name, contracts in ordered:
        for name, data in contracts.items():
            if name in found:
                if source_name in sources and found[name].source_name in sources:
                    raise CompileError(
                        f"two contracts are named {name} ({found[name].source_name} and "
                        f"{source_name})",
                        "rename one: artifacts are stored by contract name",
                    )
                continue
            found[name] = Artifact(
                name=name,
                abi=data.get("abi", []),
                bytecode="0x" + data["evm"]["bytecode"]["object"],
                deployed_bytecode="0x" + data["evm"]["deployedBytecode"]["object"],
                source_name=source_name,
                compiler=f"solc {version}",
                method_identifiers=data["evm"].get("methodIdentifiers", {}),
                storage_layout=data.get("storageLayout"),
            )
    warnings = [
        _short(e)
        for e in output.get("errors", [])
        if e.get("severity") == "warning" and _in_sources(e, sources)
    ]
    return found, warnings


def _in_sources(error: Mapping[str, Any], sources: Mapping[str, str]) -> bool:
    """Library warnings are not the project's to fix; report only its own."""
    return (error.get("sourceLocation") or {}).get("file") in sources


def _read_stamp(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def compile_project(settings: Settings | None = None, *, force: bool = False) -> CompileResult:
    """Compile contracts/ into build/contracts, unless nothing changed since the last build."""
    settings = settings or load_settings()
    paths = settings.paths
    sources = project_sources(paths)
    if not sources:
        raise CompileError(f"no .sol files under {paths.contracts_dir}")
    version = solc_package_version(paths)
    digest = _digest(paths, sources, version)
    stamp = _read_stamp(paths.compile_stamp)
    names: list[str] = list(stamp.get("contracts", []))
    if (
        not force
        and stamp.get("digest") == digest
        and all(paths.artifact(name).is_file() for name in names)
    ):
        return CompileResult(names, str(stamp.get("compiler", version)), cached=True)

    compiled, warnings = compile_sources(sources, settings)
    # Drop the stamp first: if writing is interrupted, the next run compiles again.
    paths.compile_stamp.unlink(missing_ok=True)
    if paths.artifacts_dir.is_dir():
        for old in paths.artifacts_dir.glob("*.json"):
            old.unlink()
    for artifact in compiled.values():
        artifacts.write(artifact, settings)
    full_version = next(iter(compiled.values())).compiler if compiled else f"solc {version}"
    names = sorted(compiled)
    paths.compile_stamp.write_text(
        json.dumps({"digest": digest, "compiler": full_version, "contracts": names}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    return CompileResult(names, str(full_version), cached=False, warnings=warnings)


# --- inputs for `ape compile` (see ape-config.yaml)

# Only the Uniswap interface folders: Ape copies each dependency into contracts/.cache, and it
# scans at most 500 files under contracts/, so whole npm packages would hide project sources.
APE_UNISWAP_FOLDERS = tuple(
    f"{package}/contracts/interfaces"
    for package in ("v2-core", "v2-periphery", "v3-core", "v3-periphery")
)


def _relink(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


def prepare_ape(settings: Settings | None = None) -> Path:
    """Lay out build/ape for ape-solidity and return it; cheap and idempotent.

    - build/ape/solcx/solc-v<version> -> bin/solc: ape-solidity finds compilers only in a
      py-solc-x install folder (SOLCX_BINARY_PATH); a link, not a copy, because bin/solc locates
      node_modules relative to its real path.
    - build/ape/openzeppelin: OpenZeppelin's sources without its 200 JSON build files.
    - build/ape/uniswap: the Uniswap interface folders the contracts may import.
    """
    paths = (settings or load_settings()).paths
    root = paths.build_dir / "ape"
    _relink(root / "solcx" / f"solc-v{solc_package_version(paths)}", paths.solc)
    openzeppelin = paths.node_modules / "@openzeppelin" / "contracts"
    if not openzeppelin.is_dir():
        raise CompileError(f"OpenZeppelin is not installed ({openzeppelin})", SOLC_HINT)
    for folder in openzeppelin.iterdir():
        if folder.is_dir() and folder.name != "build":
            _relink(root / "openzeppelin" / folder.name, folder)
    for folder_name in APE_UNISWAP_FOLDERS:
        _relink(root / "uniswap" / folder_name, paths.node_modules / "@uniswap" / folder_name)
    return root

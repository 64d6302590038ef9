"""The layout's rules: the shared package imports no service, and production code reads events
and calls through interfaces, never a test contract's ABI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Code that deploys or attaches to the local test contracts, for local chains only.
LOCAL_CHAIN_CODE = {"tandem/protocol.py"}


def test_the_shared_package_imports_no_service() -> None:
    # Every module but the command line, which loads a service inside the command that runs it.
    script = (
        "import importlib, pkgutil, sys, tandem\n"
        "for m in pkgutil.walk_packages(tandem.__path__, 'tandem.'):\n"
        "    if m.name != 'tandem.cli':\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'keepers', 'indexer', 'api'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def test_production_code_loads_no_test_contract_abi() -> None:
    test_contracts = {p.stem for p in (ROOT / "contracts" / "testing").glob("*.sol")}
    names = "|".join(sorted(test_contracts))
    pattern = re.compile(rf"""["']({names})["']""")
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(1)}"
        for package in ("tandem", "keepers", "indexer")
        for path in sorted((ROOT / package).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in LOCAL_CHAIN_CODE
        for match in pattern.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []

"""The rankings benchmark still runs end to end (a few masters, SQLite): nothing here is timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_rankings_benchmark_runs_on_a_few_masters() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/rankings.py", "--masters", "40", "--repeats", "3", "--sqlite"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    assert "database:              SQLite" in result.stdout
    assert "sybils in the top 50 by roi, 7d: 0" in result.stdout

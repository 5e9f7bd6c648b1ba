"""The benchmark suite runs end to end in --quick mode and every section prints a ratio."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.run import SECTIONS  # every registered section, so a new one is covered too

REPO = Path(__file__).resolve().parent.parent
SHARED = {"__init__", "common", "corpus", "run"}  # benchmarks/ modules that measure nothing


def ratios_by_section(table: str) -> dict[str, list[float]]:
    """The ratio column of every table row, grouped by section (blank ratios left out)."""
    found: dict[str, list[float]] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 7 or cells[0] not in SECTIONS or not cells[4]:
            continue
        found.setdefault(cells[0], []).append(float(cells[4]))
    return found


def test_quick_benchmark_prints_a_ratio_for_every_section() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,  # a guard against a hang: the quick run takes ~100 s on 2 idle cores
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ratios = ratios_by_section(result.stdout)
    for section in SECTIONS:
        assert ratios.get(section), f"no ratio for {section}:\n{result.stdout}"
        assert all(math.isfinite(r) and r > 0 for r in ratios[section]), (section, ratios)


def test_every_measurement_module_is_registered() -> None:
    modules = {path.stem for path in (REPO / "benchmarks").glob("*.py")} - SHARED
    assert modules == set(SECTIONS), "add the module's name to benchmarks.run.SECTIONS"

"""The benchmark suite runs end to end in --quick mode and every section prints a ratio.

The whole quick suite takes minutes (`make test-slow`); the default suite runs one cheap section
through the same runner and table, so a broken runner still fails `make test`."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import SECTIONS  # every registered section, so a new one is covered too

REPO = Path(__file__).resolve().parent.parent
SHARED = {"__init__", "common", "corpus", "run", "one_stream_worker"}  # they measure nothing


def ratios_by_section(table: str) -> dict[str, list[float]]:
    """The ratio column of every table row, grouped by section (blank ratios left out)."""
    found: dict[str, list[float]] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 7 or cells[0] not in SECTIONS or not cells[4]:
            continue
        found.setdefault(cells[0], []).append(float(cells[4]))
    return found


def run_quick(*only: str) -> str:
    """The table `python -m benchmarks.run --quick` prints (only the named sections, if any)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            *(["--only", ",".join(only)] if only else []),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,  # a guard against a hang: the whole quick run takes ~100 s on 2 idle cores
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow  # ~100 s alone, minutes on a busy machine
def test_quick_benchmark_prints_a_ratio_for_every_section() -> None:
    ratios = ratios_by_section(run_quick())
    for section in SECTIONS:
        assert ratios.get(section), f"no ratio for {section}"
        assert all(math.isfinite(r) and r > 0 for r in ratios[section]), (section, ratios)


def test_one_quick_section_prints_its_ratios() -> None:
    table = run_quick("matmul")
    ratios = ratios_by_section(table)
    assert set(ratios) == {"matmul"}, table
    assert all(math.isfinite(r) and r > 0 for r in ratios["matmul"]), table


def test_every_measurement_module_is_registered() -> None:
    modules = {path.stem for path in (REPO / "benchmarks").glob("*.py")} - SHARED
    assert modules == set(SECTIONS), "add the module's name to benchmarks.run.SECTIONS"

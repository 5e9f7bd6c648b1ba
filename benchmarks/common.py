"""What every measurement shares: the run's state, best-of timing, child processes, the table.

A measurement module calls `bench.pick(FULL, QUICK)` for its sizes, times with `best_of`,
`best_alternating` and `per_second` (or `run_child` for a separate process), and adds `Row`s.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import torch

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@dataclass
class Row:
    """One line of the table; `ratio` is the figure divided by its baseline."""

    section: str
    figure: str
    value: str
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass
class Bench:
    """One run's shared state: the mode, a scratch folder, the rows and figures others reuse."""

    quick: bool
    workdir: Path
    rows: list[Row] = field(default_factory=list)
    cache: dict[Any, Any] = field(default_factory=dict)

    def pick(self, full: T, quick: T) -> T:
        """`quick` under --quick (tiny sizes, a smoke run), else `full` (the real figures)."""
        return quick if self.quick else full

    def add(self, row: Row) -> None:
        """Append a row to the table."""
        self.rows.append(row)

    def scratch(self, name: str) -> Path:
        """A fresh empty folder under the work folder."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))


def skipped_bf16(bench: Bench, section: str, figure: str) -> bool:
    """True, with a row saying why, where this CPU cannot train an LSTM with bf16 autocast (no
    AVX512: oneDNN has no kernel for it); such a figure is then skipped, not an error."""
    from charrnn.config import ModelConfig
    from charrnn.model.network import autocast_failure

    failure = autocast_failure(ModelConfig(), torch.bfloat16, torch.device("cpu"))
    if failure is not None:
        bench.add(Row(section, figure, "skipped", f"this CPU has no bf16 LSTM: {failure}"))
    return failure is not None


def log(text: str) -> None:
    """Progress on stderr, so stdout carries only the table."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- timing


def per_second(work: Callable[[], float]) -> float:
    """Units per second of `work()`, which returns how many units it did."""
    start = time.perf_counter()
    units = work()
    return units / (time.perf_counter() - start)


def best_of(repeats: int, measure: Callable[[], float]) -> float:
    """The largest of `repeats` results of `measure`: a rate's best is the least disturbed."""
    return max(measure() for _ in range(repeats))


def best_alternating(
    first: Callable[[], float], second: Callable[[], float], repeats: int = 2
) -> tuple[float, float]:
    """Best (largest) result of each, measured A B A B to spread the machine's noise evenly."""
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return max(a), max(b)


# ----------------------------------------------------------------------------- child processes


@dataclass(frozen=True)
class ChildRun:
    """Wall time, peak resident memory and output of one child process."""

    seconds: float
    max_rss_kib: int
    stdout: str


# A forked child's peak RSS starts at its parent's (the fork shares the parent's pages), and this
# process holds torch: so the measured command is started by a small Python process that times
# it and reads its rusage, then reports both on its last stderr line.
_MEASURE = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
print(json.dumps({"seconds": seconds, "rss": usage.ru_maxrss, "code": code}), file=sys.stderr)
"""


def run_child(args: list[str]) -> ChildRun:
    """Run `args` from a small launcher that measures its wall time and peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, cwd=REPO
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    if report["code"] != 0:
        tail = done.stderr.strip().splitlines()[-4:-1]
        raise RuntimeError(f"{' '.join(args[2:4])} exited {report['code']}: {tail}")
    return ChildRun(report["seconds"], int(report["rss"]), done.stdout)


def charrnn_args(*args: str) -> list[str]:
    """The command line for `charrnn ARGS` under this interpreter."""
    return [sys.executable, "-m", "charrnn", *args]


def last_json_line(text: str) -> dict[str, Any]:
    """The JSON object on the last line of a command's output (`--json`)."""
    return json.loads(text.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the table


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The date and what the figures ran on."""
    return {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def format_ratio(ratio: float | None) -> str:
    """Three decimals, or one above 10; blank when the row has no ratio."""
    if ratio is None:
        return ""
    return f"{ratio:.3f}" if ratio < 10 else f"{ratio:.1f}"


def format_result(passed: bool | None) -> str:
    """PASS, FAIL, or blank where the row has no target."""
    return "" if passed is None else ("PASS" if passed else "FAIL")


def render(rows: list[Row], quick: bool, info: dict[str, Any], seconds: float) -> str:
    """The header and the one markdown table."""
    lines = [
        f"## charrnn benchmarks ({'quick' if quick else 'full'})",
        "",
        f"- date: {info['date']}",
        f"- machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
        f"{info['torch_threads']} torch threads",
        f"- wall time: {seconds:.0f} s",
        "",
        "| section | figure | charrnn | baseline | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = (
            row.section,
            row.figure,
            row.value,
            row.baseline,
            format_ratio(row.ratio),
            row.target,
            format_result(row.passed),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

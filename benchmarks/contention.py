"""contention: `charrnn` with auto threads when the CPUs are shared, against fixed thread counts.

Real `charrnn train` processes on 300 kB of the corpus, each for the same time: alone, two side
by side (as people compare settings), beside a foreign busy PyTorch process (a 256x256 matmul
and tanh loop with torch's default threads) and beside a plain busy loop. Then `charrnn eval`
and `charrnn sample` beside the busy PyTorch process. Every scenario runs auto and
`--threads 1`; alone and beside PyTorch also `--threads N` (N = the cores: the old auto).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Bench, Row, charrnn_args, log
from benchmarks.corpus import corpus_text

FOREIGN_TORCH = (
    "import time, torch\nx = torch.randn(256, 256)\nend = time.time() + {seconds}\n"
    "while time.time() < end:\n    y = torch.tanh(x @ x)\n"
)
BUSY_LOOP = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


@dataclass(frozen=True)
class Sizes:
    seconds: int  # each training run
    corpus_chars: int
    sample_chars: int
    full_table: bool  # every scenario, or only alone and side by side


FULL = Sizes(seconds=10, corpus_chars=300_000, sample_chars=5000, full_table=True)
QUICK = Sizes(seconds=2, corpus_chars=30_000, sample_chars=200, full_table=False)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def user_env() -> dict[str, str]:
    """The environment a user has: torch picks its own thread count."""
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


@contextlib.contextmanager
def beside(program: str | None, seconds: float) -> Iterator[None]:
    """Run a foreign busy `program` (Python source) while the block runs."""
    if program is None:
        yield
        return
    busy = subprocess.Popen(
        [sys.executable, "-c", program.format(seconds=seconds + 60)], env=user_env()
    )
    try:
        time.sleep(2.0)  # let it reach its steady state
        yield
    finally:
        busy.kill()
        busy.wait()


def train_speeds(bench: Bench, corpus: Path, threads: list[str | None]) -> list[float]:
    """chars/s of `charrnn train` runs started together, one per entry (None = auto)."""
    seconds = bench.pick(FULL, QUICK).seconds
    runs, processes = [], []
    for count in threads:
        run = bench.scratch("run") / "run"
        extra = [] if count is None else ["--threads", count]
        args = [*charrnn_args("train", str(corpus), "--out", str(run)), "-q", "--max-time"]
        args += [f"{seconds}s", "--eval-every", "1000000", *extra]
        processes.append(subprocess.Popen(args, env=user_env()))
        runs.append(run)
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError(f"charrnn train exited {process.returncode}")
    return [chars_per_second(run / "metrics.jsonl") for run in runs]


def chars_per_second(metrics: Path) -> float:
    """Characters trained per second of training, from a run's last metrics line."""
    last = [json.loads(line) for line in metrics.read_text().splitlines()][-1]
    return last["chars"] / last["elapsed_s"]


def command_seconds(args: list[str]) -> float:
    """Wall time of one `charrnn` command, start-up included."""
    start = time.perf_counter()
    subprocess.run(args, env=user_env(), check=True, capture_output=True)
    return time.perf_counter() - start


def add_speed_row(
    bench: Bench, scenario: str, auto: float, base: float, baseline: str, goal: float | None
) -> None:
    """A row of auto's chars/s against a fixed thread count's in the same scenario."""
    ratio = auto / base
    bench.add(
        Row(
            "contention",
            f"train, {scenario}: auto (chars/s)",
            f"{auto:,.0f}",
            f"{base:,.0f} ({baseline})",
            ratio,
            f">= {goal}" if goal is not None else "",
            None if goal is None or bench.quick else ratio >= goal,
        )
    )


def measure(bench: Bench) -> None:
    sizes = bench.pick(FULL, QUICK)
    corpus = bench.scratch("contention") / "corpus.txt"
    corpus.write_text(corpus_text()[: sizes.corpus_chars], encoding="utf-8")
    many = str(CORES)
    log("contention: two side by side")
    autos = sum(train_speeds(bench, corpus, [None, None]))
    ones = sum(train_speeds(bench, corpus, ["1", "1"]))
    add_speed_row(bench, "two side by side, combined", autos, ones, "--threads 1 each", 0.9)
    if not sizes.full_table:  # the smoke run: one ratio is enough
        return
    log("contention: alone")
    auto, one = train_speeds(bench, corpus, [None])[0], train_speeds(bench, corpus, ["1"])[0]
    fixed = train_speeds(bench, corpus, [many])[0]
    add_speed_row(bench, "alone", auto, one, "--threads 1", None)
    add_speed_row(bench, "alone", auto, fixed, f"--threads {many}, the old auto", 0.95)
    manys = sum(train_speeds(bench, corpus, [many, many]))
    add_speed_row(bench, "two side by side, combined", autos, manys, f"--threads {many} each", None)
    for name, program in (("a busy PyTorch process", FOREIGN_TORCH), ("a busy loop", BUSY_LOOP)):
        log(f"contention: beside {name}")
        with beside(program, 4 * sizes.seconds):
            auto = train_speeds(bench, corpus, [None])[0]
            one = train_speeds(bench, corpus, ["1"])[0]
            fixed = train_speeds(bench, corpus, [many])[0]
        add_speed_row(bench, f"beside {name}", auto, one, "--threads 1", 0.9)
        add_speed_row(bench, f"beside {name}", auto, fixed, f"--threads {many}", None)
    measure_commands(bench, corpus, many)


def measure_commands(bench: Bench, corpus: Path, many: str) -> None:
    """`charrnn eval` and `charrnn sample` wall times beside the busy PyTorch process."""
    sizes = bench.pick(FULL, QUICK)
    run = bench.scratch("model") / "run"
    log("contention: a model for eval and sample")
    subprocess.run(
        [*charrnn_args("train", str(corpus), "--out", str(run)), "-q", "--max-time", "10s"],
        env=user_env(),
        check=True,
    )
    commands = {
        "eval of the validation split": ["eval", "--checkpoint", str(run), "--json"],
        f"sample --length {sizes.sample_chars}": [
            "sample", "--checkpoint", str(run), "--length", str(sizes.sample_chars), "--seed", "1",
        ],
    }  # fmt: skip
    with beside(FOREIGN_TORCH, 120):
        for name, args in commands.items():
            times = {}
            for label, extra in (
                ("auto", []),
                ("1", ["--threads", "1"]),
                (many, ["--threads", many]),
            ):
                times[label] = min(command_seconds(charrnn_args(*args, *extra)) for _ in range(2))
            for label in ("1", many):
                bench.add(
                    Row(
                        "contention",
                        f"{name} beside a busy PyTorch process: auto (s, with start-up)",
                        f"{times['auto']:.2f}",
                        f"{times[label]:.2f} (--threads {label})",
                        times[label] / times["auto"],  # > 1: auto is faster
                        ">= 0.9" if label == "1" else "",
                        times[label] / times["auto"] >= 0.9 if label == "1" else None,
                    )
                )

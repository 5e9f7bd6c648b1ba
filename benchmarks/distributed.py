"""distributed: training speed of one process against two ranks under torchrun (gloo, CPU).

Real `charrnn train` runs on 300 kB of the corpus with the default model, the same global
batch and the same time, one after another (each needs all the cores): one process with one
thread, one process with a thread per core, and `torchrun --nproc_per_node 2` with one thread per
rank. The figure is the job's characters trained per second (chars / elapsed in metrics.jsonl,
start-up not counted). Two processes on two cores use no more CPU than one process with two
threads, and they add a gradient all-reduce per step, so no speed-up is expected here: the
section shows what data parallelism costs, not what it gains on many cores or GPUs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Bench, Row, log
from benchmarks.corpus import corpus_text


@dataclass(frozen=True)
class Sizes:
    seconds: int  # each training run
    corpus_chars: int
    preset_flags: tuple[str, ...]


FULL = Sizes(seconds=20, corpus_chars=300_000, preset_flags=())
QUICK = Sizes(seconds=1, corpus_chars=20_000, preset_flags=("--hidden", "32", "--embed", "16"))
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def train_args(corpus: Path, run: Path, seconds: int, threads: int, sizes: Sizes) -> list[str]:
    """`charrnn train` flags of one measured run (evaluation only at the end)."""
    return [
        "train", str(corpus), "--out", str(run), "-q", "--max-time", f"{seconds}s",
        "--eval-every", "1000000", "--log-every", "20", "--threads", str(threads),
        "--device", "cpu", *sizes.preset_flags,
    ]  # fmt: skip


def chars_per_second(run: Path) -> float:
    """The job's characters per second of training, from the run's last metrics line."""
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    return last["chars"] / last["elapsed_s"]


def speed(bench: Bench, corpus: Path, processes: int, threads: int) -> float:
    """chars/s of one run: `processes` ranks under torchrun (1: plain charrnn), each `threads`."""
    sizes = bench.pick(FULL, QUICK)
    run = bench.scratch("ddp") / "run"
    args = train_args(corpus, run, sizes.seconds, threads, sizes)
    if processes == 1:
        argv = [sys.executable, "-m", "charrnn", *args]
    else:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
        argv = [sys.executable, *launcher, str(processes), "-m", "charrnn", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0 and processes > 1 and "SIGABRT" in done.stderr:
        # A rank has (rarely) aborted at the end of a quick 1 s run: once in ~40 runs on
        # 2026-12-02, not reproduced since. Say so in the log, with the rank's own words, and
        # measure again; a second failure is an error row.
        log(f"distributed: a rank aborted, measuring again: {why_it_failed(done.stderr)}")
        shutil.rmtree(run, ignore_errors=True)
        done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{processes}-process run exited {done.returncode}: {why_it_failed(done.stderr)}"
        )
    return chars_per_second(run)


def why_it_failed(stderr: str) -> str:
    """The lines of a failed run's stderr that say why (a C++ abort's `what()`, errors), else
    its end."""
    telling = [
        line.strip()
        for line in stderr.splitlines()
        if any(word in line for word in ("terminate", "what()", "Error", "error:", "Signal"))
    ]
    return " | ".join(telling)[-1500:] if telling else stderr[-400:]


def measure(bench: Bench) -> None:
    sizes = bench.pick(FULL, QUICK)
    corpus = bench.scratch("distributed") / "corpus.txt"
    corpus.write_text(corpus_text()[: sizes.corpus_chars], encoding="utf-8")
    log("distributed: one process, one thread")
    one = speed(bench, corpus, 1, 1)
    log("distributed: two ranks under torchrun, one thread each")
    two = speed(bench, corpus, 2, 1)
    bench.add(
        Row(
            "distributed",
            "train, 2 ranks x 1 thread (torchrun, gloo): job chars/s",
            f"{two:,.0f}",
            f"{one:,.0f} (1 process x 1 thread)",
            two / one,
            "",
            None,
        )
    )
    if bench.quick or CORES < 2:
        return
    log(f"distributed: one process, {CORES} threads")
    many = speed(bench, corpus, 1, CORES)
    bench.add(
        Row(
            "distributed",
            f"train, 2 ranks x 1 thread against 1 process x {CORES} threads: job chars/s",
            f"{two:,.0f}",
            f"{many:,.0f} (1 process x {CORES} threads)",
            two / many,
            "",
            None,
        )
    )
    bench.add(Row("distributed", "GPU (nccl) figures", "not measured: no GPU on this machine", ""))

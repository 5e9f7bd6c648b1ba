"""distill: a student distilled from a teacher for 90 s against the same student trained from
scratch for 90 s on tiny shakespeare, several seeds.

Each pair runs side by side, each process on one thread (`--threads 1`), so both see the same
machine; the teacher's forward pass is part of the distilled run's time. Both are scored on the
whole validation split. The teacher is the model of the `export` section (the quality section's
90 s default run, or $CHARRNN_BENCH_RUN), and the students train on the teacher's corpus.
"""

from __future__ import annotations

import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from benchmarks import quality
from benchmarks.common import REPO, Bench, Row, charrnn_args, log
from benchmarks.export import trained_run
from charrnn.cli import app
from charrnn.commands import eval_command
from charrnn.model.checkpoint import load_checkpoint


@dataclass(frozen=True)
class Sizes:
    student: list[str]  # the student's model flags
    budget: list[str]  # run length flags of both runs
    seeds: tuple[int, ...]


# A 1 x 128 LSTM: a third of the default 1 x 256's parameters.
FULL = Sizes(student=["--hidden", "128"], budget=["--max-time", "90s"], seeds=(1, 2, 3))
QUICK = Sizes(
    student=["--hidden", "16"], budget=["--max-steps", "4", "--eval-every", "4"], seeds=(1,)
)


def run_pair(
    corpus: Path, teacher: Path, folder: Path, sizes: Sizes, seed: int, quick: bool
) -> None:
    """The distilled and the scratch student of one seed, started together (--quick: one after
    the other in this process, sparing two start-ups of torch)."""
    common = [*sizes.student, *sizes.budget, "--threads", "1", "--seed", str(seed), "-q"]
    commands = {
        "distilled": ["distill", str(corpus), "--teacher", str(teacher)],
        "scratch": ["train", str(corpus)],
    }
    if quick:
        for name, args in commands.items():
            out = ["--out", str(folder / f"{name}-{seed}")]
            result = CliRunner().invoke(app, [*args, *common, *out])
            if result.exit_code != 0:
                raise RuntimeError(f"student run exited {result.exit_code}: {result.output[-500:]}")
        return
    running = [
        subprocess.Popen(
            charrnn_args(*args, *common, "--out", str(folder / f"{name}-{seed}")),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    ]
    for process in running:
        _, errors = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"student run exited {process.returncode}: {errors[-500:]}")


def teacher_corpus(teacher: Path, bench: Bench, folder: Path) -> Path:
    """The text the teacher was trained on (its first file), else the quality section's."""
    sources = load_checkpoint(teacher).corpus.get("sources") or []
    if sources and Path(sources[0]).is_file():
        return Path(sources[0])
    return quality.quality_corpus(bench.pick(quality.FULL, quality.QUICK).corpus_chars, folder)


def val_loss(run_dir: Path) -> float:
    """The whole validation split's loss of a run's best.pt (nats/char), on one thread."""
    return eval_command(run_dir, [], device_name="cpu", threads=1).loss


def steps_of(run_dir: Path) -> int:
    """Training steps a run made in its budget."""
    return int(load_checkpoint(run_dir / "last.pt").progress["step"])


def measure(bench: Bench) -> None:
    """Rows: mean val loss of distilled and scratch students over the seeds, and per seed."""
    sizes = bench.pick(FULL, QUICK)
    teacher = trained_run(bench)
    folder = bench.scratch("distill")
    corpus = teacher_corpus(teacher, bench, folder)
    teacher_loss = val_loss(teacher)
    results: dict[str, list[float]] = {"distilled": [], "scratch": []}
    steps: dict[str, list[int]] = {"distilled": [], "scratch": []}
    for seed in sizes.seeds:
        log(f"distill: seed {seed}, distilled and scratch side by side ({' '.join(sizes.budget)})")
        run_pair(corpus, teacher, folder, sizes, seed, bench.quick)
        for name in results:
            results[name].append(val_loss(folder / f"{name}-{seed}"))
            steps[name].append(steps_of(folder / f"{name}-{seed}"))
    distilled, scratch = statistics.mean(results["distilled"]), statistics.mean(results["scratch"])
    budget = " ".join(sizes.budget)
    numbers = {
        "teacher_val_loss": teacher_loss,
        **{f"distilled_seed{s}": v for s, v in zip(sizes.seeds, results["distilled"], strict=True)},
        **{f"scratch_seed{s}": v for s, v in zip(sizes.seeds, results["scratch"], strict=True)},
        **{f"distilled_steps{s}": v for s, v in zip(sizes.seeds, steps["distilled"], strict=True)},
        **{f"scratch_steps{s}": v for s, v in zip(sizes.seeds, steps["scratch"], strict=True)},
    }
    bench.add(
        Row(
            "distill",
            f"1x{sizes.student[-1]} student, {budget}, mean of {len(sizes.seeds)} seeds: "
            "val loss (nats/char)",
            f"{distilled:.4f} (distilled)",
            f"{scratch:.4f} (from scratch)",
            distilled / scratch,
            "< 1 if distillation helps",
            None,
            numbers,
        )
    )
    for seed, a, b, sa, sb in zip(
        sizes.seeds,
        results["distilled"],
        results["scratch"],
        steps["distilled"],
        steps["scratch"],
        strict=True,
    ):
        bench.add(
            Row(
                "distill",
                f"seed {seed}: val loss (steps made)",
                f"{a:.4f} ({sa:,} steps)",
                f"{b:.4f} ({sb:,} steps)",
                a / b,
            )
        )
    bench.add(
        Row(
            "distill",
            "teacher (1x256 default preset): val loss (nats/char)",
            f"{teacher_loss:.4f}",
            f"{scratch:.4f} (student from scratch)",
            teacher_loss / scratch,
            numbers=numbers,
        )
    )

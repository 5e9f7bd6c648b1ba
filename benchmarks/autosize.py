"""autosize: `charrnn train --auto` against the fixed `small` preset at equal time.

The two contenders train side by side, each with `--threads 1`, so they share the machine under
the same conditions (and `--auto`'s probe measures under the conditions it then trains in). Each
run's best checkpoint is then scored on the whole validation split.

    python -m benchmarks.autosize 90s 10m              # one seed each (about 13 minutes)
    python -m benchmarks.autosize 90s --seeds 1,2,3    # a comparison per seed
    python -m benchmarks.autosize 90s --auto-args="--precision fp32"   # an ablation
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    REPO,
    Bench,
    Row,
    charrnn_args,
    last_json_line,
    log,
    machine,
    render,
)  # fmt: skip
from benchmarks.corpus import SHAKESPEARE, corpus_text

SHARED_SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")


@dataclass(frozen=True)
class Sizes:
    times: tuple[str, ...]  # charrnn train --max-time, one comparison each
    corpus_chars: int | None  # None: tiny shakespeare itself


FULL = Sizes(times=("90s",), corpus_chars=None)
QUICK = Sizes(times=("3s",), corpus_chars=30_000)


def comparison_corpus(chars: int | None, folder: Path) -> Path:
    """Tiny shakespeare, or (quick, or when it is missing) a generated text."""
    for path in (SHAKESPEARE, SHARED_SHAKESPEARE):
        if chars is None and path.is_file():
            return path
    path = folder / "corpus.txt"
    path.write_text(corpus_text()[: chars or 1_000_000], encoding="utf-8")
    return path


def train_side_by_side(
    corpus: Path, seconds: str, folder: Path, seed: int, auto_args: tuple[str, ...] = ()
) -> dict[str, Path]:
    """`small` and `--auto` (with `auto_args`), started together, one thread each; their run
    directories."""
    runs = {"small": folder / "small", "auto": folder / "auto"}
    common = ["--max-time", seconds, "--threads", "1", "--seed", str(seed), "-q"]
    extra = {"small": ["--preset", "small"], "auto": ["--auto", *auto_args]}
    children = {
        name: subprocess.Popen(
            charrnn_args("train", str(corpus), "--out", str(run), *common, *extra[name]),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, run in runs.items()
    }
    for name, child in children.items():
        _, stderr = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"{name} run exited {child.returncode}: {stderr[-500:]}")
        for line in stderr.splitlines():
            if line.startswith("charrnn: auto:"):
                log(line)
    return runs


def val_loss(run: Path) -> float:
    """The best checkpoint's loss on the whole validation split."""
    done = subprocess.run(
        charrnn_args("eval", "--checkpoint", str(run), "--json", "--threads", "1"),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(last_json_line(done.stdout)["loss"])


def best_recorded_loss(run: Path) -> float:
    """The lowest validation loss in a run's metrics.jsonl."""
    lines = (run / "metrics.jsonl").read_text("utf-8").splitlines()
    return min(json.loads(line)["val_loss"] for line in lines if '"val_loss"' in line)


def compare(
    bench: Bench, corpus: Path, seconds: str, seed: int = 1337, auto_args: tuple[str, ...] = ()
) -> None:
    """Train both for `seconds`, score them, add a row: auto's loss over small's."""
    folder = bench.scratch(f"autosize-{seconds}-{seed}")
    log(
        f"autosize: small and --auto side by side for {seconds} on {corpus.name}, 1 thread "
        f"each, seed {seed}"
    )
    started = time.perf_counter()
    runs = train_side_by_side(corpus, seconds, folder, seed, auto_args)
    # Quick: the best loss training recorded (its small split is scored whole at every
    # evaluation), which spares two start-ups of torch in the smoke test.
    score = best_recorded_loss if bench.quick else val_loss
    losses = {name: score(run) for name, run in runs.items()}
    saved = json.loads((runs["auto"] / "config.json").read_text("utf-8"))
    choice = saved["auto"]
    steps = {
        name: json.loads((run / "metrics.jsonl").read_text("utf-8").splitlines()[-1])
        for name, run in runs.items()
    }
    judged = not bench.quick and corpus.name == "tinyshakespeare.txt"
    bench.add(
        Row(
            "autosize",
            f"val loss, --auto {' '.join(auto_args)} ({choice['layers']}x{choice['hidden']}, "
            f"{choice['batch_size']}x{choice['seq_len']}, lr {choice['lr']:g}, dropout "
            f"{choice['dropout']:g}, {choice.get('precision', 'auto')}) vs --preset small, "
            f"{seconds} side by side, 1 thread each, seed {seed}, on {corpus.name} (nats/char)",
            f"{losses['auto']:.3f}",
            f"{losses['small']:.3f} (small)",
            losses["auto"] / losses["small"],
            "< 1" if judged else "skipped (quick or no corpus)",
            losses["auto"] < losses["small"] if judged else None,
            {
                "auto_val_loss": losses["auto"],
                "small_val_loss": losses["small"],
                "auto_chars": steps["auto"]["chars"],
                "small_chars": steps["small"]["chars"],
                "auto_probe_s": choice["probe_s"],
                "auto_chars_per_s_probe": choice["chars_per_s"],
                "auto_precision_probe": choice.get("precision_probe", {}),
                "seed": seed,
                "wall_s": time.perf_counter() - started,
            },
        )
    )


def measure(bench: Bench) -> None:
    """Rows: `--auto` against `small` at equal time, side by side."""
    sizes = bench.pick(FULL, QUICK)
    corpus = comparison_corpus(sizes.corpus_chars, bench.scratch("autosize-corpus"))
    for seconds in sizes.times:
        compare(bench, corpus, seconds)


def main(argv: list[str]) -> int:
    """Compare at each duration given (default 90s), once per `--seeds` seed (default 1337),
    and print the table."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m benchmarks.autosize")
    parser.add_argument("times", nargs="*", default=["90s"])
    parser.add_argument("--seeds", default="1337", help="comma-separated, one comparison each")
    parser.add_argument("--auto-args", default="", help="more flags for the --auto run")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="charrnn-autosize-") as workdir:
        bench = Bench(quick=False, workdir=Path(workdir))
        corpus = comparison_corpus(None, bench.scratch("corpus"))
        started = time.perf_counter()
        for seconds in args.times:
            for seed in seeds:
                compare(bench, corpus, seconds, seed, tuple(args.auto_args.split()))
        print(render(bench.rows, False, machine(), time.perf_counter() - started))
        for row in bench.rows:
            print(json.dumps(row.numbers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

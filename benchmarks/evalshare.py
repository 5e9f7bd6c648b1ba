"""evalshare: the share of a training run spent evaluating, on a large corpus with the defaults.

`charrnn train` on the corpus repeated to ~100 MB (a 10 MB validation split), for two evaluation
intervals of the default `--eval-every`, once with the default `--eval-chars` (auto: a prefix) and
once scoring the whole split (what every evaluation cost before). Each evaluation's time is in
metrics.jsonl (`eval_s`).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Bench, Row, charrnn_args, log
from benchmarks.contention import user_env
from benchmarks.corpus import corpus_text
from charrnn.config import RunConfig


@dataclass(frozen=True)
class Sizes:
    corpus_mb: int
    evaluations: int  # training runs this many default evaluation intervals
    eval_every: int | None  # None: the default


FULL = Sizes(corpus_mb=100, evaluations=2, eval_every=None)
QUICK = Sizes(corpus_mb=2, evaluations=2, eval_every=20)


def big_corpus(bench: Bench, megabytes: int) -> Path:
    """The corpus text repeated to `megabytes` MB."""
    text = corpus_text()
    path = bench.scratch("evalshare") / "big.txt"
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(max(1, megabytes * 1_000_000 // len(text))):
            handle.write(text)
    return path


def eval_share(bench: Bench, corpus: Path, eval_chars: int | None) -> tuple[float, int]:
    """Fraction of the run's time spent evaluating, and the characters each evaluation scored."""
    sizes = bench.pick(FULL, QUICK)
    every = sizes.eval_every or RunConfig().train.eval_every
    run = bench.scratch("run") / "run"
    args = [*charrnn_args("train", str(corpus), "--out", str(run)), "-q"]
    args += ["--max-steps", str(every * sizes.evaluations), "--eval-every", str(every)]
    if eval_chars is not None:
        args += ["--eval-chars", str(eval_chars)]
    subprocess.run(args, env=user_env(), check=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval_s" in r]
    # A line's elapsed_s is stamped before its own evaluation ran.
    total = records[-1]["elapsed_s"] + records[-1].get("eval_s", 0.0)
    return sum(r["eval_s"] for r in evaluations) / total, evaluations[-1]["val_chars"]


def measure(bench: Bench) -> None:
    sizes = bench.pick(FULL, QUICK)
    corpus = big_corpus(bench, sizes.corpus_mb)
    log(f"evalshare: {corpus.stat().st_size / 1e6:.0f} MB, default evaluation")
    share, scored = eval_share(bench, corpus, None)
    log("evalshare: the whole validation split at every evaluation")
    whole_share, whole = eval_share(bench, corpus, 10**12)
    bench.add(
        Row(
            "evalshare",
            f"{sizes.corpus_mb} MB corpus, default settings: share of the run evaluating",
            f"{share:.3f} ({scored:,} chars)",
            f"{whole_share:.3f} (whole split, {whole:,} chars)",
            share / whole_share,
            "<= 0.10",
            None if bench.quick else share <= 0.10,
        )
    )

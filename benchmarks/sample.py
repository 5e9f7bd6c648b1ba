"""sample: charrnn's generate() against stepping the model's own forward with torch.multinomial."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from benchmarks.common import Bench, Row, best_alternating, log, per_second
from charrnn.config import ModelConfig, SampleConfig
from charrnn.generation.sampling import collect, generate
from charrnn.model.network import CharRNN
from charrnn.text.corpus import Vocab

VOCAB_SIZE = 65  # tiny shakespeare's vocabulary size
TARGET = 10_000.0  # chars/s, one stream of a 2x256 LSTM
TARGET_HIDDEN = 256
BEFORE = "748b5c2"  # the Stepper before issue 22: one-stream sampling is measured against it
STEPPER_TARGET = 1.5  # issue 22: one stream at least this much faster than BEFORE's


@dataclass(frozen=True)
class Sizes:
    hidden: tuple[int, ...]  # 2-layer LSTMs
    length_one: int  # characters for one stream
    length_many: int  # characters per stream for 64 streams


FULL = Sizes(hidden=(256, 512), length_one=3000, length_many=200)
QUICK = Sizes(hidden=(256,), length_one=300, length_many=20)


def sample_model(hidden: int) -> tuple[CharRNN, Vocab]:
    """A randomly initialised 2-layer LSTM over a 65-symbol vocabulary."""
    vocab = Vocab(tuple(range(32, 32 + VOCAB_SIZE)))
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=hidden), vocab.size).eval()
    return model, vocab


def charrnn_sample(model: CharRNN, vocab: Vocab, config: SampleConfig) -> int:
    """Characters drawn by generation.sampling.generate (the defaults but length, streams, seed)."""
    collect(generate(model, vocab, "", config), config.num_samples)
    return config.num_samples * config.length


def baseline_sample(model: CharRNN, vocab: Vocab, config: SampleConfig) -> int:
    """Characters drawn the usual way: the model's own forward one at a time, multinomial."""
    generator = torch.Generator().manual_seed(config.seed)
    with torch.inference_mode():
        ids = torch.zeros(config.num_samples, 1, dtype=torch.long)
        state, drawn = None, []
        for _ in range(config.length):
            logits, state = model(ids, state)
            probs = torch.softmax(logits[:, -1] / config.temperature, dim=-1)
            ids = torch.multinomial(probs, 1, generator=generator)
            drawn.append(ids)
        texts = [vocab.decode(row) for row in torch.cat(drawn, dim=1).numpy()]
    assert len(texts) == config.num_samples
    return config.num_samples * config.length


def measure(bench: Bench) -> None:
    """Rows: generate() chars/s against stepping nn.LSTM, for one stream and for 64; then one
    stream against the Stepper before issue 22."""
    measure_split(bench)
    measure_stepper(bench)
    sizes = bench.pick(FULL, QUICK)
    for hidden in sizes.hidden:
        model, vocab = sample_model(hidden)
        for streams, length in ((1, sizes.length_one), (64, sizes.length_many)):
            log(f"sample lstm 2x{hidden}: {streams} stream(s) x {length} chars")
            config = SampleConfig(length=length, num_samples=streams, seed=0)
            baseline, ours = best_alternating(
                partial(per_second, partial(baseline_sample, model, vocab, config)),
                partial(per_second, partial(charrnn_sample, model, vocab, config)),
            )
            has_target = streams == 1 and hidden == TARGET_HIDDEN
            bench.add(
                Row(
                    "sample",
                    f"lstm 2x{hidden}, {streams} stream{'s' if streams > 1 else ''} (chars/s)",
                    f"{ours:,.0f}",
                    f"{baseline:,.0f} (nn.LSTM steps)",
                    ours / baseline,
                    f">= {TARGET:,.0f} chars/s" if has_target else "",
                    ours >= TARGET if has_target else None,
                    {"chars_per_s": ours, "baseline_chars_per_s": baseline},
                )
            )


def split_products(kernels: ModuleType, hidden: int, threads: int, count: int) -> float:
    """Characters' worth of a 2-layer LSTM's products per second (the first layer's 4H x H and
    the upper layer's 4H x 2H) through the kernels, on `threads` threads (split from two)."""
    rng = np.random.default_rng(0)
    first = rng.standard_normal((4 * hidden, hidden), dtype=np.float32)
    upper = rng.standard_normal((4 * hidden, 2 * hidden), dtype=np.float32)
    x = rng.standard_normal((1, 2 * hidden), dtype=np.float32)  # one stream's row
    below, out = np.ascontiguousarray(x[:, :hidden]), np.zeros((1, 4 * hidden), np.float32)
    split = kernels.use_threads(threads)
    products = kernels.add_row_products_split if split else kernels.add_row_products
    products(first, below, out)  # compiled before the clock starts
    start = time.perf_counter()
    for _ in range(count):
        products(first, below, out)
        products(upper, x, out)
    return count / (time.perf_counter() - start)


def measure_split(bench: Bench) -> None:
    """Rows: one stream's products shared between two threads against one (the kernels split
    them from `SPLIT_MIN_WEIGHTS` up); skipped without numba or a second thread."""
    try:
        from charrnn.model import kernels
    except ImportError:
        log("sample: numba is not installed, the split products are not measured")
        return
    threads = torch.get_num_threads()
    if threads < 2:
        log("sample: one thread, the split products are not measured")
        return
    for hidden in bench.pick((128, 256, 512, 1024), (256,)):
        count = max(100, int(bench.pick(4e8, 2e7) / (12 * hidden * hidden)))
        log(f"sample: split products 2x{hidden}, {count} characters")
        one, two = best_alternating(
            partial(split_products, kernels, hidden, 1, count),
            partial(split_products, kernels, hidden, 2, count),
            repeats=3,
        )
        used = "" if 4 * hidden * hidden >= kernels.SPLIT_MIN_WEIGHTS else ", not split in use"
        bench.add(Row(
            "sample",
            f"kernels' products of one character, 2x{hidden}{used}: split on 2 threads (chars/s)",
            f"{two:,.0f}", f"{one:,.0f} (1 thread)", two / one,
        ))  # fmt: skip
    kernels.use_threads(threads)


def tree_at(commit: str, into: Path) -> Path | None:
    """The package as it was at `commit` (git archive) under `into`, or None outside a checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        archive = subprocess.run(
            ["git", "archive", commit, "charrnn"], cwd=root, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return into


def one_stream(root: Path, hidden: int, length: int, bfloat16: bool = False) -> dict[str, float]:
    """benchmarks/one_stream_worker.py's figures for the tree at `root`, in a new process
    (`bfloat16`: the model's weights rounded to bfloat16 values, as `export --dtype bfloat16`)."""
    worker = Path(__file__).with_name("one_stream_worker.py")
    command = [sys.executable, str(worker), "--root", str(root), "--hidden", str(hidden)]
    command += ["--bfloat16"] if bfloat16 else []
    result = subprocess.run(
        [*command, "--length", str(length)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


def measure_stepper(bench: Bench) -> None:
    """Rows: one stream of generate() from today's tree against BEFORE's, each in its own
    process, alternating; `warm` is the speed once loaded (a server, a long sample), `cold`
    a first call's, loading included."""
    before = tree_at(BEFORE, bench.scratch(f"tree-{BEFORE}"))
    if before is None:
        log(f"sample: no git history, {BEFORE}'s sampler is not measured")
        return
    today = Path(__file__).resolve().parents[1]
    sizes = bench.pick(FULL, QUICK)
    length = bench.pick(20_000, 2_000)
    # The sizes in float32, and (full runs) the largest with bfloat16 weights, no target.
    cases = [(hidden, False) for hidden in sizes.hidden]
    cases += [(max(sizes.hidden), True)] if bench.pick(True, False) else []
    for hidden, bfloat16 in cases:
        weights = ", bfloat16 weights" if bfloat16 else ""
        log(f"sample lstm 2x{hidden}{weights}: one stream x {length:,}, against {BEFORE}'s")
        old, new = [], []
        for _ in range(bench.pick(3, 1)):
            old.append(one_stream(before, hidden, length, bfloat16))
            new.append(one_stream(today, hidden, length, bfloat16))
        for kind in ("warm", "cold"):
            old_best = max(run[kind] for run in old)
            new_best = max(run[kind] for run in new)
            targeted = kind == "warm" and not bfloat16
            bench.add(
                Row(
                    "sample",
                    f"lstm 2x{hidden}{weights}, 1 stream x {length:,}, {kind}, vs {BEFORE}'s"
                    " (chars/s)",
                    f"{new_best:,.0f}",
                    f"{old_best:,.0f} ({BEFORE})",
                    new_best / old_best,
                    f">= {STEPPER_TARGET}x" if targeted else "",
                    new_best / old_best >= STEPPER_TARGET if targeted else None,
                    {"chars_per_s": new_best, "before_chars_per_s": old_best},
                )
            )

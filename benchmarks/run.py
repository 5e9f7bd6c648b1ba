"""charrnn benchmarks: one markdown table of ratios against baselines measured in the same run.

    python -m benchmarks.run [--quick] [--json PATH] [--only SECTION,...]

Absolute times on a shared machine mean little, so every figure is set beside a baseline measured
a moment earlier on the same machine: the matmul peak, a hand-written PyTorch loop, the usual
way of sampling, the training speed, a start-up run. Progress goes to stderr and the table to
stdout, ready to paste into benchmarks/RESULTS.md. See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charrnn.config import GATES, ModelConfig, RunConfig, SampleConfig
from charrnn.data import StreamBatches, Vocab
from charrnn.evaluate import score_ids
from charrnn.generate import generate
from charrnn.model import CharRNN
from charrnn.train import Trainer

SECTIONS = ("matmul", "train", "sample", "eval", "prepare", "quality")
REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
ASSUMED_EFFICIENCY = 0.25  # fraction of the matmul peak a training step reaches (sizes windows)
SAMPLE_VOCAB = 65  # tiny shakespeare's vocabulary size
TEMPERATURE = 0.8  # SampleConfig's default
REFERENCE_HAND_TUNED = 1.504  # 1-layer LSTM tuned by hand, 90 s on this machine (the issue)
REFERENCE_NANOGPT = 1.886  # nanoGPT's CPU recipe, 93 s (the issue)
QUALITY_TARGET = 1.48
TRAIN_TARGET = 0.95
SAMPLE_TARGET = 10_000.0
PREPARE_MBPS_TARGET = 50.0
PREPARE_RSS_TARGET = 2.0
PREPARE_CACHED_TARGET = 1.0


@dataclass(frozen=True)
class Sizes:
    """How big each section's work is; FULL for real figures, QUICK for a smoke run."""

    matmul_n: tuple[int, ...]
    matmul_seconds: float  # length of one timed loop
    matmul_loops: int  # best of this many loops
    train_hidden: tuple[int, ...]
    train_batch: int | None  # None: the default preset's
    train_seq: int | None
    window_seconds: float  # aimed-for length of one timed training window
    window_limits: tuple[int, int]  # fewest and most steps in a window
    sample_hidden: tuple[int, ...]
    sample_length_one: int  # characters for one stream
    sample_length_many: int  # characters per stream for 64 streams
    eval_chars: int | None  # None: the whole validation split
    prepare_bytes: int
    prepare_repeats: int  # best of this many runs of each prepare measurement
    quality_time: str
    quality_corpus_chars: int | None  # None: tiny shakespeare itself


FULL = Sizes(
    matmul_n=(1024, 2048),
    matmul_seconds=1.0,
    matmul_loops=3,
    train_hidden=(256, 512),
    train_batch=None,
    train_seq=None,
    window_seconds=2.0,
    window_limits=(2, 20),
    sample_hidden=(256, 512),
    sample_length_one=3000,
    sample_length_many=200,
    eval_chars=None,
    prepare_bytes=100_000_000,
    prepare_repeats=2,
    quality_time="90s",
    quality_corpus_chars=None,
)
QUICK = Sizes(
    matmul_n=(256, 512),
    matmul_seconds=0.1,
    matmul_loops=2,
    train_hidden=(32,),
    train_batch=8,
    train_seq=32,
    window_seconds=0.0,
    window_limits=(3, 3),
    sample_hidden=(256,),
    sample_length_one=300,
    sample_length_many=20,
    eval_chars=20_000,
    prepare_bytes=2_000_000,
    prepare_repeats=1,
    quality_time="3s",
    quality_corpus_chars=30_000,
)


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
    """What sections share: sizes, a scratch folder and measurements others reuse."""

    sizes: Sizes
    quick: bool
    workdir: Path
    rows: list[Row] = field(default_factory=list)
    cache: dict[Any, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        """Append a row to the table."""
        self.rows.append(row)

    def scratch(self, name: str) -> Path:
        """A fresh empty folder under the work folder."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))


def log(text: str) -> None:
    """Progress on stderr, so stdout carries only the table."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def best_alternating(
    first: Callable[[], float], second: Callable[[], float], repeats: int = 2
) -> tuple[float, float]:
    """Best (largest) result of each, measured A B A B to spread the machine's noise evenly."""
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return max(a), max(b)


# ----------------------------------------------------------------------------- text


WORDS = (
    "the and to of my that in you is not with it for be his this your but he have as me so "
    "thou will what her him all shall lord thy no by do good king now sir more come love well"
)


def generated_text(n_chars: int, seed: int = 0) -> str:
    """Word salad with capitals, punctuation and lines: a stand-in when no corpus is at hand."""
    rng, words = np.random.default_rng(seed), WORDS.split()
    lines, size = [], 0
    while size < n_chars:
        picked = [words[i] for i in rng.integers(0, len(words), rng.integers(3, 12))]
        line = " ".join(picked).capitalize() + rng.choice([".", ",", "!", "?", ":", ";"])
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:n_chars] + "\n"


def corpus_text() -> str:
    """Tiny shakespeare when the shared data folder has it, else 1 MB of generated text."""
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text("utf-8")
    return generated_text(1_000_000)


def training_data(bench: Bench) -> tuple[Vocab, np.ndarray]:
    """The corpus' vocabulary and ids, stored compactly as the corpus cache stores them."""
    if "data" not in bench.cache:
        text = corpus_text()
        vocab = Vocab(tuple(sorted(set(map(ord, text)))))
        bench.cache["data"] = (vocab, vocab.encode(text).astype(vocab.dtype))
    return bench.cache["data"]


def foreign_lines(rng: np.random.Generator, count: int) -> list[str]:
    """Lines of Greek, accented Latin, CJK and emoji: several hundred symbols beyond ASCII."""
    points = (
        list(range(0x391, 0x3AA))
        + list(range(0x3B1, 0x3CA))
        + list(range(0xC0, 0x100))
        + list(range(0x4E00, 0x4E00 + 200))
        + list(range(0x1F600, 0x1F650))
    )
    pool = np.array([chr(p) for p in points] + [" "] * 40)
    return ["".join(rng.choice(pool, rng.integers(10, 60))) for _ in range(count)]


def write_mixed_corpus(path: Path, n_bytes: int, seed: int = 0) -> int:
    """Write about `n_bytes` of reshuffled corpus lines with 5% non-ASCII ones; return the size."""
    rng = np.random.default_rng(seed)
    lines = corpus_text().splitlines()
    pool = lines + foreign_lines(rng, len(lines) // 20)
    written = 0
    with path.open("wb") as handle:
        while written < n_bytes:
            picks = rng.integers(0, len(pool), 20_000)
            block = ("\n".join(pool[i] for i in picks) + "\n").encode("utf-8")
            handle.write(block)
            written += len(block)
    return written


# ----------------------------------------------------------------------------- matmul


def matmul_gflops(n: int, seconds: float) -> float:
    """Square fp32 matmul rate over one loop of about `seconds`."""
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up: thread pool and caches
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        torch.mm(a, b, out=out)
        count += 1
    return 2.0 * n**3 * count / elapsed / 1e9


def matmul_rates(bench: Bench) -> dict[int, float]:
    """Best-of-loops GFLOP/s for each matrix size (measured once per run)."""
    if "matmul" not in bench.cache:
        sizes = bench.sizes
        bench.cache["matmul"] = {
            n: max(matmul_gflops(n, sizes.matmul_seconds) for _ in range(sizes.matmul_loops))
            for n in sizes.matmul_n
        }
    return bench.cache["matmul"]


def peak_gflops(bench: Bench) -> float:
    """This machine's fp32 matmul peak: the best rate over the sizes tried."""
    return max(matmul_rates(bench).values())


def section_matmul(bench: Bench) -> None:
    """Rows: each matrix size's GFLOP/s as a fraction of the best (the peak)."""
    rates = matmul_rates(bench)
    peak = max(rates.values())
    for n, rate in rates.items():
        bench.add(
            Row(
                "matmul",
                f"fp32 matmul {n}x{n} (GFLOP/s)",
                f"{rate:.1f}",
                f"peak {peak:.1f}",
                rate / peak,
                numbers={"n": n, "gflops": rate, "peak_gflops": peak},
            )
        )


# ----------------------------------------------------------------------------- train


@dataclass(frozen=True)
class Shape:
    """A model and batch shape, with its analytic cost per character."""

    cell: str
    layers: int
    hidden: int
    embed: int
    batch_size: int
    seq_len: int
    vocab_size: int

    @property
    def name(self) -> str:
        """E.g. 'lstm 2x256'."""
        return f"{self.cell} {self.layers}x{self.hidden}"

    def forward_flops_per_char(self) -> float:
        """Multiply-adds x 2 of the recurrent layers and the output layer for one character."""
        total = 0
        for layer in range(self.layers):
            inputs = self.embed if layer == 0 else self.hidden
            total += 2 * GATES[self.cell] * self.hidden * (inputs + self.hidden)
        return float(total + 2 * self.hidden * self.vocab_size)

    def train_flops_per_char(self) -> float:
        """Forward, and backward at twice the forward."""
        return 3.0 * self.forward_flops_per_char()


def train_shape(bench: Bench, cell: str, hidden: int) -> Shape:
    """A 2-layer `cell` at `hidden` with the default preset's embedding, batch and window."""
    defaults = RunConfig()
    vocab, _ = training_data(bench)
    return Shape(
        cell,
        2,
        hidden,
        defaults.model.embed,
        bench.sizes.train_batch or defaults.train.batch_size,
        bench.sizes.train_seq or defaults.train.seq_len,
        vocab.size,
    )


def window_steps(bench: Bench, shape: Shape) -> int:
    """Steps per timed window, so that one window lasts about `window_seconds`."""
    low, high = bench.sizes.window_limits
    if low == high:
        return low
    step_flops = shape.train_flops_per_char() * shape.batch_size * shape.seq_len
    step_seconds = step_flops / (ASSUMED_EFFICIENCY * peak_gflops(bench) * 1e9)
    return max(low, min(high, math.ceil(bench.sizes.window_seconds / step_seconds)))


class BaselineLM(nn.Module):
    """The textbook character model: embedding -> fused recurrent layers -> linear."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.embed = nn.Embedding(shape.vocab_size, shape.embed)
        self.rnn = RECURRENT[shape.cell](
            shape.embed, shape.hidden, num_layers=shape.layers, batch_first=True
        )
        self.head = nn.Linear(shape.hidden, shape.vocab_size)

    def forward(self, ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Logits (B, T, V) and the state after the last position."""
        features, state = self.rnn(self.embed(ids), state)
        return self.head(features), state


def baseline_train_speed(shape: Shape, ids: np.ndarray, window: int) -> float:
    """Chars/s of a minimal hand-written loop over the second of two windows of `window` steps."""
    torch.manual_seed(0)
    model = BaselineLM(shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b, t = shape.batch_size, shape.seq_len
    stream = (ids.shape[0] - 1) // b
    inputs = ids[: b * stream].reshape(b, stream)
    targets = ids[1 : b * stream + 1].reshape(b, stream)
    steps_per_epoch = stream // t
    state, start = None, time.perf_counter()
    for step in range(2 * window):
        if step == window:
            start = time.perf_counter()
        column = (step % steps_per_epoch) * t
        x = torch.from_numpy(inputs[:, column : column + t].astype(np.int64))
        y = torch.from_numpy(targets[:, column : column + t].astype(np.int64))
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.reshape(-1, shape.vocab_size), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    return window * b * t / (time.perf_counter() - start)


def second_window_speed(metrics: Path, step: int) -> float:
    """`chars_per_s` of the metrics line logged at `step`."""
    for line in metrics.read_text("utf-8").splitlines():
        record = json.loads(line)
        if record.get("step") == step and record.get("chars_per_s") is not None:
            return float(record["chars_per_s"])
    raise RuntimeError(f"{metrics} has no chars_per_s at step {step}")


def charrnn_train_speed(bench: Bench, shape: Shape, window: int) -> float:
    """Chars/s of charrnn's Trainer over its second logged window of `window` steps."""
    vocab, ids = training_data(bench)
    config = RunConfig().replace(
        cell=shape.cell,
        layers=shape.layers,
        hidden=shape.hidden,
        embed=shape.embed,
        batch_size=shape.batch_size,
        seq_len=shape.seq_len,
        max_steps=2 * window,
        max_epochs=None,
        log_every=window,
        eval_every=2 * window + 1,  # only the final evaluation, after the timed windows
        device="cpu",
    )
    torch.manual_seed(0)
    model = CharRNN(config.model, vocab.size)
    batches = StreamBatches(ids, shape.batch_size, shape.seq_len)
    run_dir = bench.scratch("train")
    val_ids = np.asarray(ids[-2000:])  # the final evaluation is not timed: keep it short
    Trainer(model, batches, val_ids, config, vocab, run_dir, torch.device("cpu")).run()
    return second_window_speed(run_dir / "metrics.jsonl", 2 * window)


def section_train(bench: Bench) -> None:
    """Rows: Trainer chars/s against a plain PyTorch loop, and GFLOP/s against the peak."""
    _, ids = training_data(bench)
    peak = peak_gflops(bench)
    for hidden in bench.sizes.train_hidden:
        for cell in ("lstm", "gru", "rnn"):
            shape = train_shape(bench, cell, hidden)
            window = window_steps(bench, shape)
            log(
                f"train {shape.name}: B={shape.batch_size} T={shape.seq_len}, {window}-step windows"
            )
            baseline, ours = best_alternating(
                partial(baseline_train_speed, shape, ids, window),
                partial(charrnn_train_speed, bench, shape, window),
            )
            bench.cache[("train", cell, hidden)] = ours
            add_train_rows(bench, shape, ours, baseline, peak)


def add_train_rows(bench: Bench, shape: Shape, ours: float, baseline: float, peak: float) -> None:
    """The speed row (target >= 0.95 of the plain loop) and the efficiency row of `shape`."""
    ratio = ours / baseline
    bench.add(
        Row(
            "train",
            f"{shape.name} B={shape.batch_size} T={shape.seq_len} (chars/s)",
            f"{ours:,.0f}",
            f"{baseline:,.0f} (plain loop)",
            ratio,
            f">= {TRAIN_TARGET}",
            ratio >= TRAIN_TARGET,
            {"chars_per_s": ours, "baseline_chars_per_s": baseline},
        )
    )
    gflops = ours * shape.train_flops_per_char() / 1e9
    bench.add(
        Row(
            "train",
            f"{shape.name} achieved GFLOP/s (x matmul peak)",
            f"{gflops:.1f}",
            f"peak {peak:.1f}",
            gflops / peak,
            numbers={"gflops": gflops, "flops_per_char": shape.train_flops_per_char()},
        )
    )


# ----------------------------------------------------------------------------- sample


def sample_model(hidden: int) -> tuple[CharRNN, Vocab]:
    """A randomly initialised 2-layer LSTM over a 65-symbol vocabulary."""
    vocab = Vocab(tuple(range(32, 32 + SAMPLE_VOCAB)))
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=hidden), vocab.size).eval()
    return model, vocab


def charrnn_sample_speed(model: CharRNN, vocab: Vocab, streams: int, length: int) -> float:
    """Chars/s of charrnn.generate.generate."""
    config = SampleConfig(length=length, num_samples=streams, seed=0)
    start = time.perf_counter()
    generate(model, vocab, "", config)
    return streams * length / (time.perf_counter() - start)


def baseline_sample_speed(model: CharRNN, vocab: Vocab, streams: int, length: int) -> float:
    """Chars/s of the usual loop: the model's own forward one character at a time, multinomial."""
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        ids, state, drawn = torch.zeros(streams, 1, dtype=torch.long), None, []
        for _ in range(length):
            logits, state = model(ids, state)
            probs = torch.softmax(logits[:, -1] / TEMPERATURE, dim=-1)
            ids = torch.multinomial(probs, 1, generator=generator)
            drawn.append(ids)
        texts = [vocab.decode(row) for row in torch.cat(drawn, dim=1).numpy()]
    assert len(texts) == streams
    return streams * length / (time.perf_counter() - start)


def section_sample(bench: Bench) -> None:
    """Rows: generate() chars/s against stepping nn.LSTM, for one stream and for 64."""
    sizes = bench.sizes
    for hidden in sizes.sample_hidden:
        model, vocab = sample_model(hidden)
        for streams, length in ((1, sizes.sample_length_one), (64, sizes.sample_length_many)):
            log(f"sample lstm 2x{hidden}: {streams} stream(s) x {length} chars")
            baseline, ours = best_alternating(
                partial(baseline_sample_speed, model, vocab, streams, length),
                partial(charrnn_sample_speed, model, vocab, streams, length),
            )
            has_target = streams == 1 and hidden == 256
            bench.add(
                Row(
                    "sample",
                    f"lstm 2x{hidden}, {streams} stream{'s' if streams > 1 else ''} (chars/s)",
                    f"{ours:,.0f}",
                    f"{baseline:,.0f} (nn.LSTM steps)",
                    ours / baseline,
                    f">= {SAMPLE_TARGET:,.0f} chars/s" if has_target else "",
                    ours >= SAMPLE_TARGET if has_target else None,
                    {"chars_per_s": ours, "baseline_chars_per_s": baseline},
                )
            )


# ----------------------------------------------------------------------------- eval


def eval_ids(bench: Bench) -> np.ndarray:
    """The validation split (the default val_frac) of the corpus, or its first `eval_chars`."""
    _, ids = training_data(bench)
    split = int(ids.shape[0] * (1.0 - RunConfig().data.val_frac))
    val = np.asarray(ids[split:])
    return val[: bench.sizes.eval_chars] if bench.sizes.eval_chars else val


def eval_speed(model: CharRNN, ids: np.ndarray, streams: int) -> float:
    """Chars/s of charrnn.evaluate.score_ids."""
    start = time.perf_counter()
    result = score_ids(model, ids, streams, "cpu")
    return result.chars / (time.perf_counter() - start)


def section_eval(bench: Bench) -> None:
    """Row: score_ids chars/s against the Trainer's chars/s for the same 2-layer LSTM."""
    hidden = bench.sizes.train_hidden[0]
    shape = train_shape(bench, "lstm", hidden)
    streams = RunConfig().train.eval_streams
    ids = eval_ids(bench)
    vocab, _ = training_data(bench)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=hidden), vocab.size)
    log(f"eval {shape.name}: {ids.shape[0]:,} chars in {streams} streams")
    speed = max(eval_speed(model, ids, streams) for _ in range(2))
    train = bench.cache.get(("train", "lstm", hidden))
    if train is None:
        log(f"eval: measuring charrnn training speed of {shape.name}")
        train = charrnn_train_speed(bench, shape, window_steps(bench, shape))
    bench.add(
        Row(
            "eval",
            f"{shape.name} score_ids, {streams} streams, {ids.shape[0]:,} chars (chars/s)",
            f"{speed:,.0f}",
            f"{train:,.0f} (training)",
            speed / train,
            numbers={"chars_per_s": speed, "train_chars_per_s": train},
        )
    )


# ----------------------------------------------------------------------------- prepare


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


def prepare_run(corpus: Path, cache_dir: Path) -> tuple[ChildRun, dict[str, Any]]:
    """`charrnn prepare CORPUS --json` measured, and its JSON answer."""
    run = run_child(charrnn_args("prepare", str(corpus), "--cache-dir", str(cache_dir), "--json"))
    return run, json.loads(run.stdout.strip().splitlines()[-1])


def fastest_prepare(
    corpus: Path, cache_dirs: list[Path], cached: bool
) -> tuple[ChildRun, dict[str, Any]]:
    """The fastest of one `prepare` run per cache folder; check each hit or missed the cache."""
    runs = [prepare_run(corpus, cache_dir) for cache_dir in cache_dirs]
    for _, info in runs:
        if info["cached"] != cached:
            raise RuntimeError(f"prepare {corpus.name}: expected cached={cached}, got {info}")
    return min(runs, key=lambda pair: pair[0].seconds)


def section_prepare(bench: Bench) -> None:
    """Rows: `charrnn prepare` time, peak RSS and cache-hit time against a 1 KB corpus' run."""
    folder = bench.scratch("prepare")
    small, big = folder / "small.txt", folder / "big.txt"
    small.write_text(corpus_text()[:1000], encoding="utf-8")
    log(f"prepare: writing a {bench.sizes.prepare_bytes / 1e6:.0f} MB corpus")
    size = write_mixed_corpus(big, bench.sizes.prepare_bytes)
    # Best of two of each: start-up (imports, ~0.3 s) is noisy on a shared machine.
    repeats = range(bench.sizes.prepare_repeats)
    start_up, _ = fastest_prepare(small, [folder / f"small-{i}" for i in repeats], cached=False)
    log(f"prepare: encoding the large corpus {len(repeats)}x, then {len(repeats)}x from the cache")
    fresh = [folder / f"big-{i}" for i in repeats]
    cold, info = fastest_prepare(big, fresh, cached=False)
    warm, _ = fastest_prepare(big, fresh, cached=True)
    add_prepare_rows(bench, size, start_up, cold, warm, info)


def add_prepare_rows(
    bench: Bench, size: int, start_up: ChildRun, cold: ChildRun, warm: ChildRun, info: dict
) -> None:
    """Three rows, each a ratio to the 1 KB run; the targeted figure is in the value column."""
    mb = size / 1e6
    label = f"{mb:.0f} MB, vocab {info['vocab_size']}"
    base_time = f"1 KB run {start_up.seconds:.2f} s"
    net = cold.seconds - start_up.seconds
    rate = mb / net if net > 0 else None  # quick mode: the work can vanish in start-up noise
    bench.add(
        Row(
            "prepare",
            f"{label}: wall time; MB/s net of start-up",
            f"{cold.seconds:.2f} s; " + (f"{rate:.1f} MB/s" if rate else "n/a"),
            base_time,
            cold.seconds / start_up.seconds,
            f">= {PREPARE_MBPS_TARGET:.0f} MB/s",
            None if rate is None else rate >= PREPARE_MBPS_TARGET,
            {"seconds": cold.seconds, "start_up_seconds": start_up.seconds, "mb": mb},
        )
    )
    extra = (cold.max_rss_kib - start_up.max_rss_kib) * 1024 / size
    bench.add(
        Row(
            "prepare",
            f"{label}: peak RSS; extra RSS per corpus byte",
            f"{cold.max_rss_kib / 1024:.0f} MiB; {extra:.2f}x",
            f"1 KB run {start_up.max_rss_kib / 1024:.0f} MiB",
            cold.max_rss_kib / start_up.max_rss_kib,
            f"extra <= {PREPARE_RSS_TARGET:.0f}x",
            extra <= PREPARE_RSS_TARGET,
            {"max_rss_kib": cold.max_rss_kib, "start_up_max_rss_kib": start_up.max_rss_kib},
        )
    )
    cached = warm.seconds - start_up.seconds
    bench.add(
        Row(
            "prepare",
            f"{label}: cached run wall time; minus 1 KB run",
            f"{warm.seconds:.2f} s; {cached:+.2f} s",
            base_time,
            warm.seconds / start_up.seconds,
            f"< {PREPARE_CACHED_TARGET:.0f} s",
            cached < PREPARE_CACHED_TARGET,
            {"cached_seconds": warm.seconds},
        )
    )


# ----------------------------------------------------------------------------- quality


def quality_corpus(bench: Bench, folder: Path) -> Path:
    """Tiny shakespeare itself, or (quick mode, or when it is missing) a generated text."""
    chars = bench.sizes.quality_corpus_chars
    if chars is None and SHAKESPEARE.is_file():
        return SHAKESPEARE
    path = folder / "corpus.txt"
    path.write_text(corpus_text()[: chars or 1_000_000], encoding="utf-8")
    return path


def section_quality(bench: Bench) -> None:
    """Rows: validation loss of the default preset after a timed run, against the references."""
    folder = bench.scratch("quality")
    corpus, run_dir = quality_corpus(bench, folder), folder / "run"
    time_limit = bench.sizes.quality_time
    log(f"quality: training the default preset for {time_limit} on {corpus.name}")
    train = run_child(
        charrnn_args("train", str(corpus), "--max-time", time_limit, "--out", str(run_dir), "-q")
    )
    answer = run_child(charrnn_args("eval", "--checkpoint", str(run_dir), "--json"))
    loss = float(json.loads(answer.stdout.strip().splitlines()[-1])["loss"])
    judged = not bench.quick and corpus == SHAKESPEARE
    target = f"<= {QUALITY_TARGET}" if judged else "skipped (quick or no corpus)"
    figure = f"val loss, default preset, {time_limit} on {corpus.name} (nats/char)"
    numbers = {"val_loss": loss, "train_seconds": train.seconds}
    for reference, name, target_text, passed in (
        (
            REFERENCE_HAND_TUNED,
            "1-layer LSTM by hand, 90 s",
            target,
            loss <= QUALITY_TARGET if judged else None,
        ),
        (REFERENCE_NANOGPT, "nanoGPT CPU recipe, 93 s", "", None),
    ):
        bench.add(
            Row(
                "quality",
                figure,
                f"{loss:.3f}",
                f"{reference} ({name})",
                loss / reference,
                target_text,
                passed,
                numbers,
            )
        )


# ----------------------------------------------------------------------------- the table


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

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


def render(bench: Bench, info: dict[str, Any], seconds: float) -> str:
    """The header and the one markdown table."""
    mode = "quick" if bench.quick else "full"
    lines = [
        f"## charrnn benchmarks ({mode})",
        "",
        f"- date: {info['date']}",
        f"- machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
        f"{info['torch_threads']} torch threads",
        f"- wall time: {seconds:.0f} s",
        "",
        "| section | figure | charrnn | baseline | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in bench.rows:
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


RUNNERS: dict[str, Callable[[Bench], None]] = {
    "matmul": section_matmul,
    "train": section_train,
    "sample": section_sample,
    "eval": section_eval,
    "prepare": section_prepare,
    "quality": section_quality,
}


def run_sections(bench: Bench, names: list[str]) -> bool:
    """Run the named sections in order; a failing one becomes an error row. True if none failed."""
    ok = True
    for name in names:
        log(f"section {name}")
        started = time.perf_counter()
        try:
            RUNNERS[name](bench)
        except Exception as exc:  # one broken section should not hide the others' figures
            traceback.print_exc(file=sys.stderr)
            bench.add(Row(name, "error", f"{type(exc).__name__}: {exc}"))
            ok = False
        log(f"section {name} took {time.perf_counter() - started:.1f} s")
    return ok


def parse_sections(text: str | None) -> list[str]:
    """Section names from `--only`, in the suite's order."""
    if not text:
        return list(SECTIONS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}"
        )
    return [name for name in SECTIONS if name in names]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description="charrnn benchmarks: ratios to baselines."
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a ~30 s smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--only",
        type=parse_sections,
        default=list(SECTIONS),
        help=f"comma-separated sections: {','.join(SECTIONS)}",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the sections, print the table (and write JSON); 1 if a section broke."""
    args = parse_args(argv)
    info = machine()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as workdir:
        bench = Bench(QUICK if args.quick else FULL, args.quick, Path(workdir))
        ok = run_sections(bench, args.only)
    seconds = time.perf_counter() - started
    print(render(bench, info, seconds))
    if args.json:
        report = {
            "mode": "quick" if args.quick else "full",
            **info,
            "seconds": seconds,
            "rows": [asdict(row) for row in bench.rows],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

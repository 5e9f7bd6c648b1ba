"""train: charrnn's Trainer against a hand-written PyTorch loop; its share of the matmul peak;
AdamW fused into one kernel against PyTorch's per-parameter loop (what the Trainer chose it by);
what logging the gradient norm and clip share adds to a step."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import Bench, Row, best_alternating, log, skipped_bf16
from benchmarks.corpus import training_data
from benchmarks.matmul import peak_gflops
from charrnn.config import GATES, ModelConfig, RunConfig
from charrnn.model.network import CharRNN
from charrnn.system.device import select_device
from charrnn.text.corpus import StreamBatches
from charrnn.training.trainer import GradientWatch, Trainer, _LogWindow

RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
ASSUMED_EFFICIENCY = 0.25  # fraction of the matmul peak a training step reaches (sizes windows)
TARGET = 0.95  # charrnn's chars/s over the plain loop's


@dataclass(frozen=True)
class Sizes:
    hidden: tuple[int, ...]  # 2-layer LSTM, GRU and RNN at each of these
    batch: int | None  # None: the default preset's
    seq: int | None  # None: the default preset's
    window_seconds: float  # aimed-for length of one timed window
    window_limits: tuple[int, int]  # fewest and most steps in a window
    adamw_steps: int  # timed steps per look at each AdamW
    adamw_looks: int  # looks at each, alternating
    log_lines: int = 200  # metrics lines' worth of gradient bookkeeping timed


FULL = Sizes((256, 512), None, None, 2.0, (2, 20), adamw_steps=100, adamw_looks=5)
QUICK = Sizes((32,), 8, 32, 0.0, (3, 3), adamw_steps=3, adamw_looks=1, log_lines=3)
GRADIENT_LOG_TARGET = 0.01  # of the step time


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

    def model_config(self) -> ModelConfig:
        """charrnn's configuration of this model."""
        return ModelConfig(cell=self.cell, layers=self.layers, hidden=self.hidden, embed=self.embed)

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
    defaults, sizes = RunConfig(), bench.pick(FULL, QUICK)
    vocab, _ = training_data(bench)
    return Shape(
        cell,
        2,
        hidden,
        defaults.model.embed,
        sizes.batch or defaults.train.batch_size,
        sizes.seq or defaults.train.seq_len,
        vocab.size,
    )


def window_steps(bench: Bench, shape: Shape) -> int:
    """Steps per timed window, so that one window lasts about `window_seconds`."""
    sizes = bench.pick(FULL, QUICK)
    low, high = sizes.window_limits
    if low == high:
        return low
    step_flops = shape.train_flops_per_char() * shape.batch_size * shape.seq_len
    step_seconds = step_flops / (ASSUMED_EFFICIENCY * peak_gflops(bench) * 1e9)
    return max(low, min(high, math.ceil(sizes.window_seconds / step_seconds)))


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
    config = RunConfig(model=shape.model_config()).replace(
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
    device = select_device(config.train.device)
    Trainer(model, batches, val_ids, config, vocab, run_dir, device).run()
    return second_window_speed(run_dir / "metrics.jsonl", 2 * window)


def charrnn_train_speed_of(bench: Bench, cell: str, hidden: int) -> float:
    """The Trainer's chars/s for a 2-layer `cell` at `hidden`: this run's `train` figure if it
    has one, else measured now."""
    key = ("train", cell, hidden)
    if key not in bench.cache:
        shape = train_shape(bench, cell, hidden)
        log(f"measuring charrnn training speed of {shape.name}")
        bench.cache[key] = charrnn_train_speed(bench, shape, window_steps(bench, shape))
    return bench.cache[key]


def measure(bench: Bench) -> None:
    """Rows: Trainer chars/s against a plain PyTorch loop, and GFLOP/s against the peak."""
    _, ids = training_data(bench)
    peak = peak_gflops(bench)
    for hidden in bench.pick(FULL, QUICK).hidden:
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
            add_rows(bench, shape, ours, baseline, peak)
    measure_adamw(bench)
    measure_gradient_log(bench)


def adamw_steps_per_s(fused: bool, bf16: bool, steps: int) -> float:
    """Training steps/s of the default preset's model (1 x 256 LSTM, batch 32 x 32, random ids)
    with AdamW `fused` into one kernel or PyTorch's loop over the parameters (its unfused form
    on the CPU), fp32 or with bf16 autocast."""
    config = RunConfig()
    vocab = 65
    torch.manual_seed(0)
    model = CharRNN(config.model, vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=fused)
    ids = torch.randint(0, vocab, (config.train.batch_size, config.train.seq_len + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    state: Any = None
    start = time.perf_counter()
    for step in range(steps + 3):
        if step == 3:  # the first steps allocate
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, state = model(inputs, state)
            loss = F.cross_entropy(logits.reshape(-1, vocab).float(), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state = tuple(part.detach() for part in state)
    return steps / (time.perf_counter() - start)


def measure_adamw(bench: Bench) -> None:
    """Rows: steps/s with the fused AdamW the Trainer uses on the CPU against PyTorch's loop."""
    sizes = bench.pick(FULL, QUICK)
    for bf16 in (False, True):
        if bf16 and skipped_bf16(bench, "train", "AdamW fused, lstm 1x256 B=32 T=32 bf16"):
            continue
        loop, fused = best_alternating(
            partial(adamw_steps_per_s, False, bf16, sizes.adamw_steps),
            partial(adamw_steps_per_s, True, bf16, sizes.adamw_steps),
            repeats=sizes.adamw_looks,
        )
        bench.add(
            Row(
                "train",
                f"AdamW fused, lstm 1x256 B=32 T=32 {'bf16' if bf16 else 'fp32'} (steps/s)",
                f"{fused:.1f}",
                f"{loop:.1f} (per-parameter loop)",
                fused / loop,
                numbers={"steps_per_s": fused, "baseline_steps_per_s": loop},
            )
        )


def add_rows(bench: Bench, shape: Shape, ours: float, baseline: float, peak: float) -> None:
    """The speed row (target >= 0.95 of the plain loop) and the efficiency row of `shape`."""
    ratio = ours / baseline
    bench.add(
        Row(
            "train",
            f"{shape.name} B={shape.batch_size} T={shape.seq_len} (chars/s)",
            f"{ours:,.0f}",
            f"{baseline:,.0f} (plain loop)",
            ratio,
            f">= {TARGET}",
            ratio >= TARGET,
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


def gradient_log_seconds_per_step(lines: int) -> float:
    """Seconds per training step that the gradient log adds (issue 32), timed on its own: per
    step, keeping the step's norm (a tensor, no sync); per metrics line (`log_every` steps of the
    default preset), reading the norms off the device and summarising them (mean, max, clip
    share, the explosion check). The best of three timings of `lines` lines."""
    config = RunConfig()
    every = config.train.log_every
    torch.manual_seed(0)
    norms = [torch.rand(()) + 0.5 for _ in range(every)]  # as clip_grad_norm_ returns them
    loss = torch.ones(())

    def timed() -> float:
        window, watch = _LogWindow(torch.device("cpu")), GradientWatch(config.train, None, False)
        start = time.perf_counter()
        for line in range(lines):
            for step, norm in enumerate(norms, line * every):
                window.add(loss, 1, step, norm)
            watch.summarize(*window.take_norms())
        seconds = time.perf_counter() - start
        # What the window did before it kept norms, timed the same way and taken off.
        window, start = _LogWindow(torch.device("cpu")), time.perf_counter()
        for _ in range(lines):
            for _norm in norms:
                window.loss_sum += loss
                window.steps += 1
                window.chars += 1
        return (seconds - (time.perf_counter() - start)) / (lines * every)

    return min(timed() for _ in range(3))


def measure_gradient_log(bench: Bench) -> None:
    """Row: the gradient log's time per step against the default preset's step (fp32, fused
    AdamW, clip_grad_norm_), both measured here."""
    sizes = bench.pick(FULL, QUICK)
    step = 1.0 / max(adamw_steps_per_s(True, False, sizes.adamw_steps) for _ in range(2))
    added = gradient_log_seconds_per_step(sizes.log_lines)
    ratio = added / step
    bench.add(
        Row(
            "train",
            "gradient log (norm, clip share, explosion check) per step, lstm 1x256 B=32 T=32",
            f"{added * 1e6:.2f} us",
            f"{step * 1e3:.2f} ms (training step)",
            ratio,
            f"<= {GRADIENT_LOG_TARGET}",
            ratio <= GRADIENT_LOG_TARGET,
            {"seconds_per_step": added, "step_seconds": step},
        )
    )

"""`--auto`: choose the network, batch and window for a corpus, a time budget and this machine.

The rule, after char-rnn's advice and the compute-optimal studies of language models:
- **precision**: on a CPU the probe first trains one shape in fp32 and with bf16 autocast and
  keeps bf16 when it is at least `BF16_GAIN` times faster (CPUs with AVX512-BF16 or AMX run it
  ~1.5x faster; on others it is slower). Elsewhere the run's own `--precision` stands.
- **time**: a model is worth its size only if the run can show it enough text. The run will see
  `speed x seconds` characters, where `speed` is measured, not guessed: a short probe trains each
  candidate shape for a fraction of a second on the corpus itself, in this process, with the
  threads and precision the run will use. The largest candidate that will see at least
  `CHARS_PER_PARAMETER` characters per parameter wins (the smallest when none does). The ratio
  is measured on tiny Shakespeare, not borrowed from word-level studies: at 10 minutes (fp32)
  a 1 x 512 LSTM that saw 5 characters per parameter beat a 1 x 384 at 14 and a 1 x 256 at 29;
  at 90 s (bf16) a 1 x 256 at 16 beat a 1 x 384 at 4; in fp32 at 90 s every width between 4
  and 22 ended within seed noise. The best lies between about 5 and 15.
- **data**: parameters of the order of the corpus characters, at most `DATA_PARAMETER_RATIO`
  times the training characters; beyond that a model memorises the text instead of learning it.
- **window and batch**: short runs are limited by optimiser steps, so the window stays at 32
  characters (the tuned default) and grows, then the batch, only while the run still makes
  `MIN_STEPS` steps.
- **learning rate** falls as the square root of the width; **dropout** 0.3 when a model big
  enough to memorise the text will see it more than `DROPOUT_EPOCHS` times.
Settings the user gave (flags or a `--config` file) are kept; the rule chooses the others.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn.config import (
    AUTO_KEYS,
    ModelConfig,
    RunConfig,
    TrainConfig,
    count_parameters,
    recurrent_parameters,
)
from charrnn.errors import UsageError
from charrnn.model.network import CharRNN, autocast_failure
from charrnn.system.device import CpuThreads, select_device
from charrnn.text.corpus import StreamBatches, Vocab
from charrnn.training.trainer import Trainer, planned_steps

# Shapes tried, from small to large (layers, hidden). One layer while the model is small: in a
# short run on a CPU a second layer costs steps that a wider single layer uses better.
CANDIDATE_SHAPES = (
    (1, 64), (1, 96), (1, 128), (1, 192), (1, 256), (1, 384), (1, 512),
    (2, 384), (2, 512), (2, 768), (3, 768), (3, 1024),
)  # fmt: skip
HIDDEN_SIZES = (64, 96, 128, 192, 256, 384, 512, 768, 1024)
LAYER_COUNTS = (1, 2, 3)

CHARS_PER_PARAMETER = 8.0  # characters the run must show each parameter (the time cap)
DATA_PARAMETER_RATIO = 1.5  # parameters per training character at most (the data cap)
MIN_STEPS = 8000  # the window and batch grow only while the run keeps this many steps
BASE_BATCH, BASE_WINDOW = 32, 32  # the tuned `small` preset's shape
MAX_BATCH, MAX_WINDOW = 256, 128
BASE_LR, BASE_HIDDEN = 6e-3, 256  # `small`'s learning rate for its width
DROPOUT_EPOCHS = 8.0  # measured: 0.1 cost 0.01 at 5 epochs (90 s, bf16), gained 0.005 at 10
# A 1 x 512 that sees tiny Shakespeare 10 times (10 min, bf16) overfits at 0.1 (training loss
# 1.15 against validation 1.44): with 0.3 it ended 0.004 lower on three seeds' mean, within their
# noise, and 0.0085 below 0.2 for one seed (RESULTS.md, "Quality for time").
DROPOUT = 0.3

# The probe: a small share of the budget, split among the shapes it measures.
PROBE_SHARE, MIN_PROBE_S, MAX_PROBE_S = 0.03, 1.5, 30.0
MIN_SHAPE_S = 0.2  # each measured shape trains at least this long (after its warm-up steps)
SHARE_PER_SHAPE = 1 / 10  # and at least this share of the probe's budget
BF16_GAIN = 1.1  # bf16 autocast is chosen on a CPU only when this much faster than fp32
BF16_CLEAR = 1.3  # a first look at the two precisions closer than this gets a second look
WARMUP_STEPS, MIN_TIMED_STEPS = 2, 2
# `--precision auto` without --auto: the run's own shape is probed for a second or two, in runs
# long enough for a bf16 gain to pay that second back many times (at ~100k chars/s, ~20 s).
RUN_PROBE_S = 2.0
MIN_PROBED_CHARS, MIN_PROBED_SECONDS = 2_000_000, 20.0


@dataclass(frozen=True)
class Shape:
    """A network shape the rule considers, with its parameter count for the vocabulary."""

    layers: int
    hidden: int
    parameters: int


@dataclass(frozen=True)
class Measurement:
    """What the probe found for one shape."""

    shape: Shape
    chars_per_s: float
    measured: bool  # False: extrapolated from a smaller shape (not worth training to know)


@dataclass
class AutoChoice:
    """What `--auto` chose and why; written to config.json and told to the user."""

    shape: Shape
    batch_size: int
    seq_len: int
    lr: float
    dropout: float
    precision: str
    chars_per_s: float
    train_seconds: float
    probe_seconds: float
    budget_seconds: float
    train_chars: int
    limit: str  # what stopped the model growing: time, data, largest (none did) or kept
    kept: list[str] = field(default_factory=list)  # settings the user gave, left alone
    measurements: list[Measurement] = field(default_factory=list)
    precision_speeds: dict[str, float] = field(default_factory=dict)  # chars/s, when probed
    bf16_failure: str | None = None  # why this CPU cannot train the cell in bf16

    @property
    def expected_chars(self) -> float:
        return self.chars_per_s * self.train_seconds

    def settings(self) -> dict[str, Any]:
        """The flat keys chosen, for `RunConfig.replace` (the kept ones left out)."""
        chosen = {
            "layers": self.shape.layers, "hidden": self.shape.hidden,
            "batch_size": self.batch_size, "seq_len": self.seq_len,
            "lr": self.lr, "dropout": self.dropout, "max_time": self.train_seconds,
            "precision": self.precision,
        }  # fmt: skip
        return {key: value for key, value in chosen.items() if key not in self.kept}

    def to_dict(self) -> dict[str, Any]:
        """The report in config.json."""
        return {
            "layers": self.shape.layers,
            "hidden": self.shape.hidden,
            "parameters": self.shape.parameters,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "lr": self.lr,
            "dropout": self.dropout,
            "precision": self.precision,
            "precision_probe": {k: round(v, 1) for k, v in self.precision_speeds.items()},
            "bf16_failure": self.bf16_failure,
            "limit": self.limit,
            "kept": sorted(self.kept),
            "chars_per_s": round(self.chars_per_s, 1),
            "expected_chars": int(self.expected_chars),
            "train_chars": self.train_chars,
            "budget_s": round(self.budget_seconds, 3),
            "probe_s": round(self.probe_seconds, 3),
            "train_s": round(self.train_seconds, 3),
            "probe": [
                {
                    "layers": m.shape.layers,
                    "hidden": m.shape.hidden,
                    "parameters": m.shape.parameters,
                    "chars_per_s": round(m.chars_per_s, 1),
                    "measured": m.measured,
                }
                for m in self.measurements
            ],
        }

    def notice(self) -> str:
        """One line for the user: what was chosen, and the figures that chose it."""
        s = self.shape
        per_parameter = self.expected_chars / s.parameters
        why = {
            "time": f"a larger model would see fewer than {CHARS_PER_PARAMETER:g} characters "
            "per parameter in the time",
            "data": f"a larger model would have more than {DATA_PARAMETER_RATIO:g} parameters "
            "per training character",
            "largest": "the largest shape tried",
            "kept": "the shape given",
        }[self.limit]
        if self.limit == "time" and per_parameter < CHARS_PER_PARAMETER:
            why = (
                f"the smallest shape tried: even it sees fewer than {CHARS_PER_PARAMETER:g} "
                "characters per parameter in the time"
            )
        kept = f"; kept {', '.join('--' + k.replace('_', '-') for k in sorted(self.kept))}"
        speeds = self.precision_speeds
        precision = ""
        if {"fp32", "bf16"} <= speeds.keys():  # on a CPU, where precision auto is fp32
            gain = speeds["bf16"] / speeds["fp32"]
            precision = (
                f", bf16 ({gain:.2f}x fp32's speed here)"
                if self.precision == "bf16"
                else f", fp32 (bf16 at {gain:.2f}x its speed here)"
            )
        elif self.bf16_failure is not None:
            precision = ", fp32 (this CPU cannot train the model in bf16)"
        return (
            f"auto: {s.layers} x {s.hidden} ({s.parameters:,} parameters), batch "
            f"{self.batch_size} x {self.seq_len}, lr {self.lr:.2g}, dropout {self.dropout:g}"
            f"{precision}: "
            f"the probe ({self.probe_seconds:.1f} s) trains it at {self.chars_per_s:,.0f} chars/s,"
            f" {self.expected_chars / 1e6:.3g}M characters in {self.train_seconds:.0f} s = "
            f"{per_parameter:.3g} per parameter, on {self.train_chars:,} training characters; "
            f"{why}" + (kept if self.kept else "")
        )


def candidate_shapes(model: ModelConfig, vocab_size: int, kept: Collection[str]) -> list[Shape]:
    """The shapes to consider, smallest first; a kept `layers` or `hidden` fixes that part."""
    if "layers" in kept and "hidden" in kept:
        pairs = [(model.layers, model.hidden)]
    elif "layers" in kept:
        pairs = [(model.layers, hidden) for hidden in HIDDEN_SIZES]
    elif "hidden" in kept:
        pairs = [(layers, model.hidden) for layers in LAYER_COUNTS]
    else:
        pairs = list(CANDIDATE_SHAPES)
    shapes = [
        Shape(layers, hidden, count_parameters(_with_shape(model, layers, hidden), vocab_size))
        for layers, hidden in pairs
    ]
    return sorted(shapes, key=lambda shape: shape.parameters)


def _with_shape(model: ModelConfig, layers: int, hidden: int) -> ModelConfig:
    return dataclasses.replace(model, layers=layers, hidden=hidden)


def choose_shape(
    shapes: Sequence[Shape],
    train_chars: int,
    seconds: float,
    speed: Callable[[Shape], float | None],
    flops: Callable[[Shape], float],
    first: int = 0,
) -> tuple[Shape, str, list[Measurement]]:
    """The largest shape that passes the data and time caps (else the smallest), what stopped
    the growth, and the measurements made.

    `speed(shape)` measures training chars/s, or returns None when the probe's time is spent.
    `first` is a guess at the answer's index: it is measured first, then the shapes below it
    while they fail, then the shapes above the largest that passed while they pass, so a good
    guess saves the probe's time on the small shapes. A shape whose speed, extrapolated from the
    chosen one by `flops` per character, is clearly too slow is not measured. A shape that
    fails by less than half is measured again, after the shape below it is measured again too,
    and each keeps its faster figure: load from other programs only ever slows a measurement,
    and a busy moment seldom spans both.
    """
    fastest: dict[Shape, float] = {}  # each shape's best measurement so far
    guessed: list[Measurement] = []

    def measure(shape: Shape) -> float | None:
        measured = speed(shape)
        if measured is None:
            return None
        fastest[shape] = max(measured, fastest.get(shape, 0.0))
        return fastest[shape]

    def needed(shape: Shape) -> float:
        return CHARS_PER_PARAMETER * shape.parameters / seconds  # chars/s to pass

    def report() -> list[Measurement]:
        measured = [Measurement(s, fastest[s], measured=True) for s in shapes if s in fastest]
        return measured + guessed

    # Down from the guess while the shapes fail (or break the data cap).
    chosen: Shape | None = None
    index = min(max(first, 0), len(shapes) - 1)
    while index > 0:
        shape = shapes[index]
        if shape.parameters <= DATA_PARAMETER_RATIO * train_chars:
            measured = measure(shape)
            if measured is None:  # the probe's time ran out going down: the smallest failed
                return shape, "time", report()
            if measured >= needed(shape):
                chosen = shape
                break
        index -= 1
    # Up from there while they pass.
    limit = "largest" if len(shapes) > 1 else "kept"
    for shape in shapes[index + 1 if chosen is not None else 0 :]:
        if chosen is not None:
            if shape.parameters > DATA_PARAMETER_RATIO * train_chars:
                limit = "data"
                break
            # Extrapolate first: do not train a shape that cannot pass.
            guess = fastest[chosen] * flops(chosen) / flops(shape)
            if shape not in fastest and guess < 0.5 * needed(shape):
                guessed.append(Measurement(shape, guess, measured=False))
                limit = "time"
                break
        measured = fastest.get(shape) or measure(shape)  # measured already on the way down?
        if measured is None:  # the probe's time ran out: keep the best so far
            if chosen is None:
                raise UsageError("--auto: the speed probe could not train a single step")
            limit = "time"
            break
        if chosen is not None and 0.5 * needed(shape) <= measured < needed(shape):
            measure(chosen)  # a second look at the boundary, interleaved
            measured = measure(shape) or measured
        passes = measured >= needed(shape)
        if chosen is not None and not passes:
            limit = "time"
            break
        chosen = shape  # the smallest shape is taken even when it does not pass
        if not passes:
            limit = "time" if len(shapes) > 1 else "kept"
            break
    assert chosen is not None
    return chosen, limit, report()


def first_guess(
    shapes: Sequence[Shape],
    anchor: Shape,
    anchor_speed: float,
    seconds: float,
    flops: Callable[[Shape], float],
) -> int:
    """Index of the largest shape that passes the time cap at the speed extrapolated by `flops`
    from one measured shape (0 when none does): where `choose_shape` starts."""
    passing = [
        i
        for i, shape in enumerate(shapes)
        if anchor_speed * flops(anchor) / flops(shape) * seconds
        >= CHARS_PER_PARAMETER * shape.parameters
    ]
    return max(passing, default=0)


def flops_per_char(model: ModelConfig, vocab_size: int) -> float:
    """Multiply-adds per character of a training step, up to a constant factor."""
    return float(recurrent_parameters(model) + model.hidden * vocab_size)


def batch_and_window(
    expected_chars: float, kept: Collection[str], batch_size: int, seq_len: int
) -> tuple[int, int]:
    """The window (then the batch) doubles from the tuned 32 x 32 while the run keeps
    `MIN_STEPS` optimiser steps; kept settings stay as given."""
    batch = batch_size if "batch_size" in kept else BASE_BATCH
    window = seq_len if "seq_len" in kept else BASE_WINDOW
    while "seq_len" not in kept and window < MAX_WINDOW:
        if expected_chars / (batch * window * 2) < MIN_STEPS:
            break
        window *= 2
    while "batch_size" not in kept and batch < MAX_BATCH:
        if window < MAX_WINDOW and "seq_len" not in kept:
            break
        if expected_chars / (batch * 2 * window) < MIN_STEPS:
            break
        batch *= 2
    return batch, window


def learning_rate(hidden: int) -> float:
    """`small`'s 6e-3 at 256 units, falling as 1/sqrt(width)."""
    return round(min(1e-2, max(1e-3, BASE_LR * math.sqrt(BASE_HIDDEN / hidden))), 5)


def dropout_for(parameters: int, train_chars: int, expected_chars: float) -> float:
    """`DROPOUT` when a model that can memorise the text (parameters over a quarter of its
    characters) will see it more than `DROPOUT_EPOCHS` times; else none."""
    epochs = expected_chars / max(1, train_chars)
    return DROPOUT if epochs > DROPOUT_EPOCHS and parameters * 4 > train_chars else 0.0


def probe_budget(max_time: float) -> float:
    """Seconds the probe may take out of a `max_time` budget."""
    return min(MAX_PROBE_S, max(MIN_PROBE_S, PROBE_SHARE * max_time))


class SpeedProbe:
    """Measures training chars/s of a shape with the real training step, on the corpus."""

    def __init__(
        self,
        config: RunConfig,
        vocab: Vocab,
        train_ids: np.ndarray,
        batch_size: int,
        seq_len: int,
        budget: float,
        device: torch.device,
        run_dir: Path,
    ) -> None:
        self.config, self.vocab, self.train_ids = config, vocab, train_ids
        self.batch_size, self.seq_len, self.device, self.run_dir = (
            batch_size, seq_len, device, run_dir,
        )  # fmt: skip
        # The first optimizer imports torch's compiler stack (seconds on a busy machine); a
        # normal run pays that before its clock starts, so the probe does too.
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
        self.deadline = time.perf_counter() + budget
        self.budget = budget

    def __call__(self, shape: Shape, precision: str | None = None) -> float | None:
        """Chars/s of a training step of `shape` (in `precision`, else the config's), or None
        when the probe's time is spent."""
        left = self.deadline - time.perf_counter()
        if left <= 0:
            return None
        # Never compiled: compiling every candidate would cost more than the probe itself.
        config = self.config.replace(
            layers=shape.layers, hidden=shape.hidden, dropout=0.0, compile=False,
            batch_size=self.batch_size, seq_len=self.seq_len,
            precision=precision or self.config.train.precision,
        )  # fmt: skip
        model = CharRNN(config.model, self.vocab.size)
        batches = StreamBatches(self.train_ids, self.batch_size, self.seq_len)
        # The trainer's own step (optimizer, clipping, autocast); it writes nothing here.
        trainer = Trainer(
            model, batches, self.train_ids[:2], config, self.vocab, self.run_dir, self.device
        )
        step, timed, started = 0, 0, 0.0
        minimum = max(MIN_SHAPE_S, min(left, self.budget * SHARE_PER_SHAPE))
        while True:
            inputs, targets = batches.batch(step)
            trainer.train_step(
                torch.from_numpy(inputs).to(self.device),
                torch.from_numpy(targets).to(self.device),
                config.train.lr,
            )
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            step += 1
            if step == WARMUP_STEPS:
                started = time.perf_counter()
            elif step > WARMUP_STEPS:
                timed += 1
                elapsed = time.perf_counter() - started
                if timed >= MIN_TIMED_STEPS and elapsed >= minimum:
                    return timed * batches.chars_per_step / elapsed
                if timed >= MIN_TIMED_STEPS and time.perf_counter() > self.deadline:
                    return timed * batches.chars_per_step / elapsed


def precision_shape(shapes: Sequence[Shape], vocab_size: int) -> Shape:
    """The candidate nearest in size to the `small` preset's 1 x 256: the precisions are
    compared on it (small shapes gain less from bf16: their steps are not matrix products)."""
    base = count_parameters(ModelConfig(layers=1, hidden=BASE_HIDDEN), vocab_size)
    return min(shapes, key=lambda shape: abs(math.log(shape.parameters / base)))


def choose_precision(
    shape: Shape,
    device: torch.device,
    given: str,
    kept: Collection[str],
    speed: Callable[[Shape, str], float | None],
    bf16_failure: str | None = None,
) -> tuple[str, dict[str, float]]:
    """On a CPU, bf16 autocast when the probe trains `shape` at least `BF16_GAIN` times faster
    with it than in fp32, else `given`; and the speeds measured. When the first look is not
    clear (the two within `BF16_CLEAR` of each other), both are measured again, interleaved,
    and each keeps its faster figure: a busy moment of another program slows one measurement.
    A kept `--precision`, or another device (where `auto` already means bf16 on CUDA), is left
    alone. On a CPU `auto` becomes the precision chosen (fp32 when the probe could not finish), so
    the run records what it trains in and a resume keeps it. With `bf16_failure` (why this
    CPU cannot train the cell in bf16) it is fp32, unmeasured."""
    if "precision" in kept or device.type != "cpu" or given != "auto":
        return given, {}
    if bf16_failure is not None:
        return "fp32", {}
    speeds: dict[str, float] = {}
    for _look in range(2):  # a second look only when the first is not clear
        for precision in ("fp32", "bf16"):
            measured = speed(shape, precision)
            if measured is None:  # the probe's time ran out: judge by the looks taken
                break
            speeds[precision] = max(measured, speeds.get(precision, 0.0))
        if measured is None or len(speeds) < 2:
            break
        ratio = speeds["bf16"] / speeds["fp32"]
        if not 1 / BF16_CLEAR < ratio < BF16_CLEAR:
            break
    if len(speeds) < 2:
        return "fp32", speeds
    return ("bf16" if speeds["bf16"] >= BF16_GAIN * speeds["fp32"] else "fp32"), speeds


def auto_size(
    config: RunConfig,
    vocab: Vocab,
    train_ids: np.ndarray,
    kept: Collection[str],
    run_dir: Path,
    threads: CpuThreads | None = None,
) -> tuple[RunConfig, AutoChoice]:
    """`config` with the auto keys the user did not keep chosen for its corpus, its
    `max_time` and this machine, and the report of the choice. The probe's time comes out of
    the budget: training gets `max_time` less the probe."""
    assert config.train.max_time is not None  # `validate` requires it with auto
    kept = sorted(set(kept) & AUTO_KEYS)
    budget = config.train.max_time
    train_chars = int(train_ids.shape[0])
    base_batch = config.train.batch_size if "batch_size" in kept else BASE_BATCH
    base_window = config.train.seq_len if "seq_len" in kept else BASE_WINDOW
    base_batch = max(1, min(base_batch, (train_chars - 1) // base_window))  # a tiny corpus
    base_window = max(1, min(base_window, (train_chars - 1) // base_batch))
    probe = SpeedProbe(
        config, vocab, train_ids, base_batch, base_window, probe_budget(budget),
        select_device(config.train.device), run_dir,
    )  # fmt: skip
    started = time.perf_counter()
    shapes = candidate_shapes(config.model, vocab.size, kept)
    if budget < 2 * probe.budget:
        raise UsageError(
            f"--auto needs a --max-time of at least {2 * probe.budget:g} s "
            f"(its speed probe takes up to {probe.budget:g} s)"
        )
    seconds_left = budget - probe.budget  # what training will have, near enough

    def timed(shape: Shape, precision: str) -> float | None:
        if threads is not None:
            threads.tick()
        return probe(shape, precision)

    def flops(shape: Shape) -> float:
        return flops_per_char(_with_shape(config.model, shape.layers, shape.hidden), vocab.size)

    anchor = precision_shape(shapes, vocab.size)
    on_cpu = probe.device.type == "cpu"
    bf16_failure = autocast_failure(config.model, torch.bfloat16, probe.device) if on_cpu else None
    precision, precision_speeds = choose_precision(
        anchor, probe.device, config.train.precision, kept, timed, bf16_failure
    )
    mode = "bf16" if precision == "bf16" else "fp32"
    first = (
        first_guess(shapes, anchor, precision_speeds[mode], seconds_left, flops)
        if mode in precision_speeds
        else 0
    )

    def speed(shape: Shape) -> float | None:
        return timed(shape, precision)

    shape, limit, measurements = choose_shape(
        shapes, train_chars, seconds_left, speed, flops, first
    )
    probe_seconds = time.perf_counter() - started
    train_seconds = max(budget - probe_seconds, budget / 2)  # a probe late on a busy machine
    chosen_speed = next(m.chars_per_s for m in measurements if m.shape == shape)
    expected = chosen_speed * train_seconds
    batch, window = batch_and_window(expected, kept, base_batch, base_window)
    choice = AutoChoice(
        shape=shape,
        batch_size=batch,
        seq_len=window,
        lr=config.train.lr if "lr" in kept else learning_rate(shape.hidden),
        dropout=(
            config.model.dropout
            if "dropout" in kept
            else dropout_for(shape.parameters, train_chars, expected)
        ),
        precision=precision,
        chars_per_s=chosen_speed,
        train_seconds=train_seconds,
        probe_seconds=probe_seconds,
        budget_seconds=budget,
        train_chars=train_chars,
        limit=limit,
        kept=list(kept),
        measurements=measurements,
        precision_speeds=precision_speeds,
        bf16_failure=bf16_failure,
    )
    return config.replace(**choice.settings()), choice


@dataclass(frozen=True)
class PrecisionChoice:
    """What `--precision auto` chose on a CPU for the run's own shape, and why."""

    precision: str  # fp32 or bf16
    speeds: dict[str, float]  # training chars/s in each precision; empty when not probed
    probe_seconds: float = 0.0
    bf16_failure: str | None = None  # why this CPU cannot train the cell in bf16, if it cannot

    @property
    def ratio(self) -> float | None:
        """bf16's speed over fp32's, when both were measured."""
        if {"fp32", "bf16"} <= self.speeds.keys():
            return self.speeds["bf16"] / self.speeds["fp32"]
        return None

    def to_dict(self) -> dict[str, Any]:
        """The record in config.json (`precision_probe`)."""
        ratio = self.ratio
        return {
            "precision": self.precision,
            "chars_per_s": {k: round(v, 1) for k, v in self.speeds.items()},
            "bf16_ratio": None if ratio is None else round(ratio, 3),
            "probe_s": round(self.probe_seconds, 3),
            "probed": bool(self.speeds),
            "bf16_failure": self.bf16_failure,
        }

    def notice(self) -> str | None:
        """One line for the user, or None when the run was too short to probe."""
        if self.bf16_failure is not None:
            cannot = f"this CPU cannot train the model in bf16: {self.bf16_failure}"
            return f"precision auto: fp32 ({cannot})"
        ratio = self.ratio
        if ratio is None:
            return None
        said = (
            f"bf16 ({ratio:.2f}x fp32's speed here)"
            if self.precision == "bf16"
            else f"fp32 (bf16 at {ratio:.2f}x its speed here)"
        )
        return f"precision auto: {said}, measured on this run's shape in {self.probe_seconds:.1f} s"


def worth_probing(train: TrainConfig, train_chars: int) -> bool:
    """True when a run is long enough for the precision probe's second to pay: at least
    `MIN_PROBED_SECONDS` of time limit and `MIN_PROBED_CHARS` characters of step limit."""
    if train.max_time is not None and train.max_time < MIN_PROBED_SECONDS:
        return False
    per_step = train.batch_size * train.seq_len
    steps = planned_steps(train, max(1, train_chars // per_step))
    return steps is None or steps * per_step >= MIN_PROBED_CHARS


def choose_run_precision(
    config: RunConfig,
    vocab: Vocab,
    train_ids: np.ndarray,
    run_dir: Path,
    threads: CpuThreads | None = None,
    speed: Callable[[Shape, str], float | None] | None = None,
) -> tuple[RunConfig, PrecisionChoice | None]:
    """`config` with `--precision auto` made fp32 or bf16 on a CPU (`choose_precision` on the
    run's own shape, batch and window), and the choice; unchanged with None elsewhere (another
    precision, another device, or --auto, whose probe chooses it). A run too short to pay for
    the probe is fp32. `speed(shape, precision)` stands in for the probe (a test's CPU)."""
    device = select_device(config.train.device)
    if config.train.precision != "auto" or device.type != "cpu" or config.train.auto:
        return config, None
    if speed is None and not worth_probing(config.train, int(train_ids.shape[0])):
        return config.replace(precision="fp32"), PrecisionChoice("fp32", {})
    # Tried for real before anything is timed: where bf16 fails (no oneDNN LSTM in it on a CPU
    # without AVX512) the run is fp32 at once and the probe's second is not spent.
    failure = autocast_failure(config.model, torch.bfloat16, device) if speed is None else None
    if failure is not None:
        return config.replace(precision="fp32"), PrecisionChoice("fp32", {}, 0.0, failure)
    if speed is None:
        # Made before the clock starts: it imports what the run's own optimizer imports anyway.
        probe = SpeedProbe(
            config, vocab, train_ids, config.train.batch_size, config.train.seq_len,
            RUN_PROBE_S, device, run_dir,
        )  # fmt: skip

        def speed(shape: Shape, precision: str) -> float | None:
            if threads is not None:
                threads.tick()
            return probe(shape, precision)

    started = time.perf_counter()
    model = config.model
    shape = Shape(model.layers, model.hidden, count_parameters(model, vocab.size))
    precision, speeds = choose_precision(shape, device, "auto", (), speed)
    choice = PrecisionChoice(precision, speeds, time.perf_counter() - started)
    return config.replace(precision=precision), choice

"""`--auto`: choose the network, batch and window for a corpus, a time budget and this machine.

The rule, after char-rnn's advice and the compute-optimal studies of language models:
- **precision**: on a CPU, by rule (`precision_by_rule`, the same for `--precision auto`
  without `--auto`): bf16 autocast where the CPU has its own bf16 instructions (AVX512-BF16 or
  AMX) and the shape is one a measured table found at least `BF16_GAIN` times faster with it;
  nothing is timed, so the same command on the same machine makes the same choice. Elsewhere
  the run's own `--precision` stands.
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
    count_parameters,
    recurrent_parameters,
)
from charrnn.errors import UsageError
from charrnn.model.network import CharRNN, autocast_failure
from charrnn.system.device import CpuThreads, cpu_bf16_support, select_device
from charrnn.text.corpus import StreamBatches, Vocab
from charrnn.training.trainer import Trainer

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
WARMUP_STEPS, MIN_TIMED_STEPS = 2, 2


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
    precision_choice: PrecisionChoice | None = None  # on a CPU under precision auto: why

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
            "precision_rule": None
            if self.precision_choice is None
            else self.precision_choice.to_dict(),
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
        choice = self.precision_choice
        precision = "" if choice is None else f", {choice.precision} ({choice.reason})"
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


# `--precision auto` on a CPU, by rule: bf16 autocast only on a CPU with its own bf16
# instructions, and only where a training step's products are large enough for bf16 to make it
# at least `BF16_GAIN` times faster: hidden x batch (the rows and width of each recurrent
# product) at least this, per cell. Read from `python -m benchmarks.run --only precision` on a
# Zen 4 with AVX512-BF16 (benchmarks/RESULTS.md, "--precision auto by rule"; window 32, one
# thread; the thresholds from three quiet passes): an LSTM gained 1.2-1.8x from 1 x 128 at batch
# 32 and 1 x 256 at batch 8 up; a GRU from 256 units at 32 (1.20-1.32x; 128: 0.96x); an RNN
# from 256 units (1.15-1.24x; 128: 0.86x); a minGRU from 256 units (1.25-1.47x; 128: 0.98-1.11x,
# too near 1.1 to count). Smaller than measured: fp32.
BF16_MIN_WORK = {"lstm": 256 * 8, "gru": 256 * 32, "rnn": 256 * 32, "mingru": 256 * 32}


def precision_by_rule(
    model: ModelConfig, batch_size: int, bf16_support: str | None
) -> tuple[str, str]:
    """fp32 or bf16 for training `model` at `batch_size` on a CPU whose own bf16 instructions
    are `bf16_support` (system/device.py `cpu_bf16_support`), and why, in a few words. The same
    answer every time for the same CPU and shape: nothing is timed."""
    if bf16_support is None:
        return "fp32", "this CPU has no bf16 instructions"
    work, least = model.hidden * batch_size, BF16_MIN_WORK[model.cell]
    shape = f"{model.cell} {model.hidden} units x batch {batch_size}"
    if work < least:
        return "fp32", f"{bf16_support}, but a {shape} is below the {least:,} where bf16 pays"
    return "bf16", f"{bf16_support} and a {shape}"


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
    precision, precision_choice = config.train.precision, None
    if "precision" not in kept and precision == "auto" and probe.device.type == "cpu":
        anchor_model = _with_shape(config.model, anchor.layers, anchor.hidden)
        precision_choice = precision_by_rule_here(anchor_model, base_batch, probe.device)
        precision = precision_choice.precision
    anchor_speed = timed(anchor, precision)
    first = (
        first_guess(shapes, anchor, anchor_speed, seconds_left, flops)
        if anchor_speed is not None
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
        precision_choice=precision_choice,
    )
    return config.replace(**choice.settings()), choice


@dataclass(frozen=True)
class PrecisionChoice:
    """What `--precision auto` chose on a CPU, and why: by `precision_by_rule`, nothing timed."""

    precision: str  # fp32 or bf16
    reason: str
    bf16_support: str | None = None  # the CPU's own bf16 instructions, if any
    bf16_failure: str | None = None  # why this CPU cannot train the cell in bf16, if it cannot

    def to_dict(self) -> dict[str, Any]:
        """The record in config.json (`precision_rule`)."""
        return {
            "precision": self.precision,
            "reason": self.reason,
            "bf16_instructions": self.bf16_support,
            "bf16_failure": self.bf16_failure,
            "min_hidden_x_batch": BF16_MIN_WORK,
        }

    def notice(self) -> str | None:
        """One line for the user where the run trains in bf16, or would have but cannot here;
        None for plain fp32 (config.json says why all the same)."""
        if self.precision == "fp32" and self.bf16_failure is None:
            return None
        return f"precision auto: {self.precision} ({self.reason})"


def precision_by_rule_here(
    model: ModelConfig,
    batch_size: int,
    device: torch.device,
    bf16_support: Callable[[], str | None] = cpu_bf16_support,
) -> PrecisionChoice:
    """`precision_by_rule` for this CPU; where it says bf16 but the CPU cannot train the cell in
    it at all (one tiny step tried for real), fp32 and why."""
    support = bf16_support()
    precision, reason = precision_by_rule(model, batch_size, support)
    if precision == "bf16":
        failure = autocast_failure(model, torch.bfloat16, device)
        if failure is not None:
            reason = f"this CPU cannot train the {model.cell} in bf16: {failure}"
            return PrecisionChoice("fp32", reason, support, failure)
    return PrecisionChoice(precision, reason, support)


def choose_run_precision(
    config: RunConfig, bf16_support: Callable[[], str | None] = cpu_bf16_support
) -> tuple[RunConfig, PrecisionChoice | None]:
    """`config` with `--precision auto` made fp32 or bf16 on a CPU by `precision_by_rule` for
    the run's own cell, width and batch, and the choice; unchanged with None elsewhere (another
    precision, another device, or --auto, which applies the same rule). `bf16_support` stands
    in for this CPU's instructions (a test's other CPU)."""
    device = select_device(config.train.device)
    if config.train.precision != "auto" or device.type != "cpu" or config.train.auto:
        return config, None
    choice = precision_by_rule_here(config.model, config.train.batch_size, device, bf16_support)
    return config.replace(precision=choice.precision), choice

"""precision: bf16 autocast against fp32 training on this CPU, per cell and shape: the table
`--precision auto`'s rule (training/autosize.py `precision_by_rule`) was read from.

Each shape trains with the Trainer's own step (the `--auto` probe's `SpeedProbe`), fp32 and bf16
alternately, best of two each; the row's ratio is bf16 / fp32 and its target what the rule
chooses on this CPU, checked against the measured ratio (bf16 where it is at least `BF16_GAIN`).

    python -m benchmarks.run --only precision
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.common import Bench, Row, best_alternating, log, skipped_bf16
from benchmarks.corpus import probed_train_speed
from charrnn.config import ModelConfig
from charrnn.system.device import cpu_bf16_support
from charrnn.training.autosize import BF16_GAIN, precision_by_rule

# (cell, layers, hidden, batch), window 32 (the default), 1 thread.
SHAPES = (
    *(
        (cell, 1, hidden, 32)
        for cell in ("lstm", "gru", "rnn", "mingru")
        for hidden in (128, 256, 512)
    ),
    ("lstm", 2, 512, 32),
    ("lstm", 1, 256, 8),
    ("lstm", 1, 256, 128),
    ("gru", 1, 256, 128),
)


@dataclass(frozen=True)
class Sizes:
    shapes: tuple[tuple[str, int, int, int], ...]
    probe_s: float  # seconds per speed measurement


FULL = Sizes(shapes=SHAPES, probe_s=0.6)
QUICK = Sizes(shapes=(("lstm", 1, 32, 8),), probe_s=0.2)
WINDOW = 32


def train_speed(bench: Bench, shape: tuple[str, int, int, int], precision: str) -> float:
    """Trainer chars/s of (cell, layers, hidden, batch) in `precision`, by the `--auto` probe."""
    cell, layers, hidden, batch = shape
    probe_s = bench.pick(FULL, QUICK).probe_s
    return probed_train_speed(
        bench, cell, (layers, hidden, batch, WINDOW), precision, probe_s, "precision"
    )


def measure(bench: Bench) -> None:
    """Rows: bf16 / fp32 training speed per shape, and whether the rule chose right."""
    if skipped_bf16(bench, "precision", "bf16 / fp32 training"):
        return
    support = cpu_bf16_support()
    for shape in bench.pick(FULL, QUICK).shapes:
        cell, layers, hidden, batch = shape
        log(f"precision: {cell} {layers}x{hidden} B{batch}")
        fp32, bf16 = best_alternating(
            lambda shape=shape: train_speed(bench, shape, "fp32"),
            lambda shape=shape: train_speed(bench, shape, "bf16"),
        )
        ratio = bf16 / fp32 if fp32 else None
        model = ModelConfig(cell=cell, layers=layers, hidden=hidden)
        chosen, _ = precision_by_rule(model, batch, support)
        bench.add(
            Row(
                "precision",
                f"bf16 / fp32 training, {cell} {layers}x{hidden} B{batch} T{WINDOW} (chars/s)",
                f"{bf16:,.0f}",
                f"fp32 {fp32:,.0f}",
                ratio,
                f"rule: {chosen}",
                None if ratio is None else (ratio >= BF16_GAIN) == (chosen == "bf16"),
                numbers={"fp32": fp32, "bf16": bf16},
            )
        )

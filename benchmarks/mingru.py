"""mingru: the minGRU's scan choice, and its training speed against the LSTM (fp32 and bf16).

Rows:
- scan: the recurrence h_t = a_t h_(t-1) + b_t, forward and backward, at batch 32 x 256 units:
  the hand-written loop (`network.linear_recurrence`, what `MinGRU` uses) against autograd's
  loop and a parallel Hillis-Steele scan (`inspection.linear_scan`), at windows of 64 and 128.
- speed: Trainer chars/s of a minGRU against an LSTM of the same shape, measured alternately by
  the `--auto` probe's method (`SpeedProbe`), in fp32 and with bf16 autocast; each figure also
  as GFLOP/s against the fp32 and the bf16 matmul peaks (benchmarks/matmul.py).

Quality at equal wall clock is a long, quiet-machine measurement: `QUALITY_COMMANDS` are the
exact runs (90 s and 10 minutes, three seeds, alternated), for `python -m benchmarks.mingru
--commands` to print.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from benchmarks.common import Bench, Row, best_alternating, log, skipped_bf16
from benchmarks.corpus import probed_train_speed, training_data
from benchmarks.matmul import bf16_peak_gflops, peak_gflops
from charrnn.analysis.inspection import linear_scan
from charrnn.config import RunConfig
from charrnn.model.network import linear_recurrence


@dataclass(frozen=True)
class Sizes:
    windows: tuple[int, ...]  # scan lengths
    shapes: tuple[tuple[int, int, int, int], ...]  # (layers, hidden, batch, window)
    probe_s: float  # seconds per speed measurement


FULL = Sizes(
    windows=(64, 128),
    shapes=((1, 256, 32, 32), (1, 256, 32, 128), (2, 512, 32, 64)),
    probe_s=3.0,
)
QUICK = Sizes(windows=(16,), shapes=((1, 32, 8, 16),), probe_s=0.3)


def autograd_loop(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The recurrence as autograd sees a plain loop: one graph node per step."""
    outputs = []
    for t in range(a.shape[0]):
        h = a[t] * h + b[t]
        outputs.append(h)
    return torch.stack(outputs)


def scan_rate(scan: Callable[..., torch.Tensor], window: int, repeats: int = 5) -> float:
    """Windows per second, forward and backward, of `scan` at batch 32 x 256 (best of repeats)."""
    generator = torch.Generator().manual_seed(0)
    a0 = torch.rand(window, 32, 256, generator=generator)
    b0, h0 = torch.randn(window, 32, 256, generator=generator), torch.randn(32, 256)
    best = float("inf")
    for _ in range(repeats):
        a, b, h = (t.clone().requires_grad_() for t in (a0, b0, h0))
        start = time.perf_counter()
        scan(a, b, h).sum().backward()
        best = min(best, time.perf_counter() - start)
    return 1.0 / best


def train_flops_per_char(cell: str, layers: int, hidden: int, embed: int, vocab: int) -> float:
    """2 x multiply-adds x 3 (forward, and backward at twice it) per character."""
    total = 0
    for layer in range(layers):
        inputs = embed if layer == 0 else hidden
        total += 2 * hidden * inputs if cell == "mingru" else 4 * hidden * (inputs + hidden)
    return 3.0 * 2.0 * (total + hidden * vocab)


def train_speed(bench: Bench, cell: str, shape: tuple[int, int, int, int], precision: str) -> float:
    """Trainer chars/s of `cell` at (layers, hidden, batch, window), by the `--auto` probe."""
    probe_s = bench.pick(FULL, QUICK).probe_s
    return probed_train_speed(bench, cell, shape, precision, probe_s, "mingru")


def measure(bench: Bench) -> None:
    """Rows: the scans' rates, then minGRU against LSTM training speed per shape and precision."""
    sizes = bench.pick(FULL, QUICK)
    for window in sizes.windows:
        log(f"mingru scan: window {window}")
        hand = scan_rate(linear_recurrence, window)
        for name, scan in (("autograd loop", autograd_loop), ("Hillis-Steele scan", linear_scan)):
            other = scan_rate(scan, window)
            bench.add(Row(
                "mingru", f"scan T={window} B=32 H=256, fwd+bwd (windows/s)", f"{hand:,.0f}",
                f"{other:,.0f} ({name})", hand / other,
            ))  # fmt: skip
    vocab, ids = training_data(bench)
    peaks = {"fp32": peak_gflops(bench), "bf16": bf16_peak_gflops(bench)}
    for layers, hidden, batch, window in sizes.shapes:
        for precision in ("fp32", "bf16"):
            figure = f"{layers}x{hidden} B={batch} T={window} {precision}: mingru vs lstm"
            if precision == "bf16" and skipped_bf16(bench, "mingru", figure):
                continue
            log(f"mingru speed {layers}x{hidden} B={batch} T={window} {precision}")
            speeds = dict(zip(("lstm", "mingru"), best_alternating(*(
                partial(train_speed, bench, cell, (layers, hidden, batch, window), precision)
                for cell in ("lstm", "mingru")
            )), strict=True))  # fmt: skip
            embed = RunConfig().model.embed
            share = {
                cell: speeds[cell]
                * train_flops_per_char(cell, layers, hidden, embed, vocab.size)
                / 1e9
                for cell in speeds
            }
            peak_note = f"fp32 peak {peaks['fp32']:.0f}, bf16 peak {peaks['bf16']:.0f} GFLOP/s"
            bench.add(Row(
                "mingru",
                f"{layers}x{hidden} B={batch} T={window} {precision}: mingru vs lstm (chars/s)",
                f"{speeds['mingru']:,.0f}", f"{speeds['lstm']:,.0f} (lstm)",
                speeds["mingru"] / speeds["lstm"],
                numbers={**speeds, **{f"{c}_gflops": g for c, g in share.items()}, **peaks},
            ))  # fmt: skip
            for cell in ("lstm", "mingru"):
                bench.add(Row(
                    "mingru",
                    f"{cell} {layers}x{hidden} T={window} {precision}: GFLOP/s / fp32 peak"
                    + (" (and / bf16 peak)" if precision == "bf16" else ""),
                    f"{share[cell]:.1f}", peak_note, share[cell] / peaks["fp32"],
                    target=f"{share[cell] / peaks['bf16']:.2f} of bf16 peak"
                    if precision == "bf16" else "",
                ))  # fmt: skip


# The quality-for-time runs, for a quiet machine: each pair alternated, three seeds.
SEEDS = (1, 2, 3)
QUALITY_COMMANDS = [
    f"charrnn train /work/shared/data/tinyshakespeare.txt --max-time {budget} --seed {seed} "
    f"--cell {cell} {extra}--out runs/q-{name}-{budget}-{seed} -q"
    for budget in ("90s", "10m")
    for seed in SEEDS
    for name, cell, extra in (
        ("lstm", "lstm", ""),
        ("mingru", "mingru", ""),
        ("mingru-2x512", "mingru", "--layers 2 --hidden 512 "),
    )
]


if __name__ == "__main__":
    if "--commands" in sys.argv:
        print("\n".join(QUALITY_COMMANDS))

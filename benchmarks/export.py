"""export: each `charrnn export` of one trained model against its best.pt, measured in one run:
file size, one-stream sampling speed and validation bits/char; and the int8 matrix-vector kernel
PyTorch ships (`torch._weight_int8pack_mm`) against float32 at the model's shapes.

The model is the `quality` section's 90 s default run when that section ran first, the run in
$CHARRNN_BENCH_RUN when set, else one trained here (90 s; --quick: 3 s on 30k characters).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from benchmarks import quality
from benchmarks.common import Bench, Row, best_alternating, charrnn_args, log, run_child
from charrnn.commands import eval_command, export_command, sample_command
from charrnn.config import SampleConfig
from charrnn.model.quantize import quantize_rows

SIZE_TARGET = 0.5  # an int8 export under half the size of best.pt
BPC_TARGET = 0.05  # ... with bits/char within 0.05 of it
EXPORTS = {  # name: (dtype, quantize)
    "float16": ("float16", None),
    "bfloat16": ("bfloat16", None),
    "int8": ("float32", "int8"),
}


@dataclass(frozen=True)
class Sizes:
    sample_chars: int  # one stream, per timing
    kernel_calls: int  # matrix-vector products per timing
    repeats: int  # timings of each, alternating; the best counts


FULL = Sizes(sample_chars=3000, kernel_calls=2000, repeats=2)
QUICK = Sizes(sample_chars=100, kernel_calls=50, repeats=1)


def trained_run(bench: Bench) -> Path:
    """A default-preset run on tiny shakespeare: the quality section's, $CHARRNN_BENCH_RUN's or
    one trained now."""
    given = os.environ.get("CHARRNN_BENCH_RUN")
    if given:
        return Path(given)
    if "quality_run" not in bench.cache:
        sizes = bench.pick(quality.FULL, quality.QUICK)
        folder = bench.scratch("trained")
        corpus = quality.quality_corpus(sizes.corpus_chars, folder)
        log(f"training the default preset for {sizes.time} on {corpus.name}")
        args = ["train", str(corpus), "--max-time", sizes.time, "--out", str(folder / "run"), "-q"]
        run_child(charrnn_args(*args))
        bench.cache["quality_run"] = folder / "run"
    return bench.cache["quality_run"]


def sampling_speed(checkpoint: Path, chars: int) -> float:
    """One-stream chars/s of `charrnn sample` on one thread (load excluded: best of a run)."""
    config = SampleConfig(length=chars, seed=0)
    started = time.perf_counter()
    list(sample_command(checkpoint, "", config, "cpu", threads=1))
    return chars / (time.perf_counter() - started)


def kernel_speed(product, calls: int) -> float:
    """Matrix-vector products per second."""
    started = time.perf_counter()
    for _ in range(calls):
        product()
    return calls / (time.perf_counter() - started)


def measure_kernel(bench: Bench, rows: int, columns: int) -> None:
    """Row: torch._weight_int8pack_mm (int8 weights, bf16 input) against float32 addmm."""
    sizes = bench.pick(FULL, QUICK)
    torch.manual_seed(0)
    weight, x = torch.randn(rows, columns), torch.randn(1, columns)
    values, scales = quantize_rows(weight)
    weight_t, x_bf16, scales_bf16 = weight.t().contiguous(), x.bfloat16(), scales.bfloat16()
    out = torch.empty(1, rows)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # one-stream sampling runs on one thread
    try:
        fp32, int8 = best_alternating(
            partial(kernel_speed, partial(torch.mm, x, weight_t, out=out), sizes.kernel_calls),
            partial(
                kernel_speed,
                partial(torch._weight_int8pack_mm, x_bf16, values, scales_bf16),
                sizes.kernel_calls,
            ),
            repeats=sizes.repeats,
        )
    finally:
        torch.set_num_threads(previous)
    bench.add(
        Row(
            "export",
            f"int8 kernel x({columns}) @ W({rows}x{columns}), 1 thread (products/s)",
            f"{int8:,.0f}",
            f"{fp32:,.0f} (float32 mm)",
            int8 / fp32,
            "> 1 to use it in Stepper",
            None,
            {"int8_per_s": int8, "fp32_per_s": fp32},
        )
    )


def measure(bench: Bench) -> None:
    """Rows: size, sampling speed and val bits/char of each export against best.pt; the kernel."""
    sizes = bench.pick(FULL, QUICK)
    run = trained_run(bench)
    best = run / "best.pt"
    folder = bench.scratch("export")
    original_bytes = best.stat().st_size
    original = eval_command(best, [], device_name="cpu", threads=1)
    log(f"export: {best} ({original_bytes:,} bytes, val bpc {original.bpc:.4f})")
    for name, (dtype, quantize) in EXPORTS.items():
        path = folder / f"{name}.pt"
        result = export_command(best, path, dtype, quantize)
        scored = eval_command(path, [], device_name="cpu", threads=1)
        speed, speed_original = best_alternating(
            partial(sampling_speed, path, sizes.sample_chars),
            partial(sampling_speed, best, sizes.sample_chars),
            repeats=sizes.repeats,
        )
        judged = name == "int8"
        size_ratio = result.output_bytes / original_bytes
        numbers = {
            "bytes": result.output_bytes,
            "original_bytes": original_bytes,
            "bpc": scored.bpc,
            "original_bpc": original.bpc,
            "chars_per_s": speed,
            "original_chars_per_s": speed_original,
        }
        bench.add(
            Row(
                "export",
                f"{name} export: file size (bytes)",
                f"{result.output_bytes:,}",
                f"{original_bytes:,} (best.pt)",
                size_ratio,
                f"< {SIZE_TARGET}" if judged else "",
                size_ratio < SIZE_TARGET if judged else None,
                numbers,
            )
        )
        bench.add(
            Row(
                "export",
                f"{name} export: val bits/char ({scored.chars:,} chars)",
                f"{scored.bpc:.4f}",
                f"{original.bpc:.4f} (best.pt)",
                scored.bpc / original.bpc,
                f"within {BPC_TARGET} bpc" if judged else "",
                abs(scored.bpc - original.bpc) <= BPC_TARGET if judged else None,
                numbers,
            )
        )
        bench.add(
            Row(
                "export",
                f"{name} export: sampling, 1 stream, 1 thread (chars/s)",
                f"{speed:,.0f}",
                f"{speed_original:,.0f} (best.pt)",
                speed / speed_original,
                numbers=numbers,
            )
        )
    hidden = int(torch.load(best, weights_only=True)["config"]["model"]["hidden"])
    measure_kernel(bench, 4 * hidden, hidden)  # an LSTM layer's hidden-to-hidden product
    measure_kernel(bench, 4 * 1024, 1024)  # the `large` preset's

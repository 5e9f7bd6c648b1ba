"""matmul: this machine's fp32 matmul rate, and its peak, which `train` divides by."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import torch

from benchmarks.common import Bench, Row, best_of


@dataclass(frozen=True)
class Sizes:
    n: tuple[int, ...]  # square matrix sizes
    seconds: float  # length of one timed loop
    loops: int  # best of this many loops


FULL = Sizes(n=(1024, 2048), seconds=1.0, loops=3)
QUICK = Sizes(n=(256, 512), seconds=0.1, loops=2)


def matmul_gflops(n: int, seconds: float, dtype: torch.dtype = torch.float32) -> float:
    """Square matmul rate (fp32, or `dtype`) over one loop of about `seconds`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: thread pool and caches
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        torch.mm(a, b, out=out)
        count += 1
    return 2.0 * n**3 * count / elapsed / 1e9


def matmul_rates(bench: Bench) -> dict[int, float]:
    """Best-of-loops GFLOP/s for each matrix size (measured once per run)."""
    if "matmul" not in bench.cache:
        sizes = bench.pick(FULL, QUICK)
        bench.cache["matmul"] = {
            n: best_of(sizes.loops, partial(matmul_gflops, n, sizes.seconds)) for n in sizes.n
        }
    return bench.cache["matmul"]


def peak_gflops(bench: Bench) -> float:
    """This machine's fp32 matmul peak: the best rate over the sizes tried."""
    return max(matmul_rates(bench).values())


def bf16_peak_gflops(bench: Bench) -> float:
    """This machine's bf16 matmul peak (what bf16 autocast's products can reach), measured once
    per run like the fp32 one."""
    if "matmul_bf16" not in bench.cache:
        sizes = bench.pick(FULL, QUICK)
        bench.cache["matmul_bf16"] = max(
            best_of(sizes.loops, partial(matmul_gflops, n, sizes.seconds, torch.bfloat16))
            for n in sizes.n
        )
    return bench.cache["matmul_bf16"]


def measure(bench: Bench) -> None:
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

"""prepare: `charrnn prepare` on a large mixed-script corpus (time, peak RSS, cache hit) against
the same command on a 1 KB file, each in its own measured process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Bench, ChildRun, Row, charrnn_args, last_json_line, log, run_child
from benchmarks.corpus import corpus_text

MBPS_TARGET = 50.0  # MB/s net of start-up
RSS_TARGET = 2.0  # extra peak RSS per corpus byte
CACHED_TARGET = 1.0  # seconds a cached run may add to start-up


@dataclass(frozen=True)
class Sizes:
    corpus_bytes: int  # size of the generated corpus
    repeats: int  # best of this many runs of each measurement


FULL = Sizes(corpus_bytes=100_000_000, repeats=2)
QUICK = Sizes(corpus_bytes=2_000_000, repeats=1)


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


def prepare_run(corpus: Path, cache_dir: Path) -> tuple[ChildRun, dict[str, Any]]:
    """`charrnn prepare CORPUS --json` measured, and its JSON answer."""
    run = run_child(charrnn_args("prepare", str(corpus), "--cache-dir", str(cache_dir), "--json"))
    return run, last_json_line(run.stdout)


def fastest_prepare(
    corpus: Path, cache_dirs: list[Path], cached: bool
) -> tuple[ChildRun, dict[str, Any]]:
    """The fastest of one `prepare` run per cache folder; check each hit or missed the cache."""
    runs = [prepare_run(corpus, cache_dir) for cache_dir in cache_dirs]
    for _, info in runs:
        if info["cached"] != cached:
            raise RuntimeError(f"prepare {corpus.name}: expected cached={cached}, got {info}")
    return min(runs, key=lambda pair: pair[0].seconds)


def measure(bench: Bench) -> None:
    """Rows: `charrnn prepare` time, peak RSS and cache-hit time against a 1 KB corpus' run."""
    sizes = bench.pick(FULL, QUICK)
    folder = bench.scratch("prepare")
    small, big = folder / "small.txt", folder / "big.txt"
    small.write_text(corpus_text()[:1000], encoding="utf-8")
    log(f"prepare: writing a {sizes.corpus_bytes / 1e6:.0f} MB corpus")
    size = write_mixed_corpus(big, sizes.corpus_bytes)
    # The fastest of `repeats` runs each: start-up (imports, ~0.3 s) is noisy on a shared machine.
    repeats = range(sizes.repeats)
    start_up, _ = fastest_prepare(small, [folder / f"small-{i}" for i in repeats], cached=False)
    log(f"prepare: encoding the large corpus {len(repeats)}x, then {len(repeats)}x from the cache")
    fresh = [folder / f"big-{i}" for i in repeats]
    cold, info = fastest_prepare(big, fresh, cached=False)
    warm, _ = fastest_prepare(big, fresh, cached=True)
    add_rows(bench, size, start_up, cold, warm, info)


def add_rows(
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
            f">= {MBPS_TARGET:.0f} MB/s",
            None if rate is None else rate >= MBPS_TARGET,
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
            f"extra <= {RSS_TARGET:.0f}x",
            extra <= RSS_TARGET,
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
            f"< {CACHED_TARGET:.0f} s",
            cached < CACHED_TARGET,
            {"cached_seconds": warm.seconds},
        )
    )

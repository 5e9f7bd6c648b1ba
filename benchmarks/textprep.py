"""textprep: what each preprocessing option costs `charrnn prepare`, against the same corpus
prepared with every option off just before, each in its own measured process (the mixed-script
corpus of the `prepare` section, whose rows check options off against the targets)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Bench, ChildRun, Row, charrnn_args, last_json_line, log, run_child
from benchmarks.prepare import MBPS_TARGET, RSS_TARGET, write_mixed_corpus


@dataclass(frozen=True)
class Sizes:
    corpus_bytes: int
    options: tuple[tuple[str, ...], ...]  # the flag sets measured, each against options off


ALL_OPTIONS = ("--lowercase", "--ascii", "--normalize", "nfkc", "--strip-control")
FULL = Sizes(
    corpus_bytes=100_000_000,
    options=(
        ("--lowercase",), ("--ascii",), ("--normalize", "nfc"), ("--normalize", "nfkc"),
        ("--strip-control",), ("--min-char-count", "5"), (*ALL_OPTIONS, "--min-char-count", "5"),
    ),
)  # fmt: skip
QUICK = Sizes(corpus_bytes=200_000, options=((*ALL_OPTIONS, "--min-char-count", "5"),))


def prepare(corpus: Path, cache_dir: Path, flags: tuple[str, ...]) -> tuple[ChildRun, dict]:
    """`charrnn prepare CORPUS FLAGS --json` into a fresh cache, measured."""
    args = charrnn_args("prepare", str(corpus), *flags, "--cache-dir", str(cache_dir), "--json")
    run = run_child(args)
    return run, last_json_line(run.stdout)


def measure(bench: Bench) -> None:
    """One row per option set: wall time and MB/s against options off, and peak RSS."""
    sizes = bench.pick(FULL, QUICK)
    folder = bench.scratch("textprep")
    corpus = folder / "mixed.txt"
    log(f"textprep: writing a {sizes.corpus_bytes / 1e6:.0f} MB corpus")
    size = write_mixed_corpus(corpus, sizes.corpus_bytes)
    tiny = folder / "tiny.txt"
    tiny.write_text("start-up\n", "utf-8")
    start_up, _ = prepare(tiny, folder / "tiny", ()) if not bench.quick else (None, None)
    mb = size / 1e6
    for index, flags in enumerate(sizes.options):
        # Options off just before each option set: on a shared machine the load drifts.
        log(f"textprep: prepare with options off, then {' '.join(flags)}")
        off, off_info = prepare(corpus, folder / f"off-{index}", ())
        on, info = prepare(corpus, folder / f"on-{index}", flags)
        # Quick mode's corpus vanishes in start-up noise: no rate, no start-up run.
        base = start_up or on
        net = on.seconds - base.seconds
        rate = mb / net if net > 0 else None
        extra = (on.max_rss_kib - base.max_rss_kib) * 1024 / size
        bench.add(
            Row(
                "textprep",
                f"{mb:.0f} MB `prepare {' '.join(flags)}`: wall time; MB/s net of start-up; "
                f"extra RSS per byte; vocab {off_info['vocab_size']} -> {info['vocab_size']}",
                f"{on.seconds:.2f} s; "
                + (f"{rate:.1f} MB/s" if rate else "n/a")
                + f"; {extra:.2f}x",
                f"options off {off.seconds:.2f} s",
                on.seconds / off.seconds,
                f">= {MBPS_TARGET:.0f} MB/s, extra RSS <= {RSS_TARGET:.0f}x",
                None
                if rate is None or bench.quick
                else rate >= MBPS_TARGET and extra <= RSS_TARGET,
                {
                    "seconds": on.seconds,
                    "off_seconds": off.seconds,
                    "start_up_seconds": base.seconds,
                    "max_rss_kib": on.max_rss_kib,
                    "unknown_share": info["unknown_share"],
                    "ascii_dropped": info["ascii_dropped"],
                },
            )  # fmt: skip
        )

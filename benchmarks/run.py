"""charrnn benchmarks: one markdown table of ratios against baselines measured in the same run.

    python -m benchmarks.run [--quick] [--json PATH] [--only SECTION,...]

Absolute times on a shared machine mean little, so every figure is set beside a baseline measured
a moment earlier on the same machine: the matmul peak, a hand-written PyTorch loop, the usual
way of sampling, the training speed, a start-up run. Progress goes to stderr and the table to
stdout, ready to paste into benchmarks/RESULTS.md. See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import Bench, Row, log, machine, render
from charrnn.system.device import use_cpu_threads

# The sections, in the order they run: each is the module benchmarks/NAME.py, whose
# `measure(bench)` adds its rows. `train` reuses the matmul peak; `eval` reuses a train figure;
# `export` and `distill` reuse the model `quality` trains.
SECTIONS = (
    "matmul", "train", "sample", "eval", "prepare", "quality", "contention", "evalshare", "preview",
    "distributed", "inspection", "export", "distill", "textprep", "dynamic",
    "autosize", "page", "mingru", "serve", "precision",
)  # fmt: skip


def run_sections(bench: Bench, names: list[str]) -> bool:
    """Run the named sections in order; a failing one becomes an error row. True if none failed."""
    ok = True
    for name in names:
        log(f"section {name}")
        started = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{name}").measure(bench)
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
    use_cpu_threads(0)  # the threads charrnn's own commands take: torch's, capped by a CPU quota
    info = machine()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as workdir:
        bench = Bench(args.quick, Path(workdir))
        ok = run_sections(bench, args.only)
    seconds = time.perf_counter() - started
    print(render(bench.rows, args.quick, info, seconds))
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

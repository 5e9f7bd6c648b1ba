"""inspection: `charrnn inspect --find` streaming a long text: speed against scoring it on one
stream as `eval` does (the same forward pass without the per-layer runs, gates, cell states and
correlations), and peak memory on the whole corpus against a tenth of it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    Bench,
    Row,
    best_alternating,
    charrnn_args,
    log,
    per_second,
    run_child,
)
from benchmarks.corpus import corpus_text
from charrnn.analysis.inspection import inspect_symbols
from charrnn.analysis.scoring import score_ids
from charrnn.config import ModelConfig, RunConfig
from charrnn.model.checkpoint import Checkpoint, load_model, save_checkpoint
from charrnn.model.network import CharRNN
from charrnn.text.corpus import Vocab, symbols_of


@dataclass(frozen=True)
class Sizes:
    hidden: int
    speed_chars: int  # scored in this process for the speed row
    chars: int  # the long text of the memory row; the short one is a tenth


FULL = Sizes(hidden=256, speed_chars=100_000, chars=1_000_000)  # the default preset's LSTM
QUICK = Sizes(hidden=16, speed_chars=4_000, chars=4_000)


def write_model(folder: Path, text: str, hidden: int) -> Path:
    """A checkpoint of an untrained default-shaped LSTM (speed and memory do not need training)."""
    vocab = Vocab(tuple(sorted(set(map(ord, text)))))
    torch.manual_seed(0)
    config = RunConfig(model=ModelConfig(hidden=hidden))
    model = CharRNN(config.model, vocab.size)
    path = folder / "model.pt"
    save_checkpoint(Checkpoint(config, vocab, model.state_dict()), path)
    return path


def inspected_chars(model: CharRNN, vocab: Vocab, symbols: np.ndarray) -> int:
    """Characters scored by inspect_symbols with --find (what `charrnn inspect --find` runs)."""
    return inspect_symbols(model, vocab, symbols, show=2000, find=True).chars


def measure(bench: Bench) -> None:
    """Rows: inspect --find chars/s against eval on one stream, in this process, one thread; with
    the full sizes, peak RSS of `charrnn inspect` on the whole corpus against a tenth of it."""
    sizes = bench.pick(FULL, QUICK)
    folder = bench.scratch("inspect")
    text = corpus_text()[: sizes.chars]
    model_path = write_model(folder, text, sizes.hidden)
    model, checkpoint = load_model(model_path)
    speed_text = text[: sizes.speed_chars]
    symbols = symbols_of(speed_text, False)
    ids = checkpoint.vocab.encode(speed_text)
    log(f"inspection: 1x{sizes.hidden} LSTM over {len(speed_text):,} chars")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        speed, eval_speed = best_alternating(
            partial(per_second, partial(inspected_chars, model, checkpoint.vocab, symbols)),
            partial(per_second, lambda: score_ids(model, ids, 1, "cpu").chars),
            repeats=1 if bench.quick else 2,
        )
    finally:
        torch.set_num_threads(threads)
    bench.add(
        Row(
            "inspection",
            f"1x{sizes.hidden} LSTM inspect --find, {len(speed_text):,} chars, 1 thread (chars/s)",
            f"{speed:,.0f}",
            f"{eval_speed:,.0f} (eval, 1 stream)",
            speed / eval_speed,
            numbers={"chars_per_s": speed, "eval_chars_per_s": eval_speed},
        )
    )
    if bench.quick:  # two more processes loading torch: the memory figure is for the full run
        return
    long_path, short_path = folder / "long.txt", folder / "short.txt"
    long_path.write_text(text, "utf-8")
    short_path.write_text(text[: sizes.chars // 10], "utf-8")
    common = ["--checkpoint", str(model_path), "--device", "cpu", "--threads", "1"]
    inspect = ["inspect", *common, "--find", "--json", "--show", "2000"]
    log(f"inspection: peak RSS of charrnn inspect over {len(text):,} and {len(text) // 10:,} chars")
    long_run = run_child(charrnn_args(*inspect, str(long_path)))
    short_run = run_child(charrnn_args(*inspect, str(short_path)))
    bench.add(
        Row(
            "inspection",
            f"charrnn inspect --find peak RSS, {len(text):,} chars against "
            f"{len(text) // 10:,} (MiB)",
            f"{long_run.max_rss_kib / 1024:,.0f}",
            f"{short_run.max_rss_kib / 1024:,.0f}",
            long_run.max_rss_kib / short_run.max_rss_kib,
            numbers={"long_rss_kib": long_run.max_rss_kib, "short_rss_kib": short_run.max_rss_kib},
        )
    )

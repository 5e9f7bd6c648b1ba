"""dynamic: `eval --dynamic` (Krause et al., 2017) on the validation split of tiny Shakespeare,
against the static loss of the same model on the same characters, at several step sizes.

The model is the checkpoint named by $CHARRNN_BENCH_MODEL (e.g. a default run trained 90 s),
or else a default-preset model trained here for 90 s (quick: an untrained tiny one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Bench, Row, log
from benchmarks.corpus import SHAKESPEARE, generated_text
from charrnn.analysis.scoring import dynamic_score_ids, score_ids, validation_ids
from charrnn.commands import train_command
from charrnn.config import RunConfig
from charrnn.model.checkpoint import Checkpoint, load_model, save_checkpoint
from charrnn.model.network import CharRNN
from charrnn.text.corpus import prepare_corpus

MODEL_ENV = "CHARRNN_BENCH_MODEL"


@dataclass(frozen=True)
class Sizes:
    chars: int | None  # validation characters scored; None: the whole split
    lrs: tuple[float, ...]
    train: dict  # overrides of the default config when a model is trained here


FULL = Sizes(chars=None, lrs=(0.03, 0.1, 0.3), train={"max_time": 90.0, "max_epochs": None})
QUICK = Sizes(
    chars=3_000,
    lrs=(0.1,),
    train={"hidden": 16, "embed": 8, "max_steps": 20, "eval_every": 20, "batch_size": 4},
    # quick: not trained (see `untrained_checkpoint`)
)


def model_path(bench: Bench, sizes: Sizes) -> Path:
    """The checkpoint to measure: $CHARRNN_BENCH_MODEL, or one trained now."""
    if os.environ.get(MODEL_ENV) and not bench.quick:
        return Path(os.environ[MODEL_ENV])
    folder = bench.scratch("dynamic")
    corpus = SHAKESPEARE
    if bench.quick or not corpus.is_file():
        corpus = folder / "corpus.txt"
        corpus.write_text(generated_text(200_000 if not bench.quick else 20_000), "utf-8")
    config = RunConfig().replace(device="cpu", **sizes.train)
    if bench.quick:  # an untrained tiny model: quick mode checks the path, not the figure
        return untrained_checkpoint(corpus, config, folder)
    log(f"dynamic: training a model on {corpus.name}")
    train_command([corpus], config, out=folder / "run")
    return folder / "run" / "best.pt"


def untrained_checkpoint(corpus: Path, config: RunConfig, folder: Path) -> Path:
    """A checkpoint of a freshly initialised model that names `corpus` (skips training)."""
    prepared = prepare_corpus([corpus], config.data, folder / ".cache")
    torch.manual_seed(0)
    model = CharRNN(config.model, prepared.vocab.size)
    path = folder / "untrained.pt"
    state = {k: v.detach() for k, v in model.state_dict().items()}
    save_checkpoint(
        Checkpoint(config, prepared.vocab, state, corpus={"sources": [str(corpus)]}), path
    )
    return path


def measure(bench: Bench) -> None:
    """Rows: the dynamic loss at each step size against the static loss (one stream, as the
    dynamic pass reads) and the static loss as `charrnn eval` scores it (the run's streams)."""
    sizes = bench.pick(FULL, QUICK)
    path = model_path(bench, sizes)
    model, checkpoint = load_model(path)
    cache = bench.scratch("dynamic-cache")
    ids = np.asarray(validation_ids(checkpoint, cache)[: sizes.chars])
    streams = checkpoint.config.train.eval_streams
    window = checkpoint.config.train.seq_len
    log(f"dynamic: {ids.shape[0]:,} validation characters, static passes")
    static = score_ids(model, ids, 1)
    usual = score_ids(model, ids, streams)
    label = f"{path.parent.name}/{path.name}, {ids.shape[0]:,} val chars"
    bench.add(
        Row(
            "dynamic",
            f"{label}: static loss, {streams} streams (`charrnn eval`)",
            f"{usual.loss:.4f} nats/char",
            f"1 stream {static.loss:.4f}",
            usual.loss / static.loss,
            numbers={"loss": usual.loss, "one_stream_loss": static.loss},
        )
    )
    for lr in sizes.lrs:
        log(f"dynamic: lr {lr}")
        adapted = dynamic_score_ids(model, ids, window, lr)
        bench.add(
            Row(
                "dynamic",
                f"{label}: dynamic_loss, SGD lr {lr}, windows of {window}",
                f"{adapted.loss:.4f} nats/char ({adapted.loss - static.loss:+.4f})",
                f"static {static.loss:.4f} (1 stream)",
                adapted.loss / static.loss,
                numbers={"dynamic_loss": adapted.loss, "static_loss": static.loss, "lr": lr},
            )
        )

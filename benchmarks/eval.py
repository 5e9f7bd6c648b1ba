"""eval: score_ids on the validation split, against training the same model."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from benchmarks import train
from benchmarks.common import Bench, Row, best_of, log, per_second
from benchmarks.corpus import training_data
from charrnn.analysis.scoring import score_ids
from charrnn.config import RunConfig
from charrnn.model.network import CharRNN
from charrnn.text.corpus import split_train_val


@dataclass(frozen=True)
class Sizes:
    chars: int | None  # None: the whole validation split


FULL = Sizes(chars=None)
QUICK = Sizes(chars=20_000)


def eval_ids(bench: Bench) -> np.ndarray:
    """The validation split (the default val_frac) of the corpus, or its first `chars`."""
    _, ids = training_data(bench)
    _, val = split_train_val(ids, RunConfig().data.val_frac)
    chars = bench.pick(FULL, QUICK).chars
    return np.asarray(val[:chars] if chars else val)


def scored_chars(model: CharRNN, ids: np.ndarray, streams: int) -> int:
    """Characters scored by charrnn.analysis.scoring.score_ids on the CPU."""
    return score_ids(model, ids, streams, "cpu").chars


def measure(bench: Bench) -> None:
    """Row: score_ids chars/s against the Trainer's chars/s for the same 2-layer LSTM."""
    hidden = bench.pick(train.FULL, train.QUICK).hidden[0]
    shape = train.train_shape(bench, "lstm", hidden)
    streams = RunConfig().train.eval_streams
    ids = eval_ids(bench)
    torch.manual_seed(0)
    model = CharRNN(shape.model_config(), shape.vocab_size)
    log(f"eval {shape.name}: {ids.shape[0]:,} chars in {streams} streams")
    speed = best_of(2, partial(per_second, partial(scored_chars, model, ids, streams)))
    train_speed = train.charrnn_train_speed_of(bench, "lstm", hidden)
    bench.add(
        Row(
            "eval",
            f"{shape.name} score_ids, {streams} streams, {ids.shape[0]:,} chars (chars/s)",
            f"{speed:,.0f}",
            f"{train_speed:,.0f} (training)",
            speed / train_speed,
            numbers={"chars_per_s": speed, "train_chars_per_s": train_speed},
        )
    )

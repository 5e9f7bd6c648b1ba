"""Scoring text: mean loss (nats/char), bits per character and perplexity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.checkpoint import Checkpoint
from charrnn.data import (
    IGNORE_INDEX,
    Vocab,
    encode_text_file,
    eval_windows,
    split_train_val,
    symbols_of,
)
from charrnn.device import CpuThreads
from charrnn.errors import CorpusError, UsageError
from charrnn.model import CharRNN
from charrnn.runcorpus import cache_dirs, run_corpus

EVAL_WINDOW = 512  # characters per forward call; bounds memory, not the result


@dataclass(frozen=True)
class EvalResult:
    """Total loss over `chars` scored predictions, and symbols the vocabulary lacked."""

    loss_sum: float
    chars: int
    unknown_chars: int = 0

    @property
    def loss(self) -> float:
        """Mean cross-entropy in nats per character."""
        return self.loss_sum / self.chars if self.chars else math.nan

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "loss": self.loss,
            "bpc": self.bpc,
            "perplexity": self.perplexity,
            "chars": self.chars,
            "unknown_chars": self.unknown_chars,
        }


def score_ids(
    model: CharRNN,
    ids: np.ndarray,
    streams: int,
    device: torch.device | str = "cpu",
    threads: CpuThreads | None = None,
    part: tuple[int, int] = (0, 1),
) -> EvalResult:
    """Stateful next-character loss over `ids`, cut into `streams` parallel streams
    (`threads`, when given, re-judges the CPU thread count as the windows go; `part`, see
    `eval_windows`, scores one share of the streams)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    scored, state = 0, None
    with torch.inference_mode():
        for inputs, targets in eval_windows(ids, streams, EVAL_WINDOW, part):
            if threads is not None:
                threads.tick()
            x = torch.from_numpy(inputs).to(device)
            y = torch.from_numpy(targets).to(device)
            logits, state = model(x, state)
            total += F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                y.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            ).double()
            scored += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    return EvalResult(float(total), scored)


def validation_ids(checkpoint: Checkpoint, beside_run: Path) -> np.ndarray:
    """The validation split of the corpus the checkpoint was trained on: its cached copy, else
    its unchanged source files (`beside_run`: the cache directory a default run uses)."""
    record = checkpoint.corpus
    if not record.get("sources"):
        raise UsageError("the checkpoint does not name its corpus; give files to evaluate")
    search, write_dir = cache_dirs(record, beside_run)
    hint = "give the files to score instead"
    corpus, _ = run_corpus(record, checkpoint.config.data, search, write_dir, hint)
    ids = corpus.ids
    if corpus.vocab != checkpoint.vocab:
        # A fine-tuned model's vocabulary extends its corpus': re-map through the symbols.
        ids = corpus.vocab.remap(ids, checkpoint.vocab)
    return split_train_val(ids, checkpoint.config.data.val_frac)[1]


def evaluate_files(
    model: CharRNN,
    checkpoint: Checkpoint,
    files: list[Path],
    encoding: str | None,
    streams: int,
    device: torch.device | str = "cpu",
    threads: CpuThreads | None = None,
) -> EvalResult:
    """Score each file as its own text and sum; unknown symbols are counted and left out."""
    loss_sum, chars, unknown = 0.0, 0, 0
    for path in files:
        if not path.is_file():
            raise UsageError(f"file not found: {path}")
        ids, missing = encode_text_file(
            path, checkpoint.vocab, encoding or checkpoint.config.data.encoding
        )
        result = score_ids(model, ids, streams, device, threads)
        loss_sum, chars, unknown = (
            loss_sum + result.loss_sum,
            chars + result.chars,
            unknown + missing,
        )
    if chars == 0:
        raise CorpusError(
            "nothing to score: the text has fewer than two characters the model knows"
        )
    return EvalResult(loss_sum, chars, unknown)


@dataclass(frozen=True)
class TextScore:
    """How well a model predicts one text: each scored symbol with its loss (nats), in order.

    The first known symbol has no context and is not scored, as in `charrnn eval`; symbols
    the vocabulary lacks are left out and counted in `unknown_chars`.
    """

    per_char: list[tuple[str, float]]
    unknown_chars: int = 0

    @property
    def chars(self) -> int:
        return len(self.per_char)

    @property
    def loss(self) -> float:
        """Mean cross-entropy in nats per character."""
        return sum(loss for _, loss in self.per_char) / self.chars if self.chars else math.nan

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)


def score_text(
    model: CharRNN, vocab: Vocab, text: str, threads: CpuThreads | None = None
) -> TextScore:
    """Score `text` as one stateful stream; the mean equals `charrnn eval FILE --streams 1`."""
    ids, _ = vocab.encode_known(text)
    unknown = int(symbols_of(text, vocab.is_bytes).shape[0] - ids.shape[0])
    device = model.head.weight.device
    was_training = model.training
    model.eval()
    losses: list[float] = []
    state = None
    with torch.inference_mode():
        for inputs, targets in eval_windows(ids, 1, EVAL_WINDOW):
            if threads is not None:
                threads.tick()
            logits, state = model(torch.from_numpy(inputs).to(device), state)
            step_losses = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                torch.from_numpy(targets).to(device).reshape(-1),
                reduction="none",
            )
            losses += step_losses.double().tolist()
    model.train(was_training)
    symbols = [vocab.decode([int(i)]) for i in ids[1:]]
    return TextScore(list(zip(symbols, losses, strict=True)), unknown)

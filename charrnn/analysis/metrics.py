"""Classification metrics of next-character prediction: accuracy, top-5, macro P/R/F1, confusions.

`MetricsTally` is fed the logits and targets of every scored window and keeps only counts: per
character (occurrences, predictions, hits) and, for the errors, (target, predicted) pairs held
sparsely, so a vocabulary of thousands of Chinese characters never builds a V x V matrix.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from charrnn.text.corpus import IGNORE_INDEX, Vocab

TOP_K = 5  # a prediction counts as top-k; inspect also shows this many per position
CONFUSIONS_SHOWN = 10
_PAIR_BUFFER = 1 << 20  # error pairs buffered before they are folded into the counter


@dataclass(frozen=True)
class CharScore:
    """One character's row of the per-character table."""

    char: str
    count: int  # times it was the next character
    predicted: int  # times it was the top-1 prediction
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class Confusion:
    """A character and what the model predicted in its place, with how often."""

    target: str
    predicted: str
    count: int
    share: float  # of the target's occurrences


@dataclass(frozen=True)
class CharMetrics:
    """Top-1 and top-5 accuracy, macro precision/recall/F1 over the characters that occur."""

    accuracy: float
    top5_accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_char: tuple[CharScore, ...]  # most frequent first
    confusions: tuple[Confusion, ...]  # most frequent first

    def to_dict(self, by_char: bool = False) -> dict[str, Any]:
        """The five figures, and with `by_char` the table and the most confused pairs."""
        summary: dict[str, Any] = {
            "accuracy": self.accuracy,
            "top5_accuracy": self.top5_accuracy,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
        }
        if by_char:
            summary["per_char"] = [vars(score) for score in self.per_char]
            summary["confusions"] = [vars(pair) for pair in self.confusions]
        return summary


class MetricsTally:
    """Counts from scored windows, turned into `CharMetrics` by `result`."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.scored = self.top1 = self.top5 = 0
        self.occurrences = np.zeros(vocab_size, dtype=np.int64)
        self.predictions = np.zeros(vocab_size, dtype=np.int64)
        self.hits = np.zeros(vocab_size, dtype=np.int64)
        self.pairs: Counter[int] = Counter()
        self._buffer: list[np.ndarray] = []
        self._buffered = 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Count the predictions of `logits` (..., V) against `targets` (...), skipping the
        IGNORE_INDEX padding."""
        flat_targets = targets.reshape(-1)
        flat_logits = logits.detach().reshape(-1, logits.shape[-1])
        keep = flat_targets != IGNORE_INDEX
        if not bool(keep.all()):  # only the last window of uneven streams is padded
            flat_logits, flat_targets = flat_logits[keep], flat_targets[keep]
        if flat_targets.numel() == 0:
            return
        predicted = flat_logits.argmax(dim=-1)
        # In the top 5 when fewer than 5 characters score higher (3x cheaper than topk on CPU).
        target_logits = flat_logits.gather(1, flat_targets[:, None])
        self.top5 += int(((flat_logits > target_logits).sum(dim=-1) < TOP_K).sum())
        truth, guess = flat_targets.cpu().numpy(), predicted.cpu().numpy()
        right = truth == guess
        self.scored += truth.shape[0]
        self.top1 += int(right.sum())
        self.occurrences += np.bincount(truth, minlength=self.vocab_size)
        self.predictions += np.bincount(guess, minlength=self.vocab_size)
        self.hits += np.bincount(truth[right], minlength=self.vocab_size)
        wrong = truth[~right].astype(np.int64) * self.vocab_size + guess[~right]
        self._buffer.append(wrong)
        self._buffered += wrong.shape[0]
        if self._buffered >= _PAIR_BUFFER:
            self._fold_pairs()

    def _fold_pairs(self) -> None:
        if self._buffer:
            keys, counts = np.unique(np.concatenate(self._buffer), return_counts=True)
            self.pairs.update(dict(zip(keys.tolist(), counts.tolist(), strict=True)))
        self._buffer, self._buffered = [], 0

    def result(self, vocab: Vocab) -> CharMetrics:
        """The metrics so far; macro averages run over the characters that occur as targets."""
        self._fold_pairs()
        occurring = np.flatnonzero(self.occurrences)
        hits, occurrences = self.hits[occurring], self.occurrences[occurring]
        predictions = self.predictions[occurring]
        recall = hits / occurrences
        precision = np.divide(
            hits, predictions, out=np.zeros(len(occurring)), where=predictions > 0
        )
        both = precision + recall
        f1 = np.divide(2 * precision * recall, both, out=np.zeros(len(occurring)), where=both > 0)
        order = np.lexsort((occurring, -occurrences))
        per_char = tuple(
            CharScore(
                vocab.label(int(occurring[i])), int(occurrences[i]),
                int(predictions[i]), float(precision[i]), float(recall[i]), float(f1[i]),
            )
            for i in order
        )  # fmt: skip
        confusions = tuple(
            Confusion(
                vocab.label(key // self.vocab_size),
                vocab.label(key % self.vocab_size),
                count,
                count / int(self.occurrences[key // self.vocab_size]),
            )
            for key, count in sorted(self.pairs.items(), key=lambda kv: (-kv[1], kv[0]))[
                :CONFUSIONS_SHOWN
            ]
        )
        scored = self.scored or 1

        def mean(values: np.ndarray) -> float:
            return float(values.mean()) if values.size else float("nan")

        return CharMetrics(
            accuracy=self.top1 / scored,
            top5_accuracy=self.top5 / scored,
            macro_precision=mean(precision),
            macro_recall=mean(recall),
            macro_f1=mean(f1),
            per_char=per_char,
            confusions=confusions,
        )

"""Scoring text: mean loss (nats/char), bits per character and perplexity; the accuracy
metrics of `analysis.metrics` on request; dynamic evaluation (the model adapting as it reads)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn.analysis.metrics import CharMetrics, MetricsTally
from charrnn.config import DYNAMIC_LR
from charrnn.errors import CorpusError, UsageError
from charrnn.model.checkpoint import Checkpoint
from charrnn.model.network import CharRNN, State, detach_state
from charrnn.system.device import CpuThreads
from charrnn.text.corpus import (
    IGNORE_INDEX,
    Vocab,
    encode_text_file,
    eval_windows,
    split_train_val,
    symbols_of,
)
from charrnn.text.run_text import cache_dirs, run_corpus

EVAL_WINDOW = 512  # characters per forward call; bounds memory, not the result


@dataclass(frozen=True)
class EvalResult:
    """Total loss over `chars` scored predictions, symbols the vocabulary lacked (dropped),
    and predictions whose target was the unknown symbol (scored, counted apart)."""

    loss_sum: float
    chars: int
    unknown_chars: int = 0
    unknown_symbol_chars: int = 0
    metrics: CharMetrics | None = None  # accuracy and F1, where they were counted
    dynamic: EvalResult | None = None  # the same text under dynamic evaluation, where asked

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

    def to_dict(self, by_char: bool = False) -> dict[str, Any]:
        """Plain data for `--json`; the dynamic scores under their own keys, never as `loss`."""
        plain: dict[str, Any] = {
            "loss": self.loss,
            "bpc": self.bpc,
            "perplexity": self.perplexity,
            "chars": self.chars,
            "unknown_chars": self.unknown_chars,
            "unknown_symbol_chars": self.unknown_symbol_chars,
        }
        if self.metrics is not None:
            plain.update(self.metrics.to_dict(by_char))
        if self.dynamic is not None:
            plain.update(
                dynamic_loss=self.dynamic.loss,
                dynamic_bpc=self.dynamic.bpc,
                dynamic_perplexity=self.dynamic.perplexity,
            )
        return plain

    def __add__(self, other: EvalResult) -> EvalResult:
        return EvalResult(
            self.loss_sum + other.loss_sum,
            self.chars + other.chars,
            self.unknown_chars + other.unknown_chars,
            self.unknown_symbol_chars + other.unknown_symbol_chars,
        )


def _unknown_targets(targets: np.ndarray, unknown_id: int | None) -> int:
    return 0 if unknown_id is None else int((targets == unknown_id).sum())


@dataclass(frozen=True)
class Window:
    """One window through the model: ids and next-symbol targets (S, T) on the device (the
    targets also as read, on the host), the logits (S, T, V) and all the forward function
    returned (the logits themselves, or a record with `.logits`, as inspect's trace)."""

    inputs: Tensor
    targets: Tensor
    logits: Tensor
    host_targets: np.ndarray
    output: Any

    def losses(self, reduction: str = "sum") -> Tensor:
        """Cross-entropy of the logits against the targets (IGNORE_INDEX targets left out)."""
        logits = self.logits
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            self.targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction=reduction,
        )


def forward_windows(
    forward: Callable[[Tensor, State | None], tuple[Any, State]],
    windows: Iterable[tuple[np.ndarray, np.ndarray]],
    device: torch.device | str = "cpu",
    threads: CpuThreads | None = None,
) -> Iterator[Window]:
    """Each window (inputs, targets) through `forward` with the state carried from the window
    before: the one windowed pass under eval, dynamic eval, `Model.score` and inspect. The
    state is detached after the consumer's turn, so it may backpropagate through its window;
    grad mode is the consumer's (`threads`, when given, re-judges the CPU thread count)."""
    state = None
    for inputs, targets in windows:
        if threads is not None:
            threads.tick()
        x = torch.from_numpy(inputs).to(device)
        y = torch.from_numpy(targets).to(device)
        output, state = forward(x, state)
        yield Window(x, y, getattr(output, "logits", output), targets, output)
        state = detach_state(state)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (no dropout) for the block; its train/eval mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def score_ids(
    model: CharRNN,
    ids: np.ndarray,
    streams: int,
    device: torch.device | str = "cpu",
    threads: CpuThreads | None = None,
    tally: MetricsTally | None = None,
    unknown_id: int | None = None,
    part: tuple[int, int] = (0, 1),
) -> EvalResult:
    """Stateful next-character loss over `ids`, cut into `streams` parallel streams
    (`threads`, when given, re-judges the CPU thread count as the windows go; `tally`, when
    given, counts the accuracy metrics; targets equal to `unknown_id` are counted apart;
    `part`, see `eval_windows`, scores one share of the streams)."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    scored, unknown = 0, 0
    windows = eval_windows(ids, streams, EVAL_WINDOW, part)
    with evaluating(model), torch.inference_mode():
        for window in forward_windows(model, windows, device, threads):
            total += window.losses().double()
            if tally is not None:
                tally.update(window.logits, window.targets)
            scored += int((window.host_targets != IGNORE_INDEX).sum())
            unknown += _unknown_targets(window.host_targets, unknown_id)
    return EvalResult(float(total), scored, unknown_symbol_chars=unknown)


def dynamic_score_ids(
    model: CharRNN,
    ids: np.ndarray,
    window: int,
    lr: float = DYNAMIC_LR,
    device: torch.device | str = "cpu",
    threads: CpuThreads | None = None,
    unknown_id: int | None = None,
) -> EvalResult:
    """Dynamic evaluation (Krause et al., 2017): read `ids` as one stream in windows of
    `window`, score each window, then take one SGD step of size `lr` on its loss, so the model
    adapts to the text as it reads. Works on a copy: `model` is not changed."""
    adapting = copy.deepcopy(model).eval()  # eval: no dropout; the gradient is still taken
    for parameter in adapting.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.SGD(adapting.parameters(), lr=lr)
    total, scored, unknown = 0.0, 0, 0
    # cuDNN computes RNN gradients only in training mode; its own kernels are not needed here.
    with torch.backends.cudnn.flags(enabled=False):
        windows = eval_windows(ids, 1, window)
        for scored_window in forward_windows(adapting, windows, device, threads):
            loss_sum = scored_window.losses()
            count = scored_window.targets.numel()
            optimizer.zero_grad(set_to_none=True)
            (loss_sum / count).backward()
            optimizer.step()
            total += float(loss_sum.detach())
            scored += count
            unknown += _unknown_targets(scored_window.host_targets, unknown_id)
    return EvalResult(total, scored, unknown_symbol_chars=unknown)


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


def encode_files(
    checkpoint: Checkpoint, files: list[Path], encoding: str | None
) -> list[tuple[np.ndarray, int]]:
    """Each file's ids, preprocessed as the model's corpus was, and the symbols it lacked."""
    encoded = []
    for path in files:
        if not path.is_file():
            raise UsageError(f"file not found: {path}")
        data_config = checkpoint.config.data
        encoded.append(
            encode_text_file(path, checkpoint.vocab, encoding or data_config.encoding, data_config)
        )
    return encoded


def evaluate_files(
    model: CharRNN,
    checkpoint: Checkpoint,
    files: list[Path],
    encoding: str | None,
    streams: int,
    device: torch.device | str = "cpu",
    threads: CpuThreads | None = None,
    tally: MetricsTally | None = None,
) -> EvalResult:
    """Score each file as its own text and sum; symbols the vocabulary lacks are counted and
    left out (with an unknown symbol there are none: they are scored as it)."""
    texts = encode_files(checkpoint, files, encoding)
    unknown_id = checkpoint.vocab.unknown_id
    return require_scored(score_texts(model, texts, streams, device, threads, tally, unknown_id))


def score_texts(
    model: CharRNN,
    texts: list[tuple[np.ndarray, int]],
    streams: int,
    device: torch.device | str = "cpu",
    threads: CpuThreads | None = None,
    tally: MetricsTally | None = None,
    unknown_id: int | None = None,
) -> EvalResult:
    """Each text (its ids, and how many symbols it lacked) scored on its own (`score_ids`),
    summed."""
    total = EvalResult(0.0, 0)
    for ids, missing in texts:
        result = score_ids(model, ids, streams, device, threads, tally, unknown_id)
        total = total + replace(result, unknown_chars=missing)
    return total


def require_scored(result: EvalResult) -> EvalResult:
    """`result`, unless it scored nothing: a text the user gave must hold something to score."""
    if result.chars == 0:
        raise CorpusError(
            "nothing to score: the text has fewer than two characters the model knows"
        )
    return result


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
    losses: list[float] = []
    with evaluating(model), torch.inference_mode():
        for window in forward_windows(model, eval_windows(ids, 1, EVAL_WINDOW), device, threads):
            losses += window.losses("none").double().tolist()
    symbols = [vocab.decode([int(i)]) for i in ids[1:]]
    return TextScore(list(zip(symbols, losses, strict=True)), unknown)

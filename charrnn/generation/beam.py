"""Beam search: the most likely continuation of a prime, not a random draw.

Sampling can loop or wander; `--beam N` keeps the N most likely partial continuations at each
step, extends each by every character, and keeps the N best of those. A continuation ends at
`--length` characters or where `--stop` appears. Continuations of different lengths (ended by
the stop text, or not) are compared by their mean log-probability per character, the stop text
included, so a search is not biased towards short endings. It scores with the model's own
probabilities: temperature, top-k, top-p and seeds are for sampling and do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn.config import SampleConfig
from charrnn.model.network import CharRNN, State, Stepper, repeat_rows
from charrnn.text.corpus import Vocab


@dataclass(frozen=True)
class Beam:
    """One continuation found: its text (without the stop text), its symbol ids (with it), the
    sum of their log-probabilities and whether it ended at the stop text."""

    text: str
    ids: tuple[int, ...]
    log_prob: float
    stopped: bool

    @property
    def score(self) -> float:
        """Mean log-probability per character: what beams of different lengths are ranked by."""
        return self.log_prob / max(1, len(self.ids))


def _text(vocab: Vocab, ids: tuple[int, ...]) -> str:
    return vocab.decode(list(ids))


def _ends_with_stop(vocab: Vocab, ids: tuple[int, ...], stop: str | None) -> bool:
    # Only the tail can hold a stop text that was not there one character earlier.
    return stop is not None and _text(vocab, ids[-4 * len(stop) :]).endswith(stop)


def _finished(vocab: Vocab, ids: tuple[int, ...], log_prob: float, stop: str | None) -> Beam:
    text = _text(vocab, ids)
    stopped = stop is not None and text.endswith(stop)
    return Beam(text[: len(text) - len(stop)] if stopped else text, ids, log_prob, stopped)


def beam_search(
    model: CharRNN,
    vocab: Vocab,
    prime_ids: torch.Tensor,
    config: SampleConfig,
    width: int,
    state: State | None = None,
) -> list[Beam]:
    """The `config.num_samples` best continuations of `prime_ids` (best first), searched with
    `width` beams; `state` is the model's state before the prime (None: a fresh start)."""
    model.eval()
    with torch.inference_mode():
        if prime_ids.numel():
            _, state = model(prime_ids.view(1, -1), state)
        elif state is None:
            state = model.initial_state(1)
        stepper = Stepper(model, repeat_rows(state, width))
        live: list[tuple[tuple[int, ...], float]] = [((), 0.0)]  # row i of the stepper
        done: list[Beam] = []
        for _ in range(config.length):
            logits = torch.addmm(stepper.head_bias, stepper.top[: len(live)], stepper.head_weight)
            totals = torch.log_softmax(logits.double(), dim=-1)
            totals += torch.tensor([score for _, score in live], dtype=torch.float64)[:, None]
            flat = totals.flatten()
            # Best first; a stopped continuation leaves the beam, so look at 2 x width.
            order = torch.argsort(flat, descending=True)[: 2 * width].tolist()
            kept: list[tuple[int, int, float]] = []  # (row, symbol, total)
            for index in order:
                row, symbol = divmod(index, vocab.size)
                total = float(flat[index])
                if total == float("-inf"):
                    break
                ids = (*live[row][0], symbol)
                if _ends_with_stop(vocab, ids, config.stop):
                    done.append(_finished(vocab, ids, total, config.stop))
                    continue
                kept.append((row, symbol, total))
                if len(kept) == width:
                    break
            if not kept:
                break
            rows = torch.tensor([row for row, _, _ in kept] + [0] * (width - len(kept)))
            _select_rows(stepper, rows)
            live = [((*live[row][0], symbol), total) for row, symbol, total in kept]
            if len(live) and len(live[0][0]) < config.length:
                symbols = [symbol for _, symbol, _ in kept] + [0] * (width - len(kept))
                stepper.advance(torch.tensor(symbols))
        done += [_finished(vocab, ids, total, config.stop) for ids, total in live]
    done.sort(key=lambda beam: beam.score, reverse=True)
    return done[: config.num_samples]


def _select_rows(stepper: Stepper, rows: torch.Tensor) -> None:
    """Reorder the stepper's state rows in place (its views into the buffers stay valid)."""
    stepper.h.copy_(stepper.h.index_select(1, rows))
    if stepper.c is not None:
        stepper.c.copy_(stepper.c.index_select(1, rows))

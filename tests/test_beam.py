"""Beam search against brute force: every continuation of a tiny model, enumerated and scored."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from charrnn.config import ModelConfig, SampleConfig, validate_sample_config
from charrnn.errors import UsageError
from charrnn.generation.beam import beam_search
from charrnn.generation.sampling import collect, generate
from charrnn.generation.streams import prime_ids
from charrnn.model.network import CharRNN
from charrnn.text.corpus import Vocab

SYMBOLS = "ab\nc"
VOCAB = Vocab(tuple(sorted(map(ord, SYMBOLS))))
PRIME = "ab"


def tiny_model(cell: str = "lstm", seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(cell=cell, layers=2, hidden=8, embed=4), VOCAB.size)
    with torch.no_grad():  # sharper distributions than the initial ones: beams differ more
        for parameter in model.parameters():
            parameter.mul_(3.0)
    return model.eval()


def log_probs_of(model: CharRNN, continuations: list[tuple[int, ...]]) -> list[float]:
    """Sum of log-probabilities of each continuation after PRIME, by the fused forward pass:
    a different code path from the search's `Stepper`."""
    prime = VOCAB.encode(PRIME).tolist()
    scores = {}
    with torch.inference_mode():
        for n in sorted({len(ids) for ids in continuations}):  # one batch per length
            batch = [ids for ids in continuations if len(ids) == n]
            sequences = torch.tensor([prime + list(ids) for ids in batch])
            log_probs = torch.log_softmax(model(sequences)[0].double(), dim=-1)
            targets = torch.tensor(batch)[:, :, None]
            picked = log_probs[:, len(prime) - 1 : len(prime) - 1 + n].gather(2, targets)
            scores.update(zip(batch, picked.sum(dim=(1, 2)).tolist(), strict=True))
    return [scores[ids] for ids in continuations]


def brute_force(model: CharRNN, length: int, stop: str | None) -> list[tuple[str, float]]:
    """Every finished continuation with its mean log-probability per character, best first.

    A continuation finishes where the stop text first appears (it is scored with it, shown
    without it) or at `length` characters."""
    finished = []
    for n in range(1, length + 1):
        for ids in itertools.product(range(VOCAB.size), repeat=n):
            text = VOCAB.decode(list(ids))
            if stop is None and n < length:
                continue
            if stop is not None:
                first = text.find(stop)
                ends_at_stop = first == len(text) - len(stop)
                if (first >= 0 and not ends_at_stop) or (first < 0 and n < length):
                    continue
                text = text[: len(text) - len(stop)] if ends_at_stop else text
            finished.append((ids, text))
    scores = log_probs_of(model, [ids for ids, _ in finished])
    ranked = [(text, score / len(ids)) for (ids, text), score in zip(finished, scores, strict=True)]
    return sorted(ranked, key=lambda pair: pair[1], reverse=True)


def search(model: CharRNN, width: int, **options) -> list:
    config = SampleConfig(beam=width, **options)
    return beam_search(model, VOCAB, prime_ids(VOCAB, PRIME, "error"), config, width)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru"])
@pytest.mark.parametrize("stop", [None, "\n", "ca"])
def test_a_wide_beam_finds_what_brute_force_finds(cell, stop):
    model = tiny_model(cell)
    length = 5
    expected = brute_force(model, length, stop)
    found = search(model, VOCAB.size**length, length=length, stop=stop, num_samples=5)
    assert [beam.text for beam in found] == [text for text, _ in expected[:5]]
    for beam, (_, score) in zip(found, expected, strict=False):
        assert beam.score == pytest.approx(score, abs=1e-6)
    assert all(math.isfinite(beam.score) for beam in found)


def test_scores_are_length_normalised():
    model = tiny_model("lstm", seed=3)
    ranked = brute_force(model, 4, "\n")
    lengths = {len(text) for text, _ in ranked[:20]}
    assert len(lengths) > 1  # short and full-length continuations compete in the ranking
    best = search(model, VOCAB.size**4, length=4, stop="\n")[0]
    assert (best.text, best.score) == (ranked[0][0], pytest.approx(ranked[0][1], abs=1e-6))


def test_one_beam_is_greedy_decoding():
    for seed in range(3):
        model = tiny_model("lstm", seed)
        greedy = collect(generate(model, VOCAB, PRIME, SampleConfig(length=12, greedy=True)), 1)[0]
        beam = collect(generate(model, VOCAB, PRIME, SampleConfig(length=12, beam=1)), 1)[0]
        assert beam == greedy


def test_a_narrow_beam_returns_ranked_texts_of_the_asked_length():
    model = tiny_model("gru", seed=1)
    config = SampleConfig(length=30, beam=4, num_samples=3)
    texts = collect(generate(model, VOCAB, PRIME, config), 3)
    assert len(texts) == 3 and len(set(texts)) == 3
    assert all(text.startswith(PRIME) and len(text) == len(PRIME) + 30 for text in texts)
    found = search(model, 4, length=30, num_samples=3)
    assert [PRIME + beam.text for beam in found] == texts
    assert [beam.score for beam in found] == sorted((beam.score for beam in found), reverse=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 0.5}, "--beam searches for the most likely text; --temperature only"),
        ({"top_k": 3, "top_p": 0.5}, "; --top-k, --top-p only apply to sampling"),
        ({"greedy": True}, "; --greedy only applies to sampling"),
        ({"seed": 4}, "; --seed only applies"),
        ({"num_samples": 5}, "--beam 4 finds at most 4 texts; --num-samples 5 asks for more"),
        ({"beam": -1}, "beam must be between 0 (sample) and 4096, got -1"),
    ],
)
def test_sampling_options_with_beam_are_refused(options, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_sample_config(SampleConfig(**{"beam": 4, **options}))

"""Sampling: seeds, strategies, priming, stop strings and streaming."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from charrnn.commands import sample_command
from charrnn.config import ModelConfig, SampleConfig
from charrnn.errors import UsageError
from charrnn.generation.sampling import collect, generate
from charrnn.generation.streams import filter_logits, gumbel_noise
from charrnn.model.network import CharRNN
from charrnn.text.corpus import Vocab

ALPHABET = "\n .,abcdefghijklmnop床🎉"
VOCAB = Vocab(tuple(sorted(ord(c) for c in ALPHABET)))


def make_model(cell: str = "lstm", seed: int = 0, vocab_size: int = VOCAB.size) -> CharRNN:
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(cell=cell, layers=2, hidden=24, embed=8), vocab_size)
    with torch.no_grad():  # sharpen the random predictions so that strategies differ
        model.head.weight.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> CharRNN:
    return make_model()


def sample(model, prime="ab", vocab=VOCAB, on_text=None, **keys) -> list[str]:
    keys.setdefault("length", 40)
    keys.setdefault("seed", 1)
    config = SampleConfig(**keys)
    pieces = generate(model, vocab, prime, config)
    if on_text is not None:
        pieces = ((index, piece) for index, piece in pieces if on_text(index, piece) or True)
    return collect(pieces, config.num_samples)


def test_same_seed_same_samples_different_seeds_differ(model):
    first = sample(model, seed=7, length=60, temperature=1.2)
    assert first == sample(model, seed=7, length=60, temperature=1.2)
    assert first != sample(model, seed=8, length=60, temperature=1.2)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru"])
def test_greedy_follows_the_argmax_of_the_full_model(cell):
    model = make_model(cell)
    prime = "ab c"
    [text] = sample(model, prime=prime, greedy=True, length=25)
    ids = VOCAB.encode(prime).tolist()
    with torch.no_grad():
        for _ in range(25):
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    assert text == VOCAB.decode(ids)


def test_greedy_is_deterministic_and_equals_top_k_1_and_tiny_top_p(model):
    greedy = sample(model, greedy=True, seed=1)
    assert greedy == sample(model, greedy=True, seed=2)
    assert greedy == sample(model, top_k=1, seed=3, temperature=1.5)
    assert greedy == sample(model, top_p=1e-6, seed=4)
    assert greedy != sample(model, seed=5, temperature=2.0)


def hand_made_logits() -> torch.Tensor:
    probs = torch.tensor([[0.12, 0.5, 0.05, 0.25, 0.08], [0.25, 0.05, 0.12, 0.08, 0.5]])
    return probs.log()


ORDER = [[1, 3, 0, 4, 2], [4, 0, 2, 3, 1]]  # the ids of each row, most likely first


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 9])
def test_top_k_keeps_exactly_the_k_most_likely(k):
    filtered = filter_logits(hand_made_logits(), SampleConfig(top_k=k, temperature=1.0))
    kept = [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in filtered]
    assert kept == [set(ORDER[0][:k]), set(ORDER[1][:k])]


@pytest.mark.parametrize(
    ("p", "count"), [(0.3, 1), (0.45, 1), (0.6, 2), (0.8, 3), (0.9, 4), (1.0, 5)]
)
def test_top_p_keeps_the_smallest_set_reaching_p(p, count):
    filtered = filter_logits(hand_made_logits(), SampleConfig(top_p=p, temperature=1.0))
    kept = [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in filtered]
    assert kept == [set(ORDER[0][:count]), set(ORDER[1][:count])]
    # Kept logits are untouched, so the renormalised probabilities keep their ratios.
    finite = torch.isfinite(filtered)
    assert torch.allclose(filtered[finite], hand_made_logits()[finite])


def test_top_k_and_top_p_combine():
    config = SampleConfig(top_k=3, top_p=0.6, temperature=1.0)
    kept = torch.isfinite(filter_logits(hand_made_logits(), config))
    assert kept.sum(dim=1).tolist() == [2, 2]
    config = SampleConfig(top_k=2, top_p=0.9, temperature=1.0)
    kept = torch.isfinite(filter_logits(hand_made_logits(), config))
    assert kept.sum(dim=1).tolist() == [2, 2]


def test_temperature_divides_the_logits():
    logits = hand_made_logits()
    assert torch.allclose(filter_logits(logits, SampleConfig(temperature=0.5)), logits * 2)


def test_output_begins_with_the_prime_and_has_the_requested_length(model):
    for prime in ["ab", "床🎉 a", "\n"]:
        [text] = sample(model, prime=prime, length=33)
        assert text.startswith(prime)
        assert len(text) == len(prime) + 33
        assert set(text) <= set(ALPHABET)


def test_empty_prime_and_zero_length(model):
    [text] = sample(model, prime="", length=20)
    assert len(text) == 20
    assert sample(model, prime="abc", length=0) == ["abc"]


def test_num_samples_gives_that_many_independent_samples(model):
    texts = sample(model, num_samples=4, length=30, temperature=1.5)
    assert len(texts) == 4
    assert all(t.startswith("ab") and len(t) == 32 for t in texts)
    assert len(set(texts)) > 1


def pair_from_middle(text: str) -> str:
    """Two characters from the middle of `text`, so the stop string surely appears."""
    return text[len(text) // 2 : len(text) // 2 + 2]


@pytest.mark.parametrize("num_samples", [1, 3])
def test_stop_string_ends_each_sample_and_is_not_included(model, num_samples):
    prime = "ab"
    keys = {"num_samples": num_samples, "length": 60, "temperature": 1.3, "seed": 11}
    free = sample(model, prime=prime, **keys)
    stop = pair_from_middle(free[0][len(prime) :])
    streamed: dict[int, str] = {}

    def on_text(index: int, piece: str) -> None:
        assert piece  # no empty pieces are streamed
        streamed[index] = streamed.get(index, "") + piece

    stopped = sample(model, prime=prime, stop=stop, on_text=on_text, **keys)
    for full, cut in zip(free, stopped, strict=True):
        generated = full[len(prime) :]
        where = generated.find(stop)
        expected = full if where < 0 else prime + generated[:where]
        assert cut == expected
        assert stop not in cut[len(prime) :]
    assert len(stopped[0]) < len(free[0])
    assert [streamed.get(i, "") for i in range(num_samples)] == stopped


def test_streamed_pieces_concatenate_to_the_returned_text(model):
    streamed = ["", ""]

    def on_text(index: int, piece: str) -> None:
        streamed[index] += piece

    texts = sample(model, prime="床a", num_samples=2, on_text=on_text)
    assert streamed == texts


def test_stop_string_longer_than_one_character_split_across_steps(model):
    free = sample(model, prime="", length=80, temperature=1.3, seed=3)[0]
    stop = free[30:34]
    pieces: list[str] = []
    [text] = sample(
        model, prime="", length=80, temperature=1.3, seed=3, stop=stop,
        on_text=lambda i, p: pieces.append(p),
    )  # fmt: skip
    assert text == free[: free.find(stop)]
    assert "".join(pieces) == text


def test_unknown_prime_characters_are_listed(model):
    with pytest.raises(UsageError) as info:
        sample(model, prime="abXY")
    assert "'X'" in str(info.value) and "'Y'" in str(info.value)


def test_skip_policy_drops_unknown_prime_characters(model):
    [text] = sample(model, prime="aXbY", unknown="skip", length=10)
    assert text.startswith("ab") and len(text) == 12
    [reference] = sample(model, prime="ab", length=10)
    assert text == reference


def test_bytes_vocabulary_generates_text_starting_with_the_prime():
    raw = ALPHABET.encode("utf-8")
    vocab = Vocab(tuple(sorted(set(raw))), is_bytes=True)
    model = make_model(vocab_size=vocab.size)
    streamed: list[str] = []
    [text] = sample(
        model, prime="床a", vocab=vocab, length=30, on_text=lambda i, p: streamed.append(p)
    )
    assert text.startswith("床a")
    assert "".join(streamed) == text


@pytest.mark.parametrize(
    "keys",
    [
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"temperature": math.nan},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": 0},
        {"length": -1},
        {"num_samples": 0},
        {"stop": ""},
        {"unknown": "ignore"},
        {"seed": 2**64},
    ],
    ids=lambda keys: "-".join(f"{k}={v}" for k, v in keys.items()),
)
def test_invalid_settings_are_usage_errors_at_the_command(keys):
    # Checked once, where the options come in; `generate` trusts its config.
    config = SampleConfig(**{"length": 40, "seed": 1, **keys})
    with pytest.raises(UsageError):
        next(sample_command(Path("shakespeare"), "ab", config))


def test_random_seed_when_none_is_given(model):
    texts = {sample(model, seed=None, length=40, temperature=2.0)[0] for _ in range(3)}
    assert len(texts) > 1


def test_gumbel_draws_follow_the_model_probabilities():
    # argmax(logits + Gumbel noise) must reproduce the softmax and never pick a masked character.
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    logits = probs.clamp_min(1e-30).log().expand(20000, -1)
    noise = gumbel_noise((20000, 5), torch.Generator().manual_seed(0))
    assert torch.isfinite(noise).all()
    picked = (logits + noise).argmax(dim=-1)
    freq = torch.bincount(picked, minlength=5).float() / 20000
    assert (freq - probs).abs().max().item() < 0.015
    top2 = (filter_logits(logits, SampleConfig(temperature=1.0, top_k=2)) + noise).argmax(dim=-1)
    assert set(top2.tolist()) == {0, 1}
    assert abs((top2 == 0).float().mean().item() - 0.5 / 0.8) < 0.015
    hot = (filter_logits(logits, SampleConfig(temperature=2.0)) + noise).argmax(dim=-1)
    hot_probs = torch.softmax(probs.clamp_min(1e-30).log() / 2.0, dim=-1)
    hot_freq = torch.bincount(hot, minlength=5).float() / 20000
    assert (hot_freq - hot_probs).abs().max().item() < 0.015


def test_sample_frequencies_follow_the_model_at_the_given_temperature():
    # End to end through generate(): the first character of many samples from an empty prime
    # follows softmax(head bias / T), which is the model's prediction from a zero state.
    model = make_model()
    with torch.no_grad():
        model.head.bias.copy_(torch.linspace(-2.0, 2.0, VOCAB.size))
    config = SampleConfig(length=1, num_samples=4000, temperature=1.5, seed=0)
    firsts = [text[0] for text in collect(generate(model, VOCAB, "", config), 4000)]
    ids = torch.tensor(VOCAB.encode("".join(firsts)).tolist())
    freq = torch.bincount(ids, minlength=VOCAB.size).float() / len(firsts)
    expected = torch.softmax(model.head.bias.detach() / 1.5, dim=-1)
    assert (freq - expected).abs().max().item() < 0.03

"""Loss, bits per character and perplexity (charrnn.analysis.scoring)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from charrnn.analysis import scoring as evaluate
from charrnn.analysis.scoring import EvalResult, evaluate_files, score_ids
from charrnn.config import RunConfig
from charrnn.errors import CorpusError, UsageError
from charrnn.model.checkpoint import Checkpoint
from charrnn.model.network import CharRNN
from charrnn.text.corpus import Vocab

V = 7


def make_model(cell: str = "lstm", layers: int = 2, vocab_size: int = V) -> CharRNN:
    torch.manual_seed(0)
    config = RunConfig().replace(cell=cell, layers=layers, hidden=16, embed=8).model
    model = CharRNN(config, vocab_size)
    with torch.no_grad():
        model.head.weight.mul_(5.0)  # a peaked distribution makes the loss sensitive
    return model


def hand_loss(model: CharRNN, ids: np.ndarray) -> float:
    """Sum of -log p(next | prefix), one character at a time from a zero state."""
    total, state = 0.0, None
    with torch.no_grad():
        for t in range(len(ids) - 1):
            logits, state = model(torch.tensor([[int(ids[t])]]), state)
            total -= torch.log_softmax(logits[0, 0].double(), dim=-1)[int(ids[t + 1])].item()
    return total


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru"])
def test_one_stream_equals_a_hand_computation(cell, monkeypatch):
    monkeypatch.setattr(evaluate, "EVAL_WINDOW", 8)  # the state must carry across windows
    model = make_model(cell)
    ids = np.random.default_rng(0).integers(0, V, 41).astype(np.uint8)
    result = score_ids(model, ids, streams=1)
    assert result.chars == 40
    assert result.loss_sum == pytest.approx(hand_loss(model, ids), rel=1e-6)


@pytest.mark.parametrize("n", [41, 44, 60])
def test_three_streams_equal_a_hand_computation_stream_by_stream(n, monkeypatch):
    monkeypatch.setattr(evaluate, "EVAL_WINDOW", 5)
    model = make_model()
    ids = np.random.default_rng(n).integers(0, V, n)
    predictions = n - 1
    length = math.ceil(predictions / 3)
    # Stream s predicts characters s*length+1 ... of the text, each from a fresh state.
    expected = sum(
        hand_loss(model, ids[start : min(start + length, predictions) + 1])
        for start in range(0, predictions, length)
    )
    result = score_ids(model, ids, streams=3)
    assert result.chars == predictions
    assert result.loss_sum == pytest.approx(expected, rel=1e-6)
    assert result.loss_sum != pytest.approx(hand_loss(model, ids), rel=1e-6)


def test_scoring_leaves_the_training_mode_as_it_was():
    model = make_model()
    model.train()
    score_ids(model, np.arange(6) % V, streams=2)
    assert model.training
    model.eval()
    score_ids(model, np.arange(6) % V, streams=2)
    assert not model.training


def test_eval_result_units():
    result = EvalResult(loss_sum=30.0, chars=20, unknown_chars=3)
    assert result.loss == 1.5
    assert result.bpc == pytest.approx(1.5 / math.log(2), rel=1e-12)
    assert result.perplexity == pytest.approx(math.exp(1.5), rel=1e-12)
    assert result.to_dict() == {
        "loss": 1.5,
        "bpc": result.bpc,
        "perplexity": result.perplexity,
        "chars": 20,
        "unknown_chars": 3,
        "unknown_symbol_chars": 0,
    }
    assert math.isnan(EvalResult(0.0, 0).loss)
    assert score_ids(make_model(), np.zeros(1, np.int64), streams=4).chars == 0


def test_an_untrained_uniform_model_scores_ln_v():
    model = make_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    result = score_ids(model, np.arange(50) % V, streams=3)
    assert result.loss == pytest.approx(math.log(V), rel=1e-6)
    assert result.bpc == pytest.approx(math.log2(V), rel=1e-6)
    assert result.perplexity == pytest.approx(V, rel=1e-6)


def make_checkpoint(model: CharRNN, vocab: Vocab) -> Checkpoint:
    config = RunConfig().replace(cell="lstm", layers=2, hidden=16, embed=8)
    return Checkpoint(config=config, vocab=vocab, model_state=model.state_dict())


def test_evaluate_files_counts_unknown_characters_and_leaves_them_out(tmp_path):
    vocab = Vocab(tuple(ord(c) for c in "\nabcdef"))
    model = make_model(vocab_size=vocab.size)
    checkpoint = make_checkpoint(model, vocab)
    first = tmp_path / "one.txt"
    first.write_text("abXcdeYY\nfab床\n", "utf-8")
    second = tmp_path / "two.txt"
    second.write_text("fedcba\nabc", "utf-8")
    result = evaluate_files(model, checkpoint, [first, second], None, streams=2)
    assert result.unknown_chars == 4
    clean_one = vocab.encode("abcde\nfab\n")
    clean_two = vocab.encode("fedcba\nabc")
    expected = score_ids(model, clean_one, 2).loss_sum + score_ids(model, clean_two, 2).loss_sum
    assert result.chars == (len(clean_one) - 1) + (len(clean_two) - 1)
    assert result.loss_sum == pytest.approx(expected, rel=1e-9)


def test_evaluate_files_errors(tmp_path):
    vocab = Vocab(tuple(ord(c) for c in "ab"))
    model = make_model(vocab_size=vocab.size)
    checkpoint = make_checkpoint(model, vocab)
    with pytest.raises(UsageError, match="not found"):
        evaluate_files(model, checkpoint, [tmp_path / "missing.txt"], None, streams=1)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("xyz a", "utf-8")
    with pytest.raises(CorpusError, match="nothing to score"):
        evaluate_files(model, checkpoint, [unknown], None, streams=1)


def test_dynamic_evaluation_scores_each_window_before_it_steps():
    model = make_model()
    ids = np.random.default_rng(1).integers(0, V, 60).astype(np.uint8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # A step too small to matter: exactly the static one-stream loss, window by window.
    still = evaluate.dynamic_score_ids(model, ids, window=8, lr=1e-12)
    assert still.chars == 59
    assert still.loss_sum == pytest.approx(hand_loss(model, ids), rel=1e-5)
    # The first window is scored before any step: its loss is the static one whatever the lr.
    first = evaluate.dynamic_score_ids(model, ids[:9], window=8, lr=100.0)
    assert first.loss_sum == pytest.approx(hand_loss(model, ids[:9]), rel=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy adapts


def test_dynamic_evaluation_adapts_to_a_repeating_text():
    model = make_model()
    ids = np.tile(np.array([0, 3, 1, 4, 1, 5, 2, 6], dtype=np.uint8), 40)
    static = score_ids(model, ids, streams=1)
    adapted = evaluate.dynamic_score_ids(model, ids, window=16, lr=2.0)
    assert adapted.chars == static.chars
    assert adapted.loss < static.loss - 0.25  # the model learns the cycle as it reads

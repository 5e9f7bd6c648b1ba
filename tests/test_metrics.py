"""Accuracy, top-5, macro precision/recall/F1 and confusions against values worked by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_cli import invoke

from charrnn.analysis.metrics import MetricsTally
from charrnn.commands import train_command
from charrnn.text.corpus import IGNORE_INDEX, Vocab

VOCAB = Vocab(tuple(map(ord, "abcdefg")))  # 7 symbols: top-5 can miss


def logits_ranking(*orders: str) -> torch.Tensor:
    """Logits (rows, 7) where each row ranks the characters in the order given."""
    rows = torch.zeros(len(orders), VOCAB.size)
    for row, order in enumerate(orders):
        for rank, char in enumerate(order):
            rows[row, VOCAB.symbols.index(ord(char))] = 10.0 - rank
    return rows


def ids(text: str) -> torch.Tensor:
    return torch.tensor([VOCAB.symbols.index(ord(c)) for c in text])


def test_metrics_match_the_hand_computed_values():
    # Targets a a b c b; top-1 predictions a b b b c; the last row ranks its target 'b' sixth.
    logits = logits_ranking("abcdefg", "bacdefg", "bacdefg", "bcadefg", "cadefbg")
    tally = MetricsTally(VOCAB.size)
    # Fed in two windows, one with IGNORE_INDEX padding that must not count.
    tally.update(logits[:2], ids("aa"))
    padded = torch.cat([logits[2:], logits[:1]])
    tally.update(padded.unsqueeze(0), torch.cat([ids("bcb"), torch.tensor([IGNORE_INDEX])])[None])
    metrics = tally.result(VOCAB)
    # a: 2 occurrences, 1 predicted, 1 hit -> P 1, R 1/2, F1 2/3
    # b: 2 occurrences, 3 predicted, 1 hit -> P 1/3, R 1/2, F1 2/5
    # c: 1 occurrence, 1 predicted, 0 hits -> P 0, R 0, F1 0
    assert metrics.accuracy == pytest.approx(2 / 5)
    assert metrics.top5_accuracy == pytest.approx(4 / 5)
    assert metrics.macro_precision == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert metrics.macro_recall == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 2 / 5 + 0) / 3)
    table = {s.char: (s.count, s.predicted, s.precision, s.recall, s.f1) for s in metrics.per_char}
    assert table["b"] == pytest.approx((2, 3, 1 / 3, 1 / 2, 2 / 5))
    assert [s.char for s in metrics.per_char] == ["a", "b", "c"]  # by count, then by id
    pairs = [(c.target, c.predicted, c.count, c.share) for c in metrics.confusions]
    assert pairs == [("a", "b", 1, 0.5), ("b", "c", 1, 0.5), ("c", "b", 1, 1.0)]


def test_unknown_symbol_is_labelled_and_characters_never_predicted_score_zero():
    vocab = Vocab((ord("a"), ord("b"), 0xFFFD), unknown=0xFFFD)
    tally = MetricsTally(3)
    tally.update(torch.tensor([[5.0, 0, 0], [5.0, 0, 0]]), torch.tensor([0, 2]))
    metrics = tally.result(vocab)
    assert [(s.char, s.precision, s.f1) for s in metrics.per_char] == [
        ("a", 0.5, pytest.approx(2 / 3)), ("<unk>", 0.0, 0.0),
    ]  # fmt: skip
    assert metrics.confusions[0].target == "<unk>"


def test_eval_by_char_and_dynamic_through_the_cli(tmp_path, write_corpus, tiny_config):
    train_command([write_corpus()], tiny_config(max_steps=30), out=tmp_path / "run")
    result = invoke("eval", "--checkpoint", "run", "--json", "--by-char", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    rows = scores["per_char"]
    assert sum(r["count"] for r in rows) == scores["chars"]
    assert sum(r["predicted"] for r in rows) <= scores["chars"]  # predicted chars may not occur
    hits = sum(r["recall"] * r["count"] for r in rows)
    assert hits / scores["chars"] == pytest.approx(scores["accuracy"])
    assert scores["macro_recall"] == pytest.approx(sum(r["recall"] for r in rows) / len(rows))
    assert 0 < scores["accuracy"] <= scores["top5_accuracy"] <= 1
    assert 1 <= len(scores["confusions"]) <= 10
    table = invoke("eval", "--checkpoint", "run", "--by-char", cwd=tmp_path)
    assert "most confused" in table.stdout and "macro F1" in table.stdout
    # Dynamic evaluation: its own keys, the static figures unchanged, the checkpoint untouched.
    saved = (tmp_path / "run" / "best.pt").read_bytes()
    dynamic = invoke("eval", "--checkpoint", "run", "--json", "--dynamic", cwd=tmp_path)
    assert dynamic.returncode == 0, dynamic.stderr
    adapted = json.loads(dynamic.stdout)
    assert adapted["loss"] == scores["loss"] and adapted["accuracy"] == scores["accuracy"]
    assert adapted["dynamic_loss"] != adapted["loss"] and adapted["dynamic_loss"] > 0
    assert adapted["dynamic_bpc"] == pytest.approx(adapted["dynamic_loss"] / math.log(2))
    assert (tmp_path / "run" / "best.pt").read_bytes() == saved

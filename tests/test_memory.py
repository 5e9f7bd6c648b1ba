"""analysis/memory.py and `--memory`: the batched curves equal straightforward references
computed one prediction at a time, the gate timescales read the right gate, and on a corpus
with copies at a known lag L an LSTM that learned it shows an effective context >= L with the
drop at k = L, while a vanilla RNN given a lag it cannot bridge shows no drop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_cli import assert_one_error_line, invoke

from charrnn.analysis.memory import (
    ContextPoint,
    context_ks,
    cut_losses,
    decay_per_100,
    effective_context,
    full_losses,
    gate_timescales,
    gradient_norms,
    memory_report,
)
from charrnn.analysis.scoring import score_ids, score_text
from charrnn.commands import train_command
from charrnn.config import ModelConfig
from charrnn.model.network import CharRNN
from charrnn.text.corpus import Vocab

CELLS = ["lstm", "gru", "rnn", "mingru"]


def tiny(cell: str, vocab: int = 7, dtype: torch.dtype = torch.float64) -> CharRNN:
    torch.manual_seed(5)
    config = ModelConfig(cell=cell, layers=2, hidden=6, embed=5, dropout=0.0)
    return CharRNN(config, vocab).to(dtype).eval()


def random_ids(n: int, vocab: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n)


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_norms_match_autograd_one_prediction_at_a_time(cell):
    model, ids, lag = tiny(cell), random_ids(400), 24
    ends = np.array([lag, 100, 333, 399])
    batched = gradient_norms(model, ids, ends, lag)
    for row, t in enumerate(ends.tolist()):
        leaves = [
            model.embed.weight[int(i)].detach().clone().requires_grad_(True)
            for i in ids[t - lag : t]
        ]
        features, _ = model.rnn(torch.stack(leaves)[None])
        log_p = torch.log_softmax(model.head(features[0, -1]), dim=-1)[int(ids[t])]
        grads = torch.autograd.grad(log_p, leaves)
        reference = np.array([float(grads[lag - k].norm()) for k in range(1, lag + 1)])
        np.testing.assert_allclose(batched[row], reference, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_cut_losses_match_the_model_run_over_exactly_the_last_k(cell):
    model, ids = tiny(cell), random_ids(600)
    starts, ks = np.array([0, 17, 300, 471]), context_ks(100)
    batched = cut_losses(model, ids, starts, ks, torch.device("cpu"))
    with torch.no_grad():
        for row, s in enumerate(starts.tolist()):
            for col, k in enumerate(ks):
                logits, _ = model(torch.from_numpy(ids[s : s + k])[None])
                loss = F.cross_entropy(logits[0, -1:], torch.tensor([int(ids[s + k])]))
                assert batched[row, col] == pytest.approx(float(loss), rel=1e-9)


def test_full_losses_are_evals_per_character_losses():
    model = tiny("lstm", dtype=torch.float32)
    ids = random_ids(1500)
    one, carried = full_losses(model, ids, max_context=400)  # 1499 // 1600: one stream
    vocab = Vocab(tuple(range(97, 104)))
    reference = score_text(model, vocab, vocab.decode(ids))
    np.testing.assert_allclose(one[1:], [loss for _, loss in reference.per_char], rtol=1e-5)
    assert math.isnan(one[0]) and carried[1:].tolist() == list(range(1, 1500))
    many, carried = full_losses(model, ids, max_context=40)  # 1499 // 160: 9 streams
    assert many[1:].sum() == pytest.approx(score_ids(model, ids, 9).loss_sum, rel=1e-5)
    assert carried.min() == 0 and carried.max() == math.ceil(1499 / 9)


@pytest.mark.parametrize(
    ("cell", "gate", "keep"),
    [("lstm", 1, lambda s: s), ("gru", 1, lambda s: s), ("mingru", 0, lambda s: 1 - s)],
)
def test_timescales_read_the_keep_factor(cell, gate, keep):
    """With the weights zero and the keep gate's bias b, the gate is sigmoid(b) at every step:
    the LSTM's forget gate (second block), the GRU's update gate z (h' = (1-z) n + z h, second
    block) and the minGRU's 1 - z (first block)."""
    model = tiny(cell, dtype=torch.float32)
    hidden = model.config.hidden
    bias = torch.linspace(-2, 4, hidden)
    with torch.no_grad():
        for name, parameter in model.rnn.named_parameters():
            parameter.zero_()
            if name.startswith("bias_ih"):
                parameter[gate * hidden : (gate + 1) * hidden] = bias
    label, scales, chars = gate_timescales(model, random_ids(700))
    expected = (-1 / torch.log(keep(torch.sigmoid(bias.double())))).tolist() * 2  # both layers
    assert chars == 699 and label is not None  # every character that predicts one
    np.testing.assert_allclose(scales, expected, rtol=1e-4)
    assert gate_timescales(tiny("rnn"), random_ids(50)) == (None, [], 0)


def test_decay_and_effective_context_from_known_curves():
    norms = 10.0 ** (-np.arange(1, 301) / 100.0)  # a factor 10 per 100 characters
    assert decay_per_100(norms) == pytest.approx(0.1)
    norms[200:] = 0.0  # underflow: left out of the fit
    assert decay_per_100(norms) == pytest.approx(0.1)
    curve = ((1, 0.5), (2, 0.02), (4, 0.009), (8, 0.0))
    points = [ContextPoint(k, 2.0 + gap, 2.0, 0.0, 0.0) for k, gap in curve]
    assert effective_context(points) == 4
    assert effective_context([ContextPoint(k, 0.5 + 0.006, 0.5, 0, 0) for k in (1, 2)]) is None


# ----------------------------------------------------------------------------- known answers


def lag_corpus(n: int, lag: int, letters: int, rng: np.random.Generator) -> np.ndarray:
    """Each character is a fresh random letter (ids 0..letters-1) or, half the time, a copy
    of the letter `lag` characters earlier marked as such (ids letters..2*letters-1): a copy
    is fully determined by the character exactly `lag` back, and by nothing nearer."""
    fresh = rng.integers(0, letters, n)
    copies = rng.random(n) < 0.5
    out = fresh.copy()
    for t in range(lag, n):
        if copies[t]:
            out[t] = out[t - lag] % letters + letters
    return out


def train_on_lag(cell: str, lag: int, steps: int, hidden: int) -> tuple[CharRNN, np.ndarray]:
    """A one-layer model trained `steps` Adam steps on windows of 64 from a zero state (so it
    knows a zero state as a start, which is what cutting the context gives it)."""
    rng = np.random.default_rng(0)
    train, held_out = lag_corpus(60_000, lag, 4, rng), lag_corpus(12_000, lag, 4, rng)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell=cell, layers=1, hidden=hidden, embed=16, dropout=0.0), 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        starts = rng.integers(0, train.shape[0] - 65, 32)
        window = torch.from_numpy(np.stack([train[s : s + 65] for s in starts]))
        logits, _ = model(window[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 8), window[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval(), held_out


def gaps(report) -> dict[int, float]:
    return {p.k: p.gap for p in report.context}


def test_an_lstm_that_learned_a_lag_has_that_context_and_a_drop_at_it():
    lag = 8
    model, held_out = train_on_lag("lstm", lag, steps=300, hidden=64)
    report = memory_report(model, held_out, max_context=32, max_lag=16, positions=384)
    by_k = gaps(report)
    assert report.effective_context is not None and report.effective_context >= lag
    assert by_k[lag // 2] > 0.3  # a copy cannot be predicted from nearer characters
    assert by_k[lag] < min(0.15, by_k[lag // 2] / 4)  # the drop, at k = L
    assert abs(by_k[4 * lag]) < 0.02  # and then nothing more to gain
    assert report.full_loss < math.log(8) - 0.3  # it learned the copies


def test_a_vanilla_rnn_on_a_lag_it_cannot_bridge_shows_no_drop():
    lag = 32
    model, held_out = train_on_lag("rnn", lag, steps=150, hidden=32)
    report = memory_report(model, held_out, max_context=64, max_lag=64, positions=384)
    by_k = gaps(report)
    assert by_k[lag // 2] - by_k[lag] < 0.02  # nothing more to gain at k = L
    assert report.effective_context is not None and report.effective_context < lag
    assert report.full_loss > math.log(8) - 0.1  # the copies stayed unpredictable
    assert report.keep_gate is None and report.timescales == []
    norms = np.array(report.gradient_norms)
    assert norms[lag - 1] < 1e-3 * norms[0]  # the gradient from L back has vanished


# ----------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory, tiny_config, repetitive_text):
    root = tmp_path_factory.mktemp("memory")
    (root / "corpus.txt").write_text(repetitive_text(30_000), "utf-8")
    (root / "short.txt").write_text(repetitive_text(1000), "utf-8")
    config = tiny_config(max_steps=4, eval_every=4)
    train_command([root / "corpus.txt"], config, out=root / "run", cache_dir=root / ".cache")
    return root


def test_inspect_memory_json_html_and_plot(memory_run):
    pytest.importorskip("matplotlib")
    result = invoke(
        "inspect", "--checkpoint", "run", "corpus.txt", "--memory", "--json", "--show", "50",
        "--html", "page.html", "--plot", "memory.png", cwd=memory_run,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    memory = json.loads(result.stdout)["memory"]
    assert [p["k"] for p in memory["context"]] == [2**j for j in range(11)]
    assert len(memory["gradient_norms"]) == 512 and memory["keep_gate"] == "forget gate f"
    assert memory["positions"] == 256 and len(memory["timescales"]) == 16
    assert memory["effective_context"] in [2**j for j in range(11)] + [None]
    page = (memory_run / "page.html").read_text("utf-8")
    assert "Effective context" in page and "forget gate f" in page
    assert (memory_run / "memory.png").read_bytes()[:4] == b"\x89PNG"


def test_inspect_memory_defaults_to_the_validation_split(memory_run):
    result = invoke("inspect", "--checkpoint", "run", "--memory", "--no-color", cwd=memory_run)
    assert result.returncode == 0, result.stderr
    assert "the validation split" in result.stdout and "effective context:" in result.stdout
    assert "gradient decay per 100 characters: x" in result.stdout


def test_compare_memory_puts_the_runs_side_by_side(memory_run, tiny_config):
    train_command(
        [memory_run / "corpus.txt"], tiny_config(max_steps=4, eval_every=4, cell="rnn"),
        out=memory_run / "rnn", cache_dir=memory_run / ".cache",
    )  # fmt: skip
    result = invoke("compare", "run", "rnn", "--memory", "--json", cwd=memory_run)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [r["memory"]["cell"] for r in runs] == ["lstm", "rnn"]
    assert runs[1]["memory"]["keep_gate"] is None
    table = invoke("compare", "run", "rnn", "--memory", cwd=memory_run)
    assert "memory, on each run's validation split" in table.stdout
    assert table.stdout.count("▁") >= 2  # a sparkline per run


def test_compare_memory_is_cached_in_the_run_until_its_checkpoint_changes(memory_run):
    first = json.loads(invoke("compare", "run", "--memory", "--json", cwd=memory_run).stdout)
    cache = memory_run / "run" / "memory.json"
    saved = json.loads(cache.read_text("utf-8"))
    assert saved["memory"] == first[0]["memory"]
    saved["memory"]["effective_context"] = 12345  # what only the cache can say
    cache.write_text(json.dumps(saved), "utf-8")
    again = json.loads(invoke("compare", "run", "--memory", "--json", cwd=memory_run).stdout)
    assert again[0]["memory"]["effective_context"] == 12345
    best = memory_run / "run" / "best.pt"
    best.write_bytes(best.read_bytes())  # a new checkpoint file: the cache no longer holds
    fresh = json.loads(invoke("compare", "run", "--memory", "--json", cwd=memory_run).stdout)
    assert fresh[0]["memory"] == first[0]["memory"]


def test_memory_on_a_text_too_short_is_one_error_line(memory_run):
    result = invoke("inspect", "--checkpoint", "run", "short.txt", "--memory", cwd=memory_run)
    line = assert_one_error_line(result, 1)
    assert "at least 2050 characters" in line


def test_the_python_api_returns_the_report(memory_run):
    import charrnn

    model = charrnn.load(memory_run / "run")
    report = model.memory(max_context=16, max_lag=8, positions=32, gradient_positions=8)
    assert [p.k for p in report.context] == [1, 2, 4, 8, 16] and report.positions == 32
    assert len(report.gradient_norms) == 8 and report.to_dict()["effective_context"] in (
        1, 2, 4, 8, 16, None,
    )  # fmt: skip


def test_one_position_has_no_standard_error_and_every_view_still_draws(memory_run, tmp_path):
    from rich.console import Console

    import charrnn
    from charrnn.analysis.inspect_view import memory_html, memory_tables

    report = charrnn.load(memory_run / "run").memory(
        max_context=8, max_lag=4, positions=1, gradient_positions=1
    )
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))  # strict JSON
    assert data["context"][0]["stderr"] is None
    console = Console(width=100, record=True)
    console.print(memory_tables(data))
    assert "effective context" in console.export_text()
    assert "Effective context" in memory_html(data)
    pytest.importorskip("matplotlib")
    from charrnn.analysis.plot import plot_memory

    assert plot_memory([("one", data)], tmp_path / "one.svg").read_text().startswith("<?xml")

"""inspection.py and `charrnn inspect`: unit values and gates equal the fused layers' arithmetic,
per-character losses sum to `eval`'s total, features are what they say, and `--find` recovers
units planted by hand."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from test_cli import assert_one_error_line, invoke

from charrnn.analysis.inspection import (
    FEATURES,
    WINDOW,
    Tracer,
    inspect_symbols,
    linear_scan,
    text_features,
)
from charrnn.config import ModelConfig, RunConfig
from charrnn.model.checkpoint import Checkpoint, save_checkpoint
from charrnn.model.network import CharRNN
from charrnn.text.corpus import Vocab, symbols_of

TEXT = "(a b) [c]\nDE:\n12 x\n" * 8


def random_model(cell: str, layers: int = 2, vocab_size: int = 12, hidden: int = 16) -> CharRNN:
    torch.manual_seed(3)
    return CharRNN(ModelConfig(cell=cell, layers=layers, hidden=hidden, embed=8), vocab_size).eval()


def trace_all(model: CharRNN, ids: torch.Tensor):
    """Values and gates of every position, window by window as `inspect` runs."""
    tracer = Tracer(model)
    traces = [tracer.run(ids[s : s + WINDOW]) for s in range(0, ids.shape[0], WINDOW)]
    values = {k: torch.cat([t.values[k] for t in traces]) for k in traces[0].values}
    gates = {k: torch.cat([t.gates[k] for t in traces]) for k in traces[0].gates}
    return values, gates, tracer.state


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru"])
def test_unit_values_equal_the_fused_layers_across_windows(cell):
    model = random_model(cell)
    ids = torch.randint(0, 12, (2 * WINDOW + 77,), generator=torch.Generator().manual_seed(1))
    values, _, _ = trace_all(model, ids)
    with torch.no_grad():
        outputs, final = model.rnn(model.embed(ids[None]))
    torch.testing.assert_close(values["h"][:, -1], outputs[0], rtol=0, atol=1e-5)
    final_h = final[0] if cell == "lstm" else final
    torch.testing.assert_close(values["h"][-1], final_h[:, 0], rtol=0, atol=1e-5)  # both layers
    if cell == "lstm":
        torch.testing.assert_close(values["c"][-1], final[1][:, 0], rtol=0, atol=1e-5)
        # mid-text too: the state after position 600 is the fused state over the first 601
        with torch.no_grad():
            _, (_, c_600) = model.rnn(model.embed(ids[None, :601]))
        torch.testing.assert_close(values["c"][600], c_600[:, 0], rtol=0, atol=1e-5)


def test_lstm_gates_rebuild_the_fused_outputs():
    model = random_model("lstm", layers=1)
    ids = torch.randint(0, 12, (WINDOW + 40,), generator=torch.Generator().manual_seed(2))
    values, gates, _ = trace_all(model, ids)
    with torch.no_grad():
        outputs, _ = model.rnn(model.embed(ids[None]))
    c = values["c"][:, 0]
    # h = o * tanh(c) with the recorded output gate and cell state gives the fused outputs
    torch.testing.assert_close(gates["output"][:, 0] * c.tanh(), outputs[0], rtol=0, atol=1e-5)
    # c_t - f_t c_(t-1) = i_t g_t with |g| < 1: the recorded input and forget gates bound it
    c_before = torch.cat([torch.zeros(1, c.shape[1]), c[:-1]])
    candidate = (c - gates["forget"][:, 0] * c_before) / gates["input"][:, 0]
    assert candidate.abs().max() <= 1.0 + 1e-4
    assert all(((g >= 0) & (g <= 1)).all() for g in gates.values())


def test_gru_gates_rebuild_the_fused_outputs():
    model = random_model("gru", layers=1)
    layer = model.rnn
    ids = torch.randint(0, 12, (300,), generator=torch.Generator().manual_seed(4))
    values, gates, _ = trace_all(model, ids)
    h = values["h"][:, 0]
    h_before = torch.cat([torch.zeros(1, h.shape[1]), h[:-1]])
    with torch.no_grad():
        x = model.embed(ids)
        hidden = layer.hidden_size
        n_in = x @ layer.weight_ih_l0[2 * hidden :].t() + layer.bias_ih_l0[2 * hidden :]
        n_hid = h_before @ layer.weight_hh_l0[2 * hidden :].t() + layer.bias_hh_l0[2 * hidden :]
        candidate = torch.tanh(n_in + gates["reset"][:, 0] * n_hid)
        update = gates["update"][:, 0]
        rebuilt = (1 - update) * candidate + update * h_before
        outputs, _ = layer(x[None])
    torch.testing.assert_close(rebuilt, outputs[0], rtol=0, atol=1e-5)


def test_linear_scan_equals_the_recurrence():
    generator = torch.Generator().manual_seed(5)
    decay, add = torch.rand(37, 3, generator=generator), torch.randn(37, 3, generator=generator)
    start = torch.randn(3, generator=generator)
    expected, x = [], start
    for t in range(37):
        x = decay[t] * x + add[t]
        expected.append(x)
    torch.testing.assert_close(linear_scan(decay, add, start), torch.stack(expected))


def test_text_features_on_a_small_text():
    text = 'AB:\n"x(y)" 7\n'
    f = text_features(symbols_of(text, False))
    column = {name: f[:, k].tolist() for k, name in enumerate(FEATURES)}
    assert column["line_position"] == [1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0]
    assert column["quote"] == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert column["bracket_depth"] == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    assert column["line_start"] == [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert column["word_start"] == [1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    assert column["speaker_line"] == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert column["digit"] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]


def test_a_closing_bracket_with_none_open_leaves_the_depth_at_zero():
    f = text_features(symbols_of(")(()", False))
    assert f[:, FEATURES.index("bracket_depth")].tolist() == [0, 1, 2, 1]


# ----------------------------------------------------------------------------- through the CLI


def write_checkpoint(path, model: CharRNN, vocab: Vocab) -> None:
    config = RunConfig(model=model.config)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(Checkpoint(config, vocab, state), path)


def text_vocab(text: str) -> Vocab:
    return Vocab(tuple(sorted({ord(c) for c in text})))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_per_character_losses_sum_to_eval_total(tmp_path, cell):
    vocab = text_vocab(TEXT)
    model = random_model(cell, vocab_size=vocab.size)
    write_checkpoint(tmp_path / "model.pt", model, vocab)
    # €: outside the vocabulary, skipped by both; 1,400 characters cross two windows
    text = (TEXT * 9)[:700] + "€" + (TEXT * 9)[:700]
    (tmp_path / "text.txt").write_text(text, "utf-8")
    result = invoke("inspect", "--checkpoint", "model.pt", "text.txt", "--json", "--show", "0",
                    "--device", "cpu", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    inspected = json.loads(result.stdout)
    result = invoke("eval", "--checkpoint", "model.pt", "text.txt", "--streams", "1", "--json",
                    "--device", "cpu", cwd=tmp_path)  # fmt: skip
    evaluated = json.loads(result.stdout)
    assert inspected["chars"] == evaluated["chars"] == 1399
    assert inspected["unknown_chars"] == evaluated["unknown_chars"] == 1
    assert inspected["loss_sum"] == pytest.approx(evaluated["loss"] * evaluated["chars"], rel=1e-6)
    bits = [p["bits"] for p in inspected["positions"] if p["bits"] is not None]
    assert sum(bits) * math.log(2) == pytest.approx(inspected["loss_sum"], rel=1e-4)
    unknown = inspected["positions"][700]
    assert unknown == {"char": "€", "known": False, "bits": None, "top5": []}
    first = inspected["positions"][0]
    assert first["bits"] is None  # nothing predicted the first character
    top5 = inspected["positions"][1]["top5"]
    assert len(top5) == 5 and all(a[1] >= b[1] for a, b in zip(top5, top5[1:], strict=False))


def test_json_values_are_the_chosen_units_and_stdin_works(tmp_path, monkeypatch):
    vocab = text_vocab(TEXT)
    model = random_model("lstm", layers=2, vocab_size=vocab.size)
    write_checkpoint(tmp_path / "model.pt", model, vocab)
    ids = torch.tensor([vocab.symbols.index(ord(c)) for c in TEXT])
    values, _, _ = trace_all(model, ids)
    for state in ("c", "h"):
        result = _invoke_stdin(
            tmp_path, TEXT, "--cell-index", "1:3", "--state", state, "--json", "--show", "0"
        )
        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        shown = [p["value"] for p in data["positions"]]
        np.testing.assert_allclose(shown, values[state][:, 1, 3].numpy(), atol=1e-5)
        assert data["unit"] == {"layer": 1, "unit": 3, "state": state}


def _invoke_stdin(cwd, text: str, *args: str):
    from typer.testing import CliRunner

    from charrnn.cli import app

    monkeypatch_cwd = pytest.MonkeyPatch()
    monkeypatch_cwd.chdir(cwd)
    try:
        return CliRunner().invoke(
            app, ["inspect", "--checkpoint", "model.pt", "-", "--device", "cpu", *args], input=text
        )
    finally:
        monkeypatch_cwd.undo()


def planted_model(vocab: Vocab) -> CharRNN:
    """An LSTM whose cell 2 counts bracket depth and cell 5 the position in the line; the other
    units have small random weights."""
    model = random_model("lstm", layers=1, vocab_size=vocab.size, hidden=8)
    hidden = 8
    lstm = model.rnn
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.3)
        embed = model.embed.weight
        embed[:, :2] = 0.0
        embed[vocab.symbols.index(ord("(")), 0] = 5.0
        embed[vocab.symbols.index(ord(")")), 0] = -5.0
        embed[vocab.symbols.index(ord("\n")), 1] = 1.0
        rows = {"i": 0, "f": hidden, "g": 2 * hidden}
        for unit in (2, 5):
            for gate in rows.values():
                lstm.weight_ih_l0[gate + unit] = 0.0
                lstm.weight_hh_l0[gate + unit] = 0.0
                lstm.bias_hh_l0[gate + unit] = 0.0
            lstm.bias_ih_l0[rows["i"] + unit] = 20.0  # always write
            lstm.bias_ih_l0[rows["f"] + unit] = 20.0  # never forget...
        lstm.weight_ih_l0[rows["g"] + 2, 0] = 1.0  # depth: +1 at "(", -1 at ")"
        lstm.bias_ih_l0[rows["g"] + 2] = 0.0
        lstm.weight_ih_l0[rows["f"] + 5, 1] = -40.0  # ...except the line counter at a newline
        lstm.bias_ih_l0[rows["g"] + 5] = 0.5  # +tanh(0.5) per character
    return model


def test_find_ranks_the_planted_units_first(tmp_path):
    rng = np.random.default_rng(0)
    pieces, depth = [], 0
    for _ in range(3000):  # random words, nested brackets and lines of random length
        choice = rng.random()
        if choice < 0.08 and depth < 4:
            pieces.append("(")
            depth += 1
        elif choice < 0.16 and depth > 0:
            pieces.append(")")
            depth -= 1
        elif choice < 0.22:
            pieces.append("\n")
        else:
            pieces.append(rng.choice(list("abc de")))
    text = "".join(pieces)
    vocab = text_vocab(text)
    write_checkpoint(tmp_path / "model.pt", planted_model(vocab), vocab)
    (tmp_path / "text.txt").write_text(text, "utf-8")
    result = invoke("inspect", "--checkpoint", "model.pt", "text.txt", "--find", "--find-top",
                    "3", "--json", "--device", "cpu", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["find"]
    assert set(rows[0]) >= {"feature", "layer", "unit", "correlation"}
    best = {}
    for row in rows:
        best.setdefault(row["feature"], row)
    assert (best["bracket_depth"]["unit"], best["bracket_depth"]["state"]) == (2, "c")
    assert (best["line_position"]["unit"], best["line_position"]["state"]) == (5, "c")
    assert best["bracket_depth"]["correlation"] > 0.99
    assert best["line_position"]["correlation"] > 0.99
    assert "quote" not in best  # the text has no quotes: no correlation to rank
    # the terminal table lists them too, without colour codes when not a TTY
    result = invoke("inspect", "--checkpoint", "model.pt", "text.txt", "--find", "--device",
                    "cpu", cwd=tmp_path)  # fmt: skip
    assert "\x1b[" not in result.stdout
    assert re.search(r"bracket_depth\s+│\s+0:2\s+│\s+c\s+│\s+\+(1\.000|0\.99)", result.stdout)


def test_colour_only_on_a_terminal(tmp_path, monkeypatch):
    vocab = text_vocab(TEXT)
    write_checkpoint(tmp_path / "model.pt", random_model("rnn", 1, vocab.size), vocab)
    (tmp_path / "text.txt").write_text(TEXT, "utf-8")
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats the output as a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    args = ["inspect", "--checkpoint", "model.pt", "text.txt", "--device", "cpu"]
    coloured = invoke(*args, cwd=tmp_path)
    plain = invoke(*args, "--no-color", cwd=tmp_path)
    assert coloured.returncode == plain.returncode == 0
    assert "\x1b[" in coloured.stdout and "\x1b[" not in plain.stdout
    assert TEXT.splitlines()[0] in plain.stdout
    assert "bits per character" in plain.stdout
    assert "gate saturation" not in plain.stdout  # a plain RNN has no gates


def test_gate_statistics_count_saturated_steps():
    vocab = text_vocab(TEXT)
    model = planted_model(vocab)
    symbols = symbols_of(TEXT, False)
    inspection = inspect_symbols(model, vocab, symbols, show=0, find=False)
    forget = next(row for row in inspection.gates if row["gate"] == "forget")
    # the two planted units keep their forget gate open (sigmoid(20)) except unit 5 at newlines
    newlines = TEXT.count("\n")
    assert forget["unit_open"][2] == 1.0
    assert forget["unit_open"][5] == pytest.approx(1 - newlines / len(TEXT), abs=1e-4)
    assert forget["unit_closed"][5] == pytest.approx(newlines / len(TEXT), abs=1e-4)
    assert sum(forget["histogram"]) == pytest.approx(1.0, abs=1e-4)
    assert {row["gate"] for row in inspection.gates} == {"input", "forget", "output"}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--cell-index", "1:0"], "--cell-index 1:0: the model has 1 layer(s) of 16 units"),
        (["--cell-index", "zero"], "--cell-index zero: expected LAYER:UNIT"),
        (["--state", "c"], "--state c: a GRU has only h"),
        (["--show", "-1"], "--show must be >= 0"),
    ],
)
def test_bad_inspect_options_are_one_error_line(tmp_path, args, fragment):
    vocab = text_vocab(TEXT)
    write_checkpoint(tmp_path / "model.pt", random_model("gru", 1, vocab.size), vocab)
    (tmp_path / "text.txt").write_text(TEXT, "utf-8")
    result = invoke("inspect", "--checkpoint", "model.pt", "text.txt", *args, cwd=tmp_path)
    assert fragment in assert_one_error_line(result, 2)


def _speaker_text(n_lines: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_lines):
        kind = rng.integers(0, 4)
        if kind == 0:
            lines.append(rng.choice(["ROMEO:", "FIRST CITIZEN:", "KING HENRY VI:", "Nurse:"]))
        elif kind == 1:
            lines.append('"(a [b" c) 12' * int(rng.integers(0, 3)))
        else:
            lines.append("word " * int(rng.integers(0, 20)))
    return "\n".join(lines)


@pytest.mark.parametrize("cut", [5, 64, 100])
def test_features_read_window_by_window_equal_the_whole_texts(cut):
    from charrnn.analysis.inspection import MAX_NAME_LINE, FeatureStream

    s = symbols_of(_speaker_text(150, cut), False).astype(np.int64)
    whole = text_features(s)
    stream = FeatureStream()
    parts = [
        stream.features(s[k : k + cut], s[k + cut : k + cut + MAX_NAME_LINE + 1])
        for k in range(0, s.shape[0], cut)
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert whole[:, FEATURES.index("speaker_line")].sum() > 0


def test_spans_found_window_by_window_are_the_best_non_overlapping_runs():
    from charrnn.analysis.inspection import SPAN_CHARS, SPANS, _SpanFinder

    rng = np.random.default_rng(7)
    bits = rng.exponential(1.0, 3000).astype(np.float32)
    bits[1500:1510] += 20  # two bursts, one crossing a window edge
    bits[510:515] += 30
    finder = _SpanFinder()
    for k in range(0, 3000, 512):
        finder.add(bits[k : k + 512], np.zeros(len(bits[k : k + 512]), dtype=np.int64))
    spans = finder.result(text_vocab("a"))
    sums = np.convolve(bits.astype(np.float64), np.ones(SPAN_CHARS), mode="valid")
    taken: list[int] = []
    for start in np.argsort(-sums, kind="stable").tolist():
        if all(abs(start - other) >= SPAN_CHARS for other in taken):
            taken.append(start)
    assert [s["start"] - 1 for s in spans] == taken[:SPANS]  # positions count from 1
    assert spans[0]["bits"] == pytest.approx(sums[taken[0]])


def test_the_text_read_in_pieces_gives_the_same_inspection():
    text = _speaker_text(120, 3)
    vocab = text_vocab(text)
    model = random_model("lstm", layers=2, vocab_size=vocab.size)
    s = symbols_of(text, False)
    whole = inspect_symbols(model, vocab, s, show=300, find=True)
    pieces = inspect_symbols(
        model, vocab, (s[k : k + 97] for k in range(0, len(s), 97)), show=300, find=True
    )
    assert pieces.loss_sum == pytest.approx(whole.loss_sum, rel=1e-9)
    assert pieces.spans == whole.spans
    assert [(t.feature, t.unit, round(t.correlation, 6)) for t in pieces.trackers] == [
        (t.feature, t.unit, round(t.correlation, 6)) for t in whole.trackers
    ]
    np.testing.assert_array_equal(pieces.symbols, whole.symbols)
    np.testing.assert_allclose(pieces.bits, whole.bits, equal_nan=True)
    np.testing.assert_array_equal(pieces.top_ids, whole.top_ids)
    np.testing.assert_allclose(pieces.values["c"], whole.values["c"], equal_nan=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inspection_equals_the_cpu_one():
    text = _speaker_text(60, 1)
    vocab = text_vocab(text)
    model = random_model("lstm", layers=2, vocab_size=vocab.size)
    s = symbols_of(text, False)
    on_cpu = inspect_symbols(model, vocab, s, show=0, find=True)
    on_gpu = inspect_symbols(model.to("cuda"), vocab, s, show=0, find=True, device="cuda")
    assert on_gpu.loss_sum == pytest.approx(on_cpu.loss_sum, rel=1e-4)
    np.testing.assert_allclose(on_gpu.values["c"], on_cpu.values["c"], atol=1e-4)
    assert on_gpu.trackers[0].unit == on_cpu.trackers[0].unit

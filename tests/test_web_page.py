"""`charrnn export --format html`: the page, opened from disk in headless Chromium, computes what
PyTorch computes (probabilities to 1e-4, the same greedy text) and carries its weights inside."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_cli import invoke

from charrnn.analysis.inspect_view import json_report
from charrnn.commands import InspectOptions, inspect_command, sample_command, train_command
from charrnn.config import SampleConfig
from charrnn.errors import UsageError
from charrnn.generation.sampling import collect
from charrnn.model.web_page import check_cell

PRIME = "the quick brown fox, "
GREEDY_CHARS = 240
CHROMIUM = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
     if shutil.which(name)),
    None,
)  # fmt: skip
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium (apt-get install chromium)"
)


def open_page(page: Path, spec: dict[str, Any], profile: Path) -> dict[str, Any]:
    """Open `page` from disk in headless Chromium with its test hook; the JSON it wrote."""
    url = page.resolve().as_uri() + "#test=" + urllib.parse.quote(json.dumps(spec))
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'<pre id="test-result"[^>]*>([^<]*)</pre>', result.stdout)
    assert found and found.group(1), f"the page wrote no result: {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, repetitive_text) -> Path:
    path = tmp_path_factory.mktemp("page") / "corpus.txt"
    path.write_text(repetitive_text(6000), "utf-8")
    return path


def train_small(corpus: Path, tiny_config, cell: str, root: Path, **extra: Any) -> Path:
    config = tiny_config(
        cell=cell, layers=2, hidden=32, embed=16, max_steps=30, eval_every=30, lr=0.02, seed=3,
        **extra,
    )  # fmt: skip
    train_command([corpus], config, out=root / cell, cache_dir=corpus.parent / ".cache")
    return root / cell


def python_view(checkpoint: Path, prime_file: Path) -> tuple[list[dict], str]:
    """`charrnn inspect --json`'s positions and `charrnn sample --greedy`'s continuation."""
    outcome = inspect_command(
        checkpoint, prime_file, InspectOptions(show=0, json=True), device_name="cpu", threads=1
    )
    positions = json_report(outcome.inspection, None)["positions"]
    greedy = SampleConfig(length=GREEDY_CHARS, greedy=True)
    text = collect(sample_command(checkpoint, PRIME, greedy, "cpu", threads=1), 1)[0]
    return positions, text[len(PRIME) :]


@needs_chromium
@pytest.mark.parametrize(
    ("cell", "flags"),
    [
        ("lstm", ["--quantize", "int8"]),
        ("lstm", []),  # the default: float16 weights from a float32 checkpoint
        pytest.param("gru", ["--dtype", "float16"], marks=pytest.mark.slow),
        pytest.param("rnn", [], marks=pytest.mark.slow),
        pytest.param("rnn-relu", ["--quantize", "int8", "--dtype", "bfloat16"],
                     marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_the_page_matches_inspect_probabilities_and_greedy_sample(
    corpus, tiny_config, tmp_path, cell, flags
):
    extra = {"nonlinearity": "relu"} if cell == "rnn-relu" else {}
    run = train_small(corpus, tiny_config, cell.split("-")[0], tmp_path, **extra)
    page, exported = tmp_path / "model.html", tmp_path / "model.pt"
    # Without flags the page holds float16 weights: the .pt export that matches it is float16.
    pt_flags = flags or ["--dtype", "float16"]
    for output, fmt, given in ((page, "html", flags), (exported, "pt", pt_flags)):
        result = invoke(
            "export", "--checkpoint", run, "-o", output, "--format", fmt, *given, "--json",
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output_bytes"] == exported.stat().st_size
    # The weights as bytes: the page is the matching export's size and a fixed page.
    assert page.stat().st_size < 1.03 * exported.stat().st_size + 30_000
    prime_file = tmp_path / "prime.txt"
    prime_file.write_text(PRIME, "utf-8")
    positions, greedy = python_view(exported, prime_file)  # the same dequantized weights
    shown = open_page(page, {"prime": PRIME, "greedy": GREEDY_CHARS}, tmp_path / "profile")
    assert len(shown["positions"]) == len(PRIME) - 1 == len(positions) - 1
    for ours, theirs in zip(shown["positions"], positions[1:], strict=True):
        assert abs(ours["p"] - 2 ** -theirs["bits"]) < 1e-4
        for (char, p), (their_char, their_p) in zip(ours["top5"], theirs["top5"], strict=True):
            assert abs(p - their_p) < 1e-4
            assert char == their_char or abs(p - their_p) < 1e-4  # a tie may list either
    assert len(shown["greedy"]) == GREEDY_CHARS
    assert shown["greedy"] == greedy


@needs_chromium
def test_the_page_samples_with_a_stop_text_and_shows_the_model(corpus, tiny_config, tmp_path):
    run = train_small(corpus, tiny_config, "lstm", tmp_path)
    page, checkpoint = tmp_path / "poet.html", tmp_path / "poet.pt"
    for output, fmt in ((page, "html"), (checkpoint, "pt")):
        result = invoke(
            "export", "--checkpoint", run, "-o", output, "--format", fmt, "--quantize", "int8",
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    text = page.read_bytes()
    assert b"<script src" not in text and b"http" not in text.split(b"<script")[0]  # no fetches
    # The weights as bytes (not base64): the page is the export's size and a fixed page.
    assert page.stat().st_size < 1.03 * checkpoint.stat().st_size + 30_000
    spec = {"prime": "the ", "speed": 300, "options": {"topK": 5, "topP": 0.9}}
    shown = open_page(page, spec, tmp_path / "profile")
    assert len(shown["sample"]) == 300 and shown["sample_seconds"] > 0
    spec["options"]["stop"] = "e"
    shown = open_page(page, spec, tmp_path / "profile")
    assert len(shown["sample"]) < 300 and "e" not in shown["sample"]  # cut before the stop text
    spec = {"prime": "the ", "greedy": 100, "speed": 100, "options": {"topK": 1}}
    again = open_page(page, spec, tmp_path / "profile")
    assert again["sample"] == again["greedy"]  # top-k 1 is greedy
    # Press Generate (the #generate= link does) and let the page's timers run: the text streams
    # into the page in slices and the status line counts it.
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=60000",
         f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom",
         page.resolve().as_uri() + "#generate=the%20"],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert '<h1 id="name">lstm</h1>' in dom  # the run directory's name
    assert "2 x 32 LSTM" in dom and "30 steps" in dom and "corpus.txt" in dom
    output = html.unescape(re.search(r'<pre id="output">([^<]*)</pre>', dom).group(1))
    assert output.startswith("the ") and len(output) == 4 + 500  # the form's default length
    assert re.search(r'<p id="status">500 characters, \d+ chars/s</p>', dom)


@pytest.mark.parametrize("where", ["html", "onnx"])
def test_a_cell_the_page_and_graph_lack_is_refused_in_one_line(where):
    model = SimpleNamespace(cell="mingru")
    checkpoint = SimpleNamespace(config=SimpleNamespace(model=model))
    with pytest.raises(UsageError) as refused:
        check_cell(checkpoint, where)  # type: ignore[arg-type]
    assert str(refused.value) == (
        f"export --format {where} supports the cells lstm, gru, rnn, not 'mingru'"
    )

"""The Python API (charrnn.api): `charrnn.load` and `charrnn.train`, and the README's example."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from child import CHILD_ENV

import charrnn
from charrnn.commands import eval_command, info_command, sample_command
from charrnn.config import SampleConfig
from charrnn.errors import UsageError
from charrnn.generation.sampling import collect
from charrnn.generation.streams import RUN_CHARS

README = Path(__file__).resolve().parent.parent / "README.md"
TINY = {
    "hidden": 16, "embed": 8, "batch_size": 4, "seq_len": 16, "max_steps": 20,
    "eval_every": 10, "eval_streams": 2, "warmup_steps": 0, "device": "cpu", "lr": 0.02,
}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory, repetitive_text) -> Path:
    """A run trained through `charrnn.train` with the command line's setting names."""
    root = tmp_path_factory.mktemp("api")
    (root / "corpus.txt").write_text(repetitive_text(4000), "utf-8")
    return charrnn.train(
        root / "corpus.txt", out=root / "run", cache_dir=root / ".cache", quiet=True, **TINY
    )


def test_train_returns_the_run_directory_of_the_settings_it_was_given(run):
    model = charrnn.load(run)
    assert run.is_dir() and (run / "best.pt").is_file()
    assert model.info["step"] == 20
    assert model.info["config"]["model"]["hidden"] == 16
    assert model.info["config"]["train"]["lr"] == 0.02


def test_train_refuses_what_the_command_line_refuses(tmp_path, run):
    with pytest.raises(UsageError, match="unknown configuration key 'hiden'"):
        charrnn.train(run.parent / "corpus.txt", out=tmp_path / "x", hiden=8)
    with pytest.raises(UsageError, match="--lr cannot change"):
        charrnn.train(resume=run, lr=0.1)
    with pytest.raises(UsageError, match="give a CORPUS"):
        charrnn.train()


def test_train_resumes_and_extends_a_run(tmp_path, repetitive_text):
    (tmp_path / "corpus.txt").write_text(repetitive_text(3000), "utf-8")
    first = charrnn.train(tmp_path / "corpus.txt", out=tmp_path / "run", quiet=True, **TINY)
    again = charrnn.train(resume=first, max_steps=30, quiet=True)
    assert again == first and charrnn.load(first / "last.pt").info["step"] == 30


def test_generate_yields_chunks_that_are_the_text_sample_makes(run):
    model = charrnn.load(run)
    chunks = list(model.generate("the ", length=40, seed=3, temperature=0.7))
    assert chunks[0] == "the " and len(chunks) > 2  # the prime, then the text as it is drawn
    config = SampleConfig(length=40, seed=3, temperature=0.7)
    assert "".join(chunks) == collect(sample_command(run, "the ", config, "cpu"), 1)[0]
    assert model.sample("the ", length=40, seed=3, temperature=0.7) == "".join(chunks)


def test_generate_stops_when_the_reader_stops_and_reports_errors_at_once(run):
    model = charrnn.load(run)
    stream = model.generate("", length=100_000, seed=1)
    first = [next(stream) for _ in range(5)]
    stream.close()  # the generating thread ends instead of drawing 100,000 characters
    assert 5 <= len("".join(first)) <= 5 * RUN_CHARS
    with pytest.raises(UsageError, match="not in the model's vocabulary"):
        model.generate("Zebra", length=5)
    with pytest.raises(UsageError, match="temperature"):
        model.generate("the", temperature=0)
    assert [
        t.name for t in __import__("threading").enumerate() if t.name == "charrnn-generate"
    ] == []


def test_a_long_sample_arrives_in_small_chunks_on_the_callers_thread(run):
    model = charrnn.load(run)
    threads = threading.active_count()
    stream = model.generate("", length=20_000, seed=2)
    sizes = [len(next(stream))]
    assert threading.active_count() == threads  # drawn on the caller's thread
    sizes += [len(chunk) for chunk in stream]
    assert sum(sizes) == 20_000
    # Each chunk is one step's text: a character, or a run on the compiled kernels.
    assert sizes[0] == 1 and max(sizes) <= RUN_CHARS and len(sizes) >= 20_000 / RUN_CHARS


def test_score_gives_the_loss_of_every_character_and_agrees_with_eval(run, tmp_path):
    model = charrnn.load(run)
    text = "the lazy dog. a stitch in time."
    score = model.score(text + "Z")  # Z is not in the vocabulary: counted, not scored
    assert score.unknown_chars == 1
    assert [char for char, _ in score.per_char] == list(text[1:])
    assert all(loss >= 0 for _, loss in score.per_char)
    assert score.loss == pytest.approx(sum(x for _, x in score.per_char) / len(text[1:]))
    assert score.bpc == pytest.approx(score.loss / math.log(2))
    (tmp_path / "text.txt").write_text(text, "utf-8")
    result = eval_command(run, [tmp_path / "text.txt"], streams=1, device_name="cpu")
    assert score.loss == pytest.approx(result.loss, rel=1e-6)


def test_info_is_what_info_prints(run):
    assert charrnn.load(run / "best.pt").info == info_command(run / "best.pt")


def test_import_charrnn_does_not_load_torch():
    code = "import sys, charrnn; print('torch' in sys.modules, charrnn.__version__)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=CHILD_ENV, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", charrnn.__version__]


def test_the_readme_example_runs(tmp_path, capsys):
    text = README.read_text("utf-8")
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    finally:
        os.chdir(old)
    printed = capsys.readouterr().out
    parameters, best = re.match(r"(\d+) parameters, best val loss (\S+)\n", printed).groups()
    model = charrnn.load(tmp_path / "runs" / "verse")
    assert int(parameters) == model.info["parameters"] and float(best) < 0.5  # it learned
    assert printed.splitlines()[1].startswith("the ")
    loss, bpc = re.search(r"\n(\d\.\d{3}) nats/char, (\d\.\d{3}) bits/char\n", printed).groups()
    assert float(loss) == pytest.approx(model.score("the lazy dog.").loss, abs=1e-3)
    assert re.search(r"\n\('.', \d\.\d+\)\n$", printed)

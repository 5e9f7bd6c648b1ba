"""End to end: the real `charrnn` command line, as a user runs it.

Each `python -m charrnn` costs a couple of seconds (importing torch), so the subprocess tests are
few; more error cases run in-process through Typer's runner, which drives the same app.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from child import CHILD_ENV, run_charrnn
from typer.testing import CliRunner

from charrnn.checkpoint import load_checkpoint
from charrnn.cli import app

PRIME = "the "
TRAIN_FLAGS = [
    "--hidden", "32", "--embed", "16", "--batch-size", "8", "--seq-len", "32",
    "--max-steps", "30", "--eval-every", "10", "--lr", "0.02", "--warmup-steps", "0",
    "--device", "cpu", "--seed", "1", "--quiet",
]  # fmt: skip


def charrnn(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_charrnn(*args, cwd=cwd)


def assert_one_error_line(result, exit_code: int) -> str:
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip("\n").split("\n")
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("charrnn: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory, repetitive_text) -> Path:
    """A run trained by `charrnn train` on a ~5 KB corpus."""
    root = tmp_path_factory.mktemp("cli")
    (root / "corpus.txt").write_text(repetitive_text(5000), "utf-8")
    result = charrnn("train", "corpus.txt", "--out", "run", *TRAIN_FLAGS, cwd=root)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return root / "run"


def test_train_writes_the_run_directory(run):
    for name in ["best.pt", "last.pt", "config.json", "metrics.jsonl"]:
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text("utf-8"))
    assert config["model"]["hidden"] == 32 and config["train"]["max_steps"] == 30
    assert load_checkpoint(run / "last.pt").progress["step"] == 30


def test_sample_starts_with_the_prime_and_repeats_with_a_seed(run):
    args = ["sample", "--checkpoint", run, "--prime", PRIME, "--length", "50", "--seed", "3"]
    first = charrnn(*args, cwd=run.parent)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(PRIME)
    assert first.stdout.endswith("\n")
    assert len(first.stdout) == len(PRIME) + 50 + 1
    second = charrnn(*args, cwd=run.parent)
    assert second.stdout == first.stdout


def test_eval_json_agrees_with_training_evaluation(run):
    result = charrnn("eval", "--checkpoint", run, "--json", cwd=run.parent)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert set(scores) == {"loss", "bpc", "perplexity", "chars", "unknown_chars"}
    assert scores["bpc"] == pytest.approx(scores["loss"] / math.log(2), rel=1e-12)
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]), rel=1e-12)
    best = load_checkpoint(run / "best.pt")
    assert scores["chars"] == best.corpus["n_val"] - 1
    assert scores["unknown_chars"] == 0
    # The number training recorded for best.pt is the number `eval` reports for it.
    assert scores["loss"] == pytest.approx(best.progress["best_val_loss"], rel=1e-9)


def test_info_json_describes_the_checkpoint(run):
    result = charrnn("info", "--checkpoint", run / "best.pt", "--json", cwd=run.parent)
    assert result.returncode == 0, result.stderr
    details = json.loads(result.stdout)
    best = load_checkpoint(run / "best.pt")
    assert details["vocab_size"] == best.vocab.size
    assert details["best_val_loss"] == best.progress["best_val_loss"]
    assert details["step"] == best.progress["step"]
    assert details["config"]["model"]["hidden"] == 32
    assert details["parameters"] == sum(t.numel() for t in best.model_state.values())


@pytest.fixture
def corrupt_checkpoint(tmp_path) -> Path:
    path = tmp_path / "corrupt.pt"
    torch.save({"format": "charrnn-checkpoint"}, path)
    path.write_bytes(path.read_bytes()[:40])
    return path


@pytest.mark.parametrize(
    ("case", "exit_code", "fragment"),
    [
        ("missing-corpus", 2, "not found"),
        ("temperature-0", 2, "temperature"),
        ("missing-checkpoint", 2, "not found"),
        ("invalid-utf8", 1, "at byte 3"),
        ("corrupt-checkpoint", 1, "corrupt.pt"),
    ],
)
def test_errors_print_one_line_and_exit_with_the_right_code(
    tmp_path, corrupt_checkpoint, case, exit_code, fragment
):
    (tmp_path / "bad.txt").write_bytes(b"abc\xffdef" * 100)
    args = {
        "missing-corpus": ["train", "nope.txt", "--quiet"],
        "temperature-0": ["sample", "--checkpoint", corrupt_checkpoint, "--temperature", "0"],
        "missing-checkpoint": ["sample", "--checkpoint", "missing.pt"],
        "invalid-utf8": ["train", "bad.txt", "--quiet", "--device", "cpu"],
        "corrupt-checkpoint": ["sample", "--checkpoint", corrupt_checkpoint],
    }[case]
    line = assert_one_error_line(charrnn(*args, cwd=tmp_path), exit_code)
    assert fragment in line


LOAD_CHECK = """
import sys
from charrnn.cli import main
sys.argv = ["charrnn", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    print("exit", exit.code, "torch" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["--help"], 0),
        (["train", "corpus.txt", "--hidden", "abc"], 2),
        (["sample"], 2),
        (["prepare", "corpus.txt", "--cache-dir", "cache", "--json"], 0),
    ],
    ids=["help", "bad-option", "missing-option", "prepare"],
)
def test_help_option_errors_and_prepare_start_without_loading_torch(
    tmp_path, repetitive_text, args, exit_code
):
    # torch is about 1.5 s of start-up; these answer without it (prepare needs only numpy).
    (tmp_path / "corpus.txt").write_text(repetitive_text(2000), "utf-8")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_CHECK, *args],
        cwd=tmp_path, env=CHILD_ENV, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.stderr.splitlines()[-1] == f"exit {exit_code} False", result.stderr
    if args[0] == "prepare":
        assert json.loads(result.stdout)["chars"] == 2000


# ----------------------------------------------------------------------------- in-process


class _Result:
    """The parts of a Typer runner result that `assert_one_error_line` reads."""

    def __init__(self, result) -> None:
        self.returncode, self.stderr = result.exit_code, result.stderr
        self.stdout = result.stdout
        self.exception = result.exception


def invoke(*args: str | Path, cwd: Path) -> _Result:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return _Result(result)


def test_no_command_prints_the_help(tmp_path):
    result = invoke(cwd=tmp_path)
    assert result.returncode == 2
    assert "Commands:" in result.stdout and "train" in result.stdout and "sample" in result.stdout


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--hidden", "0"], "hidden"),
        (["--cell", "transformer"], "unknown cell 'transformer'"),
        (["--dropout", "1"], "dropout"),
        (["--max-time", "soon"], "duration"),
        (["--preset", "huge"], "unknown preset"),
    ],
)
def test_bad_training_settings_are_usage_errors(write_corpus, tmp_path, flags, fragment):
    write_corpus()
    result = invoke("train", "corpus.txt", "--quiet", *flags, cwd=tmp_path)
    assert fragment in assert_one_error_line(result, 2)
    assert not (tmp_path / "runs").exists()  # nothing was written


def test_failing_train_without_quiet_prints_only_the_error(tmp_path):
    result = invoke("train", "nope.txt", cwd=tmp_path)
    assert_one_error_line(result, 2)

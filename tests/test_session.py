"""`charrnn sample --interactive` through the real command line, with piped stdin."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from child import CHILD_ENV, charrnn_argv

from charrnn.commands import interactive_command, train_command
from charrnn.config import SampleConfig
from charrnn.errors import UsageError
from charrnn.generation.interactive import ReplyEnd, ReplyText, Unreadable
from charrnn.generation.sampling import collect, generate
from charrnn.model.checkpoint import load_model

LENGTH = 40


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_config, repetitive_text) -> Path:
    root = tmp_path_factory.mktemp("session")
    (root / "corpus.txt").write_text(repetitive_text(4000), "utf-8")
    config = tiny_config(hidden=32, max_steps=60, eval_every=60, lr=0.02)
    train_command([root / "corpus.txt"], config, out=root / "run", cache_dir=root / ".cache")
    return root / "run"


def continuation(run: Path, prime: str, **options) -> str:
    """What `charrnn sample --prime PRIME` writes after the prime, computed in-process."""
    model, checkpoint = load_model(run / "best.pt")
    config = SampleConfig(length=LENGTH, **options)
    texts = collect(generate(model, checkpoint.vocab, prime, config), config.num_samples)
    return texts[0][len(prime) :]


def interactive(run: Path, lines: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        charrnn_argv("sample", "--checkpoint", run, "--interactive", "--length", str(LENGTH),
                     "--threads", "1", *flags),
        input=lines, capture_output=True, text=True, env=CHILD_ENV, timeout=120,
    )  # fmt: skip


def test_each_line_continues_the_text_so_far(run):
    result = interactive(run, "the \n\nZebra\nto be\n", "--greedy")
    assert result.returncode == 0, result.stderr
    # No prompt or banner when stdin is not a terminal; a line the model cannot read is one
    # error line, and the session goes on with the text as it was.
    assert result.stderr == (
        "charrnn: error: characters not in the model's vocabulary: 'Z' (U+005A)\n"
    )
    replies = result.stdout.split("\n")
    assert replies[3:] == [""] and len(replies) == 4
    text = "the " + replies[0]
    assert replies[0] == continuation(run, "the ", greedy=True)
    assert replies[1] == continuation(run, text, greedy=True)  # an empty line: more text
    text += replies[1] + "to be"
    assert replies[2] == continuation(run, text, greedy=True)


def test_replies_are_events_and_one_closed_early_leaves_the_text(run):
    config = SampleConfig(length=LENGTH, greedy=True)
    lines = ["the ", "Zebra", "the ", "to be"]
    replies = interactive_command(run / "best.pt", "", config, lines, threads=1)
    stopped = next(replies)
    assert isinstance(next(stopped), ReplyText)
    stopped.close()  # as Ctrl-C does: the session goes on from the text before it
    assert list(next(replies)) == [
        Unreadable("characters not in the model's vocabulary: 'Z' (U+005A)")
    ]
    *pieces, end = next(replies)
    expected = continuation(run, "the ", greedy=True)
    assert end == ReplyEnd((expected,))
    assert all(isinstance(p, ReplyText) and p.sample == 0 for p in pieces)
    assert "".join(p.text for p in pieces) == expected
    *_, end = next(replies)
    assert end == ReplyEnd((continuation(run, f"the {expected}to be", greedy=True),))
    assert next(replies, None) is None


def test_the_seed_of_each_turn_wraps_past_the_largest(run):
    config = SampleConfig(length=LENGTH, seed=2**64 - 1)
    replies = interactive_command(run / "best.pt", "", config, ["the ", "the "], reset=True)
    last, wrapped = ([*reply][-1] for reply in replies)
    assert last == ReplyEnd((continuation(run, "the ", seed=2**64 - 1),))
    assert wrapped == ReplyEnd((continuation(run, "the ", seed=0),))


def test_bad_options_fail_before_anything_is_loaded(tmp_path):
    with pytest.raises(UsageError, match="top-k"):
        interactive_command(tmp_path / "missing.pt", "", SampleConfig(top_k=0), [])


def test_reset_starts_every_line_afresh_after_the_prime(run):
    result = interactive(run, "be\nbe\n", "--greedy", "--reset", "--prime", "a stitch ")
    assert result.returncode == 0, result.stderr
    expected = continuation(run, "a stitch be", greedy=True)
    assert result.stdout == f"{expected}\n{expected}\n"


def test_sampling_options_apply_to_every_reply(run):
    flags = ["--seed", "3", "--temperature", "0.5", "--top-k", "3", "--stop", "."]
    result = interactive(run, "the \nthe \n", "--reset", *flags)
    assert result.returncode == 0, result.stderr
    first, second, end = result.stdout.split("\n")
    options = {"temperature": 0.5, "top_k": 3, "stop": "."}
    assert first == continuation(run, "the ", seed=3, **options)
    assert second == continuation(run, "the ", seed=4, **options)  # each turn: the next seed
    assert "." not in first + second and end == ""
    beam = interactive(run, "to \n", "--beam", "3", "--num-samples", "2", "--reset")
    assert beam.returncode == 0, beam.stderr
    config = SampleConfig(length=LENGTH, beam=3, num_samples=2)
    assert beam.stdout.split("\n\n") == [
        continuation(run, "to ", beam=3, num_samples=2),
        collect(generate(*_model(run), "to ", config), 2)[1][3:] + "\n",
    ]


def _model(run: Path):
    model, checkpoint = load_model(run / "best.pt")
    return model, checkpoint.vocab


def test_ctrl_c_stops_a_reply_then_ends_the_session_without_a_traceback(run):
    child = subprocess.Popen(
        charrnn_argv("sample", "--checkpoint", run, "-i", "--length", "100000000",
                     "--threads", "1", "--seed", "1"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=CHILD_ENV,
        # A shell's background job starts with Ctrl-C ignored, and a child inherits that: the
        # child gets the default back, as a terminal's foreground command has it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert child.stdin and child.stdout
    child.stdin.write("the \n")
    child.stdin.flush()
    assert child.stdout.read(20)  # the endless reply has begun
    child.send_signal(signal.SIGINT)  # stops it; the prompt loop goes on
    child.stdin.write("to be\n")
    child.stdin.flush()
    while child.stdout.readline() != "\n":  # the rest of the stopped reply, then its end
        pass
    assert child.stdout.read(20)  # the next line gets a reply: the session is alive
    child.send_signal(signal.SIGINT)
    child.stdin.close()  # Ctrl-D
    child.stdout.read()
    assert child.wait(timeout=60) == 0
    err = child.stderr.read() if child.stderr else ""
    assert "Traceback" not in err and err == ""

"""Resume and eval read the text a run started with: by its cache key, whatever the files did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_cli import invoke
from test_robustness import assert_same, stop_after

from charrnn.commands import resume_command, train_command
from charrnn.config import DataConfig
from charrnn.errors import CorpusError
from charrnn.model.checkpoint import load_checkpoint
from charrnn.text.corpus import prepare_corpus
from charrnn.text.run_text import cache_dirs, run_corpus
from charrnn.training.plan import TrainHooks

RUN_FLAGS = [
    "--batch-size", "4", "--seq-len", "16", "--device", "cpu", "--precision", "fp32",
    "--threads", "1", "--quiet", "--eval-every", "5",
]  # fmt: skip
FLAGS = ["--hidden", "16", "--embed", "8", *RUN_FLAGS]
APPENDED = "a line of ordinary text, as a user adds one.\n"


def test_resume_after_an_append_trains_on_the_text_the_run_started_with(
    write_corpus, tmp_path, tiny_config
):
    corpus = write_corpus()
    config = tiny_config(max_steps=10, eval_every=4, log_every=2)
    straight = train_command([corpus], config, out=tmp_path / "straight", cache_dir=tmp_path / "c1")
    train_command(
        [corpus], config, out=tmp_path / "run", cache_dir=tmp_path / "c2",
        hooks=TrainHooks(should_stop=stop_after(6)),
    )  # fmt: skip
    with corpus.open("a", encoding="utf-8") as handle:  # moves validation text into training
        handle.write(APPENDED)

    # No --cache-dir: the copy is found where the run recorded it, not beside the run.
    resumed = resume_command(tmp_path / "run", {})
    assert resumed.warnings == [
        f"the corpus changed since the run started ({corpus.resolve()}: 4,000 bytes, now "
        f"{4000 + len(APPENDED):,}); using the text the run started with (cached copy, key "
        f"{straight.corpus.key})"
    ]
    assert resumed.corpus.n_chars == 4000
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "run" / "last.pt")
    assert_same(a.model_state, b.model_state)  # exact resume stays exact
    assert a.progress["best_val_loss"] == b.progress["best_val_loss"]
    assert b.corpus["key"] == straight.corpus.key and b.corpus["files"][0]["bytes"] == 4000


def test_a_deleted_corpus_resumes_and_evaluates_from_its_cached_copy(
    write_corpus, tmp_path, repetitive_text
):
    write_corpus()
    first = invoke("train", "corpus.txt", "--out", "run", *FLAGS, "--max-steps", "5", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = invoke("eval", "--checkpoint", "run", "--json", "--device", "cpu", cwd=tmp_path)
    (tmp_path / "corpus.txt").unlink()

    after = invoke("eval", "--checkpoint", "run", "--json", "--device", "cpu", cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)  # the same validation split
    resumed = invoke("train", "--resume", "run", "--max-steps", "8", "-q", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.startswith("charrnn: warning: the corpus changed since the run started")
    assert "corpus.txt is gone); using the text the run started with" in resumed.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt").progress["step"] == 8

    info = invoke("info", "--checkpoint", "run", "--json", cwd=tmp_path)
    key = json.loads(info.stdout)["corpus"]["key"]
    assert len(key) == 20 and (tmp_path / ".cache" / f"corpus-{key}.npy").is_file()
    table = invoke("info", "--checkpoint", "run", cwd=tmp_path)
    assert "corpus key" in table.stdout and key in table.stdout


def test_a_changed_corpus_without_its_copy_is_one_line_saying_what_changed(write_corpus, tmp_path):
    corpus = write_corpus()
    first = invoke("train", "corpus.txt", "--out", "run", *FLAGS, "--max-steps", "5", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    saved = (tmp_path / "run" / "last.pt").read_bytes()
    with corpus.open("a", encoding="utf-8") as handle:
        handle.write(APPENDED)
    shutil.rmtree(tmp_path / ".cache")

    resumed = invoke("train", "--resume", "run", "--max-steps", "8", "-q", cwd=tmp_path)
    assert resumed.returncode == 1 and resumed.stderr.count("\n") == 1
    message = resumed.stderr
    assert message.startswith("charrnn: error: the corpus changed since the run started (")
    assert f"{corpus.resolve()}: 4,000 bytes, now {4000 + len(APPENDED):,})" in message
    assert "cached copy (key " in message and f"is not in {tmp_path / '.cache'};" in message
    hint = f"charrnn train {corpus.resolve()} --init-from {Path('run') / 'last.pt'}"
    assert message.rstrip("\n").endswith(hint)
    assert (tmp_path / "run" / "last.pt").read_bytes() == saved
    evaluated = invoke("eval", "--checkpoint", "run", "--device", "cpu", cwd=tmp_path)
    assert evaluated.returncode == 1 and "give the files to score instead" in evaluated.stderr

    # The hint works: a new run on the new text from the run's weights.
    tuned = invoke(*hint.split()[1:], "--out", "tuned", *RUN_FLAGS, "--max-steps", "2",
                   cwd=tmp_path)  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
    assert load_checkpoint(tmp_path / "tuned" / "last.pt").corpus["n_chars"] == 4000 + len(APPENDED)


def test_unchanged_files_without_their_copy_are_read_again(write_corpus, tmp_path, tiny_config):
    corpus = write_corpus()
    train_command([corpus], tiny_config(max_steps=5, eval_every=5), out=tmp_path / "run")
    key = load_checkpoint(tmp_path / "run" / "last.pt").corpus["key"]
    shutil.rmtree(tmp_path / ".cache")
    resumed = resume_command(tmp_path / "run", {"max_steps": 8})
    assert resumed.warnings == [] and resumed.progress.step == 8
    assert not resumed.corpus.cached and resumed.corpus.key == key
    assert (tmp_path / ".cache" / f"corpus-{key}.npy").is_file()  # cached again where it was


def test_a_record_without_a_key_reads_its_sources_as_they_are(write_corpus, tmp_path):
    # Checkpoints written before keys: the files as they are now (the old behaviour).
    corpus = write_corpus("abc\n" * 10)
    record = {"sources": [str(corpus)], "n_chars": 40}
    found, warnings = run_corpus(record, DataConfig(), [tmp_path / "c"], tmp_path / "c", "hint")
    assert warnings == [] and found.n_chars == 40 and not found.cached
    edited = {**record, "key": found.key, "files": [found.files[0].to_dict()]}
    corpus.write_text("abcd\n" * 10, "utf-8")
    shutil.rmtree(tmp_path / "c")
    with pytest.raises(CorpusError, match=r"corpus.txt: 40 bytes, now 50\) .*; hint$"):
        run_corpus(edited, DataConfig(), [tmp_path / "c"], tmp_path / "c", "hint")


# ----------------------------------------------------------------------------- byte-order marks


def test_a_bom_never_reaches_the_vocabulary_the_prime_or_the_scores(write_corpus, tmp_path):
    bom, text = "\ufeff", "the cat sat on the mat.\n" * 100
    plain = write_corpus(text, name="plain.txt")
    without = prepare_corpus([plain, plain], DataConfig(), tmp_path / "c")
    write_corpus(bom + text, name="a.txt")
    write_corpus(bom + text, name="b.txt")
    run = invoke("train", "a.txt", "b.txt", "--out", "run", *FLAGS, "--max-steps", "5",
                 cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    assert checkpoint.vocab == without.vocab  # no U+FEFF among the symbols
    assert checkpoint.corpus["n_chars"] == without.n_chars == 2 * len(text)

    (tmp_path / "prime.txt").write_text(bom + "the cat", "utf-8")
    sampled = invoke("sample", "--checkpoint", "run", "--prime-file", "prime.txt", "--length",
                     "5", "--device", "cpu", cwd=tmp_path)  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith("the cat") and bom not in sampled.stdout

    scores = [
        invoke("eval", "--checkpoint", "run", name, "--json", "--device", "cpu", cwd=tmp_path)
        for name in ("a.txt", "plain.txt")
    ]
    assert scores[0].returncode == 0, scores[0].stderr
    assert json.loads(scores[0].stdout) == json.loads(scores[1].stdout)  # the same characters
    assert json.loads(scores[0].stdout)["unknown_chars"] == 0


def test_unchanged_files_read_as_another_length_are_refused(write_corpus, tmp_path):
    # A newer charrnn that reads the same bytes as another text: no silent change of the split.
    corpus = write_corpus("abc\n" * 10)
    found, _ = run_corpus({"sources": [str(corpus)]}, DataConfig(), [tmp_path], tmp_path, "x")
    record = {
        "sources": [str(corpus)], "key": "0" * 20, "files": [found.files[0].to_dict()],
        "n_chars": 41,
    }  # fmt: skip
    with pytest.raises(CorpusError, match="reads them as 40 characters, not the run's 41; hint"):
        run_corpus(record, DataConfig(), [tmp_path / "gone"], tmp_path, "hint")


def test_the_copy_is_looked_for_in_the_given_then_the_recorded_then_the_default_directory(
    tmp_path,
):
    given, recorded, beside = tmp_path / "given", tmp_path / "recorded", tmp_path / "runs/.cache"
    record = {"cache_dir": str(recorded)}
    assert cache_dirs(record, beside, given) == ([given, recorded, beside], given)
    assert cache_dirs(record, beside) == ([recorded, beside], beside)  # recorded one is gone
    recorded.mkdir()
    assert cache_dirs(record, beside) == ([recorded, beside], recorded)
    assert cache_dirs({"cache_dir": str(beside)}, beside) == ([beside], beside)

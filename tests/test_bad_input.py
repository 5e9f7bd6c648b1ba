"""Every row of docs/errors.md through the real command line (in-process, same Typer app).

Each failure must exit 2 (usage) or 1 (runtime) with exactly one `charrnn: error:` line on
stderr, no traceback, and no checkpoint or temporary file left behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from test_cli import assert_one_error_line, invoke

from charrnn.commands import train_command
from charrnn.model.checkpoint import load_checkpoint, save_checkpoint

TRAIN = [
    "--out", "out", "--hidden", "8", "--embed", "4", "--batch-size", "2", "--seq-len", "8",
    "--max-steps", "2", "--device", "cpu", "--quiet",
]  # fmt: skip


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_config, repetitive_text) -> Path:
    """Corpora, config files, a trained run and broken checkpoints, built once."""
    root = tmp_path_factory.mktemp("bad-input")
    (root / "corpus.txt").write_text(repetitive_text(4000), "utf-8")
    (root / "empty.txt").write_bytes(b"")
    (root / "latin1.txt").write_bytes("café au lait\n".encode("latin-1") * 50)
    (root / "binaries").mkdir()
    (root / "binaries" / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    (root / "norun").mkdir()
    (root / "typo.toml").write_text("hiden = 32\n", "utf-8")
    (root / "broken.toml").write_text("hidden = [\n", "utf-8")
    (root / "short.txt").write_text(repetitive_text(300), "utf-8")
    (root / "crlf.txt").write_bytes(repetitive_text(2000).replace("\n", "\r\n").encode())
    (root / "cr.txt").write_bytes(repetitive_text(2000).replace("\n", "\r").encode())
    train_command(
        [root / "corpus.txt"], tiny_config(max_steps=2, eval_every=2), out=root / "run",
        cache_dir=root / ".cache",
    )  # fmt: skip
    # A run whose corpus was edited after its cached copy was deleted.
    (root / "edited.txt").write_text(repetitive_text(3000), "utf-8")  # its own cache key
    train_command(
        [root / "edited.txt"], tiny_config(max_steps=2, eval_every=2), out=root / "edited-run",
        cache_dir=root / "edited-cache",
    )  # fmt: skip
    shutil.rmtree(root / "edited-cache")
    with (root / "edited.txt").open("a", encoding="utf-8") as handle:
        handle.write("one more line\n")
    best = load_checkpoint(root / "run" / "best.pt")
    save_checkpoint(best, root / "truncated.pt")
    data = (root / "truncated.pt").read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    payload = best.to_payload()
    payload["format_version"] = 999
    torch.save(payload, root / "future.pt")
    evil = {"format": "charrnn-checkpoint", "x": _Exploit(root / "PWNED")}
    torch.save(evil, root / "evil.pt")
    return root


@pytest.fixture
def workdir(shared, tmp_path) -> Path:
    shutil.copytree(shared, tmp_path, dirs_exist_ok=True, symlinks=True)
    return tmp_path


def _checkpoints_and_temps(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.suffix == ".pt" or ".tmp-" in p.name}


FAILURES = [
    # (id, arguments, exit code, fragments of the error line)
    ("option-not-a-number", ["train", "corpus.txt", "--hidden", "abc"], 2,
     ["invalid value for '--hidden'", "(see 'charrnn train --help')"]),
    ("unknown-option", ["train", "corpus.txt", "--hiden", "8"], 2,
     ["no such option: --hiden", "--hidden"]),
    ("unknown-command", ["trian"], 2, ["no such command 'trian'", "Did you mean 'train'?"]),
    ("missing-option", ["sample"], 2,
     ["missing option '--checkpoint' (see 'charrnn sample --help')"]),
    ("missing-path", ["train", "missing.txt"], 2, ["corpus not found: missing.txt"]),
    ("no-text-files", ["train", "binaries"], 2, ["no text files in directory binaries"]),
    ("empty-corpus", ["train", "empty.txt"], 1, ["the corpus is empty: empty.txt"]),
    ("invalid-utf8", ["train", "latin1.txt"], 1,
     ["latin1.txt: not valid utf-8 at byte 3", "--encoding", "--bytes"]),
    ("unknown-encoding", ["train", "corpus.txt", "--encoding", "klingon"], 2,
     ["unknown encoding 'klingon'"]),
    ("zero-size", ["train", "corpus.txt", "--hidden", "0"], 2,
     ["hidden must be between 1 and 16384, got 0"]),
    ("negative-size", ["train", "corpus.txt", "--batch-size", "-4"], 2,
     ["batch_size must be between 1 and 65536, got -4"]),
    ("absurd-size", ["train", "corpus.txt", "--layers", "1000"], 2,
     ["layers must be between 1 and 64, got 1000"]),
    ("zero-steps", ["train", "corpus.txt", "--max-steps", "0"], 2, ["max_steps must be >= 1"]),
    ("dropout-negative", ["train", "corpus.txt", "--dropout", "-0.1"], 2,
     ["dropout must be in [0, 1), got -0.1"]),
    ("dropout-above-one", ["train", "corpus.txt", "--dropout", "1.5"], 2,
     ["dropout must be in [0, 1), got 1.5"]),
    ("unknown-cell", ["train", "corpus.txt", "--cell", "gpt"], 2,
     ["unknown cell 'gpt'; choose from lstm, gru, rnn, mingru"]),
    ("unknown-toml-key", ["train", "corpus.txt", "--config", "typo.toml"], 2,
     ["typo.toml: unknown configuration key 'hiden'"]),
    ("malformed-toml", ["train", "corpus.txt", "--config", "broken.toml"], 2,
     ["broken.toml: malformed TOML"]),
    ("preview-chars-range", ["train", "corpus.txt", "--preview-chars", "-1"], 2,
     ["preview_chars must be between 0 and 10000, got -1"]),
    ("val-frac-range", ["train", "corpus.txt", "--val-frac", "1"], 2,
     ["val_frac must be in (0, 1), got 1.0"]),
    ("no-validation-text", ["train", "corpus.txt", "--val-frac", "0.0001"], 1,
     ["leaves 1 validation characters", "larger --val-frac"]),
    ("no-training-text", ["train", "corpus.txt", "--val-frac", "0.9999"], 1,
     ["leaves 0 training characters", "smaller --val-frac"]),
    ("temperature-negative", ["sample", "--checkpoint", "run", "--temperature", "-0.5"], 2,
     ["temperature must be > 0, got -0.5"]),
    ("top-p-zero", ["sample", "--checkpoint", "run", "--top-p", "0"], 2,
     ["top-p must be in (0, 1], got 0.0"]),
    ("top-p-above-one", ["sample", "--checkpoint", "run", "--top-p", "1.5"], 2,
     ["top-p must be in (0, 1], got 1.5"]),
    ("top-k-zero", ["sample", "--checkpoint", "run", "--top-k", "0"], 2,
     ["top-k must be >= 1, got 0"]),
    ("negative-length", ["sample", "--checkpoint", "run", "--length", "-1"], 2,
     ["length cannot be negative, got -1"]),
    ("prime-unknown", ["sample", "--checkpoint", "run", "--prime", "Zebra €"], 2,
     ["characters not in the model's vocabulary: 'Z' (U+005A), '€' (U+20AC)"]),
    ("beam-with-sampling-option",
     ["sample", "--checkpoint", "run", "--beam", "4", "--temperature", "0.5", "--top-k", "3"], 2,
     ["--beam searches for the most likely text; --temperature, --top-k only apply to sampling"]),
    ("beam-fewer-than-samples",
     ["sample", "--checkpoint", "run", "--beam", "2", "--num-samples", "3"], 2,
     ["--beam 2 finds at most 2 texts; --num-samples 3 asks for more"]),
    ("reset-without-interactive", ["sample", "--checkpoint", "run", "--reset"], 2,
     ["--reset applies to --interactive"]),
    ("interactive-to-file", ["sample", "--checkpoint", "run", "-i", "--output", "x.txt"], 2,
     ["--interactive writes to the terminal; --output cannot be used"]),
    ("interactive-many-samples", ["sample", "--checkpoint", "run", "-i", "--num-samples", "2"],
     2, ["--interactive continues one text; --num-samples above 1 needs --reset"]),
    ("auto-without-time", ["train", "corpus.txt", "--auto"], 2,
     ["--auto chooses the model for a time budget; give --max-time (e.g. 10m)"]),
    ("auto-with-preset", ["train", "corpus.txt", "--auto", "--preset", "tiny"], 2,
     ["--auto chooses the model itself; give --preset or --auto, not both"]),
    ("auto-on-resume", ["train", "--resume", "run", "--auto"], 2,
     ["--resume continues the saved configuration; --auto cannot change"]),
    ("auto-with-init-from",
     ["train", "corpus.txt", "--init-from", "run/best.pt", "--out", "out", "--auto"], 2,
     ["--init-from keeps the checkpoint's network; --auto cannot choose one"]),
    ("missing-checkpoint", ["eval", "--checkpoint", "missing.pt"], 2,
     ["checkpoint not found: missing.pt"]),
    ("no-checkpoint-yet", ["sample", "--checkpoint", "norun"], 1,
     ["run directory norun has no checkpoint yet"]),
    ("resume-missing-dir", ["train", "--resume", "nowhere"], 2,
     ["--resume needs a run directory; not found: nowhere"]),
    ("resume-no-last", ["train", "--resume", "norun"], 1,
     ["run directory norun has no last.pt to resume from"]),
    ("resume-changed-setting", ["train", "--resume", "run", "--hidden", "64"], 2,
     ["--hidden cannot change"]),
    ("resume-with-corpus", ["train", "corpus.txt", "--resume", "run"], 2,
     ["--resume takes the corpus, settings and directory of the saved run"]),
    ("resume-corpus-changed", ["train", "--resume", "edited-run"], 1,
     ["the corpus changed since the run started (", "edited.txt: 3,000 bytes, now 3,014)",
      "its cached copy (key ", "edited.txt --init-from edited-run/last.pt"]),
    ("eval-corpus-changed", ["eval", "--checkpoint", "edited-run"], 1,
     ["the corpus changed since the run started (", "give the files to score instead"]),
    ("init-from-changed-shape",
     ["train", "corpus.txt", "--init-from", "run/best.pt", "--out", "out", "--hidden", "64"], 2,
     ["--init-from keeps the checkpoint's network; --hidden cannot change"]),
    ("eval-empty-file", ["eval", "--checkpoint", "run", "empty.txt"], 1, ["nothing to score"]),
    ("truncated-checkpoint", ["info", "--checkpoint", "truncated.pt"], 1,
     ["truncated.pt: not a readable checkpoint"]),
    ("not-a-checkpoint", ["sample", "--checkpoint", "corpus.txt"], 1,
     ["corpus.txt: not a readable checkpoint"]),
    ("newer-format", ["info", "--checkpoint", "future.pt"], 1,
     ["checkpoint format 999 is newer than this charrnn reads (2); upgrade charrnn"]),
    ("code-in-pickle", ["info", "--checkpoint", "evil.pt"], 1,
     ["evil.pt: refused to load", "could run code"]),
    ("plot-missing-run", ["plot", "nowhere"], 2, ["run directory not found: nowhere"]),
    ("plot-not-a-run", ["plot", "norun"], 2,
     ["norun is not a run directory (it has no config.json)"]),
    ("plot-image-format", ["plot", "run", "-o", "curves.gif"], 2,
     ["cannot tell the image format of curves.gif; end it in .png, .svg or .pdf"]),
    ("plot-image-size", ["plot", "run", "--width", "10"], 2,
     ["image size 10x600 is out of range (200x150 to 20000x20000)"]),
    ("compare-not-a-run", ["compare", "run", "norun"], 2, ["norun is not a run directory"]),
    ("inspect-missing-text", ["inspect", "--checkpoint", "run", "missing.txt"], 2,
     ["file not found: missing.txt"]),
    ("inspect-empty-text", ["inspect", "--checkpoint", "run", "empty.txt"], 1,
     ["nothing to score"]),
    ("inspect-cell-index-format", ["inspect", "--checkpoint", "run", "corpus.txt",
     "--cell-index", "42"], 2, ["--cell-index 42: expected LAYER:UNIT, e.g. 0:42 (both from 0)"]),
    ("inspect-cell-index-range", ["inspect", "--checkpoint", "run", "corpus.txt",
     "--cell-index", "1:0"], 2,
     ["--cell-index 1:0: the model has 1 layer(s) of 16 units (layers 0-0, units 0-15)"]),
    ("inspect-state", ["inspect", "--checkpoint", "run", "corpus.txt", "--state", "x"], 2,
     ["--state x: expected c (LSTM cell state) or h (output)"]),
    ("inspect-html-no-directory", ["inspect", "--checkpoint", "run", "corpus.txt", "--html",
     "nodir/page.html"], 2, ["cannot write nodir/page.html: no directory nodir"]),
    ("memory-short-text", ["inspect", "--checkpoint", "run", "short.txt", "--memory"], 1,
     ["the memory analysis needs a text of at least 2050 characters the model knows",
      "this one has 300"]),
    ("memory-plot-format", ["compare", "run", "--plot", "memory.gif"], 2,
     ["cannot tell the image format of memory.gif; end it in .png, .svg or .pdf"]),
    ("export-unknown-dtype", ["export", "--checkpoint", "run", "-o", "m.pt", "--dtype", "int4"],
     2, ["unknown dtype 'int4'; choose from float32, float16, bfloat16"]),
    ("export-unknown-quantize",
     ["export", "--checkpoint", "run", "-o", "m.pt", "--quantize", "int4"], 2,
     ["unknown quantization 'int4'; choose int8 or none"]),
    ("export-over-source", ["export", "--checkpoint", "run", "-o", "run/best.pt"], 2,
     ["export would overwrite its source run/best.pt; choose another -o"]),
    ("export-unknown-format", ["export", "--checkpoint", "run", "-o", "m.zip", "--format", "zip"],
     2, ["unknown export format 'zip'; choose from pt, html, onnx"]),
    ("export-no-directory",
     ["export", "--checkpoint", "run", "-o", "nodir/m.html", "--format", "html"], 2,
     ["cannot write nodir/m.html: no directory nodir"]),
    ("export-unwritable",
     ["export", "--checkpoint", "run", "-o", "/proc/m.html", "--format", "html"], 1,
     ["cannot write /proc/m.html: No such file or directory"]),
    ("unknown-normal-form", ["train", "corpus.txt", "--normalize", "nfd"], 2,
     ["unknown normal form 'nfd'; choose from none, nfc, nfkc"]),
    ("min-char-count-negative", ["train", "corpus.txt", "--min-char-count", "-1"], 2,
     ["min_char_count must be between 0 (off) and 2**40, got -1"]),
    ("min-char-count-too-high", ["prepare", "corpus.txt", "--min-char-count", "100000"], 1,
     ["--min-char-count 100000 keeps no character of the corpus (the most frequent occurs"]),
    ("bytes-with-preprocessing", ["prepare", "corpus.txt", "--bytes", "--lowercase"], 2,
     ["--lowercase, --ascii, --normalize, --strip-control and --min-char-count work on "
      "characters; drop them or --bytes"]),
    ("dynamic-lr-zero", ["eval", "--checkpoint", "run", "--dynamic", "--dynamic-lr", "0"], 2,
     ["dynamic-lr must be positive, got 0.0"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "exit_code", "fragments"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
def test_bad_input_is_one_error_line_and_leaves_nothing_behind(workdir, args, exit_code, fragments):
    before = _checkpoints_and_temps(workdir)
    own_settings = {"--resume", "--init-from"} & set(args)  # they take the saved network
    extra = TRAIN if args[0] == "train" and not own_settings else []
    result = invoke(args[0], *extra, *args[1:], cwd=workdir)
    line = assert_one_error_line(result, exit_code)
    for fragment in fragments:
        assert fragment in line
    assert _checkpoints_and_temps(workdir) == before
    assert not (workdir / "PWNED").exists()  # the pickle's command never ran


def test_a_corpus_shorter_than_one_batch_shrinks_it_with_a_warning(workdir):
    result = invoke("train", "short.txt", "--out", "out", "--hidden", "8", "--max-steps", "2",
                    "--batch-size", "64", "--seq-len", "128", "--device", "cpu", "-q",
                    cwd=workdir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "charrnn: warning: the training text (270 characters) is shorter than one batch of "
        "64 x 128; using batch_size 2 and seq_len 128\n"
    )
    config = load_checkpoint(workdir / "out" / "best.pt").config.train
    assert (config.batch_size, config.seq_len) == (2, 128)


@pytest.mark.parametrize("name", ["crlf.txt", "cr.txt"])
def test_crlf_and_cr_only_files_train_as_lf(workdir, repetitive_text, name):
    result = invoke("train", name, *TRAIN, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    best = load_checkpoint(workdir / "out" / "best.pt")
    assert ord("\r") not in best.vocab.symbols and ord("\n") in best.vocab.symbols
    assert best.corpus["n_chars"] == len(repetitive_text(2000))

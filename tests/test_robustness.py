"""Resume, fine-tuning, interrupts, crashes, failed saves, locks and non-finite training.

Subprocesses are used only where a real process matters (signals, SIGKILL, a lock held by another
process); everything else runs in-process on tiny models.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from child import start_charrnn
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import invoke

import charrnn.model.checkpoint
import charrnn.system.atomic
from charrnn.cli import EXIT_SIGINT, EXIT_SIGTERM, _Interrupts
from charrnn.commands import resume_command, train_command
from charrnn.config import RunConfig
from charrnn.errors import CheckpointError, TrainingError, UsageError
from charrnn.model.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint_path
from charrnn.model.network import CharRNN
from charrnn.run_dir import run_lock
from charrnn.text.corpus import Vocab
from charrnn.training.plan import TrainHooks
from charrnn.training.trainer import MAX_BAD_STEPS, Trainer, planned_steps

N = 12  # the half-way step of the resume tests
CLI_FLAGS = [
    "--hidden", "16", "--embed", "8", "--batch-size", "4", "--seq-len", "16",
    "--device", "cpu", "--precision", "fp32", "--quiet",
]  # fmt: skip


charrnn_process = start_charrnn


def stop_after(calls: int):
    """A `should_stop` that says stop from its (calls + 1)-th call: Trainer.run asks once a step."""
    count = 0

    def should_stop() -> bool:
        nonlocal count
        count += 1
        return count > calls

    return should_stop


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Tensors equal bit for bit, recursively through dicts, lists and tuples."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


def without_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    varying = ("elapsed_s", "chars_per_s", "eval_s", "threads")  # timing and load, not the run
    return [{k: v for k, v in r.items() if k not in varying} for r in records]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


@pytest.fixture
def dropout_config(tiny_config):
    """Two layers with dropout, so a resume that lost the RNG state would differ."""

    def make(**keys: Any) -> RunConfig:
        base = {"layers": 2, "dropout": 0.3, "max_steps": 2 * N, "eval_every": 6, "log_every": 3}
        return tiny_config(**{**base, **keys})

    return make


# ----------------------------------------------------------------------------- resume


def test_stopped_and_resumed_run_equals_an_uninterrupted_one_bit_for_bit(
    write_corpus, tmp_path, dropout_config
):
    corpus, config = write_corpus(), dropout_config()
    straight = train_command([corpus], config, out=tmp_path / "straight")
    stopped = train_command(
        [corpus], config, out=tmp_path / "resumed", hooks=TrainHooks(should_stop=stop_after(N))
    )
    assert stopped.progress.step == N
    halfway = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert halfway.progress["step"] == N and halfway.resume["hidden"] is not None

    resumed = resume_command(tmp_path / "resumed", {})
    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "straight" / name)
        b = load_checkpoint(tmp_path / "resumed" / name)
        assert_same(a.model_state, b.model_state, name)
        assert_same(a.resume, b.resume, name)  # optimizer, RNG and hidden state too
        assert a.progress["best_val_loss"] == b.progress["best_val_loss"]
    assert resumed.progress.step == straight.progress.step == 2 * N
    assert resumed.progress.chars_seen == straight.progress.chars_seen == 2 * N * 4 * 16
    assert resumed.progress.elapsed >= halfway.progress["elapsed"]
    records = metrics(tmp_path / "resumed")
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps))  # no step logged twice
    assert without_timing(records) == without_timing(metrics(tmp_path / "straight"))


def test_a_run_that_shows_previews_is_the_same_run_bit_for_bit(
    write_corpus, tmp_path, dropout_config
):
    corpus, config = write_corpus(), dropout_config(preview_chars=40)
    plain = train_command([corpus], config, out=tmp_path / "plain")
    previews: list[tuple[int, str]] = []
    shown = train_command(
        [corpus],
        config,
        out=tmp_path / "shown",
        hooks=TrainHooks(on_preview=lambda *p: previews.append(p)),
    )
    assert [step for step, _ in previews] == list(range(6, 2 * N + 1, 6))  # each evaluation
    assert all(len(text) == 40 for _, text in previews)
    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "plain" / name)
        b = load_checkpoint(tmp_path / "shown" / name)
        assert_same(a.model_state, b.model_state, name)
        assert_same(a.resume, b.resume, name)  # the random states too: dropout drew the same
    assert shown.progress.best_val_loss == plain.progress.best_val_loss
    assert without_timing(metrics(tmp_path / "shown")) == without_timing(
        metrics(tmp_path / "plain")
    )


def test_extending_a_finished_run_equals_one_long_run(write_corpus, tmp_path, dropout_config):
    # Constant learning rate: the schedule does not depend on the planned length.
    corpus = write_corpus()
    config = dropout_config(lr=1e-2, min_lr=1e-2, warmup_steps=0)
    straight = train_command([corpus], config, out=tmp_path / "straight")
    train_command([corpus], config.replace(max_steps=N), out=tmp_path / "extended")
    with pytest.raises(UsageError, match="already finished at step 12"):
        resume_command(tmp_path / "extended", {})
    extended = resume_command(tmp_path / "extended", {"max_steps": 2 * N})
    assert extended.progress.step == straight.progress.step == 2 * N
    assert extended.progress.chars_seen == straight.progress.chars_seen
    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "straight" / name)
        b = load_checkpoint(tmp_path / "extended" / name)
        assert_same(a.model_state, b.model_state, name)
    steps = [r["step"] for r in metrics(tmp_path / "extended")]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * N


def test_an_absurd_epoch_limit_leaves_the_step_limit_in_charge():
    config = RunConfig().replace(max_steps=30, max_epochs=1e308).train
    assert planned_steps(config, 7) == 30


# ----------------------------------------------------------------------------- fine-tuning


def test_init_from_extends_the_vocabulary_and_keeps_the_old_rows(
    write_corpus, tmp_path, tiny_config, repetitive_text
):
    base_dir = tmp_path / "base"
    train_command([write_corpus()], tiny_config(max_steps=4, eval_every=4), out=base_dir)
    base = load_checkpoint(base_dir / "best.pt")
    new_corpus = write_corpus("ZÉ€\n" + repetitive_text(2000), name="new.txt")

    # Stopped before its first step: last.pt holds the weights fine-tuning starts from.
    outcome = train_command(
        [new_corpus], tiny_config(), out=tmp_path / "start", init_from=base_dir / "best.pt",
        hooks=TrainHooks(should_stop=lambda: True),
    )  # fmt: skip
    assert len(outcome.warnings) == 1
    assert "3 new symbol(s)" in outcome.warnings[0] and "'€'" in outcome.warnings[0]
    start = load_checkpoint(tmp_path / "start" / "last.pt")
    old = base.vocab.size
    assert start.vocab.symbols[:old] == base.vocab.symbols
    assert set(start.vocab.symbols[old:]) == {ord(c) for c in "ZÉ€"}
    for name, tensor in base.model_state.items():
        if name.startswith(("embed.", "head.")):
            assert torch.equal(start.model_state[name][:old], tensor), name
            assert start.model_state[name].shape[0] == old + 3
        else:
            assert torch.equal(start.model_state[name], tensor), name

    # The real command line says so, trains, and the result evaluates on its own corpus.
    args = ["train", new_corpus, "--init-from", base_dir / "best.pt", "--out", "tuned"]
    result = invoke(*args, "--max-steps", "3", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("charrnn: warning: vocabulary extended with 3 new symbol(s)")
    tuned = load_checkpoint(tmp_path / "tuned" / "best.pt")
    assert tuned.vocab == start.vocab and tuned.config.model == base.config.model
    evaluated = invoke("eval", "--checkpoint", "tuned", "--json", "--device", "cpu", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr


# ----------------------------------------------------------------------------- interrupts


def _wait_for_training(process: subprocess.Popen[str], metrics_path: Path, size: int = 0) -> None:
    """Until the process has logged a step past `size` bytes of metrics (or 60 s pass)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if metrics_path.is_file() and metrics_path.stat().st_size > size:
            return
        time.sleep(0.02)
    assert process.poll() is None, process.communicate()[1]


@pytest.mark.parametrize(
    ("signum", "exit_code"), [(signal.SIGINT, EXIT_SIGINT), (signal.SIGTERM, EXIT_SIGTERM)]
)
def test_a_signal_saves_last_says_how_to_resume_and_exits_with_its_code(
    write_corpus, tmp_path, signum, exit_code
):
    write_corpus()
    args = ["train", "corpus.txt", "--out", "run", *CLI_FLAGS, "--max-steps", "100000"]
    process = charrnn_process(*args, "--log-every", "1", "--eval-every", "50", cwd=tmp_path)
    try:
        _wait_for_training(process, tmp_path / "run" / "metrics.jsonl")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    assert f"charrnn train --resume {Path('run')}" in stderr
    step = load_checkpoint(tmp_path / "run" / "last.pt").progress["step"]
    assert 1 <= step < 100000
    assert not temp_files(tmp_path)

    result = invoke("train", "--resume", "run", "--max-steps", str(step + 3), "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt").progress["step"] == step + 3


def test_a_second_ctrl_c_exits_at_once(capsys):
    previous = signal.getsignal(signal.SIGINT)
    with _Interrupts() as interrupts:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs between bytecodes
        assert interrupts.requested() and interrupts.exit_code == EXIT_SIGINT
        with pytest.raises(SystemExit) as info:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        assert info.value.code == EXIT_SIGINT
    assert "interrupted again" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is previous


def test_sigterm_asks_to_stop_with_exit_code_143():
    with _Interrupts() as interrupts:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert interrupts.requested() and interrupts.exit_code == EXIT_SIGTERM


# ----------------------------------------------------------------------------- crashes


def _assert_loadable(run_dir: Path) -> int:
    """Every checkpoint in `run_dir` loads; returns last.pt's step (-1 without one)."""
    for path in run_dir.glob("*.pt"):
        load_checkpoint(path)
    for path in temp_files(run_dir):  # a killed save's leftovers are never taken for a checkpoint
        assert not path.name.endswith(".pt")
    if any(run_dir.glob("*.pt")):
        assert resolve_checkpoint_path(run_dir).name in ("best.pt", "last.pt")
    metrics_path = run_dir / "metrics.jsonl"
    lines = metrics_path.read_text("utf-8").split("\n") if metrics_path.is_file() else []
    for line in lines[:-1]:  # only the line being written when killed may be cut
        json.loads(line)
    last = run_dir / "last.pt"
    return load_checkpoint(last).progress["step"] if last.is_file() else -1


def test_sigkill_at_random_moments_leaves_a_loadable_resumable_run(write_corpus, tmp_path):
    write_corpus()
    run_dir, rng, last_step = tmp_path / "run", random.Random(20240611), -1
    # Checkpoints every 2 steps: kills often land in the middle of a save.
    flags = [*CLI_FLAGS, "--eval-every", "2", "--log-every", "1"]
    for _ in range(4):
        if (run_dir / "last.pt").is_file():
            args = ["train", "--resume", "run", "--max-steps", "100000", "--quiet"]
        else:  # killed before the first last.pt: start again
            shutil.rmtree(run_dir, ignore_errors=True)
            args = ["train", "corpus.txt", "--out", "run", *flags, "--max-steps", "100000"]
        metrics_path = run_dir / "metrics.jsonl"
        size = metrics_path.stat().st_size if metrics_path.is_file() else 0
        process = charrnn_process(*args, cwd=tmp_path)
        try:
            _wait_for_training(process, metrics_path, size)
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            process.kill()
            process.wait()
        step = _assert_loadable(run_dir)
        assert step >= last_step  # a crash never loses a saved step
        last_step = step

    if last_step < 0:
        shutil.rmtree(run_dir)
        result = invoke("train", "corpus.txt", "--out", "run", *flags, "--max-steps", "4",
                        cwd=tmp_path)  # fmt: skip
    else:
        result = invoke("train", "--resume", "run", "--max-steps", str(last_step + 4), "-q",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not temp_files(run_dir)  # the next trainer cleared what killed saves left
    evaluated = invoke("eval", "--checkpoint", "run", "--json", "--device", "cpu", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert math.isfinite(json.loads(evaluated.stdout)["loss"])


# ----------------------------------------------------------------------------- failed saves


def _fail_torch_save(monkeypatch, fail_from: int, snapshot) -> None:
    real_save, calls = torch.save, []

    def save(payload, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) < fail_from:
            return real_save(payload, handle, *args, **kwargs)
        snapshot()
        handle.write(b"PK\x03\x04 half a checkpoint")
        # What torch raises on a real full disk (tests/test_full_disk.py fills a real one; this
        # stands in where a tmpfs cannot be mounted).
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
            ) from exc

    monkeypatch.setattr(charrnn.model.checkpoint.torch, "save", save)


def _fail_replace(monkeypatch, fail_from: int, snapshot) -> None:
    real_replace, calls = os.replace, []

    def replace(src, dst):
        if str(dst).endswith(".pt"):
            calls.append(1)
            if len(calls) >= fail_from:
                snapshot()
                raise PermissionError(errno.EACCES, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(charrnn.system.atomic.os, "replace", replace)


@pytest.mark.parametrize(
    ("fail", "reason"),
    [(_fail_torch_save, "No space left on device"), (_fail_replace, "Permission denied")],
    ids=["disk-full", "unwritable"],
)
def test_a_failed_save_keeps_the_previous_checkpoints(
    write_corpus, tmp_path, tiny_config, monkeypatch, fail, reason
):
    run_dir, before = tmp_path / "run", {}

    def snapshot() -> None:
        before.update({p.name: p.read_bytes() for p in run_dir.glob("*.pt")})

    fail(monkeypatch, 3, snapshot)  # saves 1 and 2 are best.pt and last.pt at step 5
    config = tiny_config(eval_every=5, max_steps=20)
    with pytest.raises(CheckpointError) as info:
        train_command([write_corpus()], config, out=run_dir)
    message = str(info.value)
    assert "\n" not in message and reason in message
    assert "previous checkpoint is unchanged" in message
    assert set(before) == {"best.pt", "last.pt"}
    for name, data in before.items():
        assert (run_dir / name).read_bytes() == data
        assert load_checkpoint(run_dir / name).progress["step"] == 5
    assert not temp_files(tmp_path)


def test_a_failed_save_is_one_line_and_exit_code_1_on_the_command_line(
    write_corpus, tmp_path, monkeypatch
):
    write_corpus()
    _fail_torch_save(monkeypatch, 1, lambda: None)
    result = invoke("train", "corpus.txt", "--out", "run", *CLI_FLAGS, "--max-steps", "3",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("charrnn: error: cannot save ")
    assert "No space left on device" in result.stderr
    assert not list((tmp_path / "run").glob("*.pt")) and not temp_files(tmp_path)


# ----------------------------------------------------------------------------- the lock


def test_a_second_trainer_on_the_same_run_directory_is_refused(write_corpus, tmp_path, tiny_config):
    corpus = write_corpus()
    train_command([corpus], tiny_config(max_steps=2, eval_every=2), out=tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from charrnn.run_dir import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(120)",
         str(tmp_path / "run")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "locked\n"
        resumed = invoke("train", "--resume", "run", "--max-steps", "4", "-q", cwd=tmp_path)
        assert resumed.returncode == 1
        assert resumed.stderr.startswith("charrnn: error: run directory run is in use")
        assert f"pid {holder.pid}" in resumed.stderr and resumed.stderr.count("\n") == 1
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the killed holder's lock: the run goes on.
    resumed = invoke("train", "--resume", "run", "--max-steps", "4", "-q", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr

    # A new run into a directory another trainer holds (no checkpoints yet) is refused too.
    (tmp_path / "fresh").mkdir()
    with run_lock(tmp_path / "fresh"):
        fresh = invoke("train", "corpus.txt", "--out", "fresh", *CLI_FLAGS, cwd=tmp_path)
    assert fresh.returncode == 1 and "is in use" in fresh.stderr
    assert not list((tmp_path / "fresh").glob("*.pt"))


# ----------------------------------------------------------------------------- non-finite


def _nan_loss_at(monkeypatch, bad_steps: set[int]) -> None:
    """The training loss (not the evaluation's) is NaN at these 0-based steps."""
    calls = []

    def cross_entropy(*args, **kwargs):
        loss = F.cross_entropy(*args, **kwargs)
        calls.append(1)
        return loss * math.nan if len(calls) - 1 in bad_steps else loss

    import charrnn.training.trainer as training_loop

    monkeypatch.setattr(training_loop, "F", SimpleNamespace(cross_entropy=cross_entropy))


def test_a_few_non_finite_steps_are_skipped_and_counted(
    write_corpus, tmp_path, tiny_config, monkeypatch
):
    _nan_loss_at(monkeypatch, {3, 12, 13, 14, 15})
    outcome = train_command([write_corpus()], tiny_config(), out=tmp_path / "run")
    assert outcome.progress.step == 20 and outcome.progress.skipped_steps == 5
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last.progress["skipped_steps"] == 5
    assert all(torch.isfinite(t).all() for t in last.model_state.values())
    assert all(math.isfinite(r["train_loss"]) for r in metrics(tmp_path / "run"))


def test_non_finite_steps_in_a_row_stop_training_and_keep_the_checkpoints(
    write_corpus, tmp_path, tiny_config, monkeypatch
):
    _nan_loss_at(monkeypatch, set(range(12, 100)))
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train_command([write_corpus()], tiny_config(), out=run_dir)
    message = str(info.value)
    assert f"{MAX_BAD_STEPS} steps in a row at step {12 + MAX_BAD_STEPS - 1}" in message
    assert "(gradient norm nan)" in message and "--grad-clip" in message
    assert "lower --lr" in message and "\n" not in message
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(run_dir / name).progress["step"] == 10


@pytest.mark.parametrize("save", ["interrupt", "evaluation"])
def test_nan_weights_never_overwrite_a_checkpoint(
    write_corpus, tmp_path, tiny_config, monkeypatch, save
):
    real_step = Trainer.train_step

    def poisoned_step(self, inputs, targets, lr):
        loss = real_step(self, inputs, targets, lr)
        if self.progress.step == 7:  # finite gradients, but the weights blow up
            with torch.no_grad():
                self.model.head.bias.fill_(math.inf)
        return loss

    monkeypatch.setattr(Trainer, "train_step", poisoned_step)
    run_dir = tmp_path / "run"
    stop = stop_after(9) if save == "interrupt" else (lambda: False)
    config = tiny_config(eval_every=5, max_steps=20)
    with pytest.raises(TrainingError, match="weights became non-finite at step (9|10)"):
        train_command([write_corpus()], config, out=run_dir, hooks=TrainHooks(should_stop=stop))
    for name in ("best.pt", "last.pt"):
        checkpoint = load_checkpoint(run_dir / name)
        assert checkpoint.progress["step"] == 5
        assert all(torch.isfinite(t).all() for t in checkpoint.model_state.values())


# ----------------------------------------------------------------------------- damaged files


@functools.cache
def _checkpoint_bytes() -> bytes:
    config = RunConfig().replace(hidden=4, embed=2)
    vocab = Vocab(tuple(map(ord, "\nab")))
    checkpoint = Checkpoint(config, vocab, CharRNN(config.model, vocab.size).state_dict())
    buffer = io.BytesIO()
    torch.save(checkpoint.to_payload(), buffer)
    return buffer.getvalue()


@st.composite
def damaged_checkpoints(draw) -> bytes:
    data = bytearray(_checkpoint_bytes())
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=200).map(str.encode) | damaged_checkpoints())
def test_any_file_loads_or_is_a_one_line_checkpoint_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("damaged") / "file.pt"
    path.write_bytes(data)
    try:
        load_checkpoint(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)

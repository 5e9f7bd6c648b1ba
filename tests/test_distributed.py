"""Data-parallel training under torchrun: the same run as one process, resume, signals, a dead rank.

Each test launches the real launcher (`python -m torch.distributed.run --standalone`) with two CPU
processes on the gloo backend, one OpenMP thread each, and a 16-unit LSTM on a 4 KB corpus; the
one-process runs they are compared with run in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from child import CHILD_ENV
from test_cli import assert_one_error_line, invoke

from benchmarks.corpus import corpus_text
from benchmarks.distributed import why_it_failed
from charrnn.commands import eval_command, info_command, resume_command, train_command
from charrnn.config import resolve_config
from charrnn.errors import UsageError
from charrnn.model.checkpoint import load_checkpoint
from charrnn.text.corpus import StreamBatches, eval_windows
from charrnn.training.distributed import Placement, check_batch_split, placement_from_env

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform != "linux",
    reason="needs torch.distributed and Linux (/proc, to find a rank's process)",
)

STEPS = 20
FLAGS = [
    "--hidden", "16", "--embed", "8", "--batch-size", "4", "--seq-len", "16",
    "--max-steps", str(STEPS), "--eval-every", "10", "--log-every", "5", "--eval-streams", "2",
    "--warmup-steps", "0", "--dropout", "0", "--device", "cpu", "--precision", "fp32",
    "--threads", "1", "--quiet",
]  # fmt: skip
SAME_AS_FLAGS = {
    "hidden": 16, "embed": 8, "batch_size": 4, "seq_len": 16, "max_steps": STEPS,
    "eval_every": 10, "log_every": 5, "eval_streams": 2, "warmup_steps": 0, "dropout": 0.0,
    "device": "cpu", "precision": "fp32", "threads": 1,
}  # fmt: skip


def torchrun_argv(
    *args: str | Path, processes: int = 2, program: tuple[str, ...] = ("-m", "charrnn")
) -> list[str]:
    """`torchrun --standalone --nproc_per_node N -m charrnn ARGS` under this interpreter (or
    another `program`: a script)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(processes), "--monitor-interval", "0.2",
        *program, *map(str, args),
    ]  # fmt: skip


def torchrun(*args: str | Path, cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun_argv(*args, processes=processes),
        cwd=cwd, env=CHILD_ENV, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def start_torchrun(*args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        torchrun_argv(*args), cwd=cwd, env=CHILD_ENV, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def charrnn_lines(stderr: str) -> list[str]:
    """The lines charrnn itself wrote (torchrun adds its own logging around them)."""
    return [line for line in stderr.splitlines() if line.startswith("charrnn:")]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def rank_pid(launcher: subprocess.Popen[str], rank: int) -> int | None:
    """The pid of the worker of `rank` among the launcher's children (its RANK variable)."""
    for task in Path(f"/proc/{launcher.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(pid)
    return None


def wait_for(condition, process: subprocess.Popen[str], limit: float = 120) -> None:
    """Until `condition()` holds while `process` runs (the limit only stops a hung test)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the job never got there"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, repetitive_text) -> Path:
    """One 2-process run and the same run in one process, on one corpus."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "corpus.txt").write_text(repetitive_text(4000), "utf-8")
    result = torchrun("train", "corpus.txt", "--out", "two", *FLAGS, cwd=root)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    train_command([root / "corpus.txt"], resolve_config(overrides=SAME_AS_FLAGS), out=root / "one")
    return root


# ----------------------------------------------------------------------------- the same run


def test_two_processes_train_the_same_model_as_one_with_the_same_global_batch(jobs):
    one = load_checkpoint(jobs / "one" / "last.pt")
    two = load_checkpoint(jobs / "two" / "last.pt")
    assert two.progress["step"] == one.progress["step"] == STEPS
    assert two.progress["chars_seen"] == one.progress["chars_seen"] == STEPS * 4 * 16
    assert abs(two.progress["val_loss"] - one.progress["val_loss"]) < 2e-3
    for name, weights in one.model_state.items():
        assert torch.allclose(two.model_state[name], weights, rtol=1e-4, atol=1e-5), name
    # The hidden state of all four streams, joined from the two ranks, as one process holds it.
    for saved, single in zip(two.resume["hidden"], one.resume["hidden"], strict=True):
        assert saved.shape == single.shape == (1, 4, 16)
        assert torch.allclose(saved, single, atol=1e-5)
    assert two.resume["world_size"] == 2 and len(two.resume["rank_rng"]) == 2


def test_rank_zero_alone_writes_one_metrics_line_per_log_with_the_jobs_loss(jobs):
    one, two = metrics(jobs / "one"), metrics(jobs / "two")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [5, 10, 15, 20]
    for a, b in zip(one, two, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4  # the mean over both ranks
        # The norm of the averaged (all-reduced) gradient: one rank's own would differ.
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
        assert b["grad_norm_max"] == pytest.approx(a["grad_norm_max"], rel=1e-3)
        assert b["clip_share"] == a["clip_share"]
        assert ("val_loss" in a) == ("val_loss" in b)
        assert b["chars"] == a["chars"]
    assert json.loads((jobs / "two" / "config.json").read_text())["train"]["batch_size"] == 4
    assert sorted(p.name for p in (jobs / "two").iterdir()) == [
        ".lock", "best.pt", "config.json", "last.pt", "metrics.jsonl",
    ]  # fmt: skip


def test_a_checkpoint_of_two_processes_serves_one_process_unchanged(jobs):
    details = info_command(jobs / "two")
    assert details["step"] == STEPS and details["config"]["train"]["batch_size"] == 4
    scored = eval_command(jobs / "two", [], device_name="cpu", threads=1)
    assert abs(scored.loss - load_checkpoint(jobs / "two" / "best.pt").progress["val_loss"]) < 1e-5
    sampled = invoke("sample", "--checkpoint", "two", "--length", "20", "--seed", "1", cwd=jobs)
    assert sampled.returncode == 0 and len(sampled.stdout.rstrip("\n")) == 20


# ----------------------------------------------------------------------------- resume and signals


def test_sigterm_on_the_launcher_saves_last_and_a_resume_with_two_equals_the_unbroken_run(
    jobs, tmp_path
):
    (tmp_path / "corpus.txt").write_bytes((jobs / "corpus.txt").read_bytes())
    slow = [*FLAGS, "--log-every", "1"]
    launcher = start_torchrun("train", "corpus.txt", "--out", "run", *slow, cwd=tmp_path)
    try:
        log = tmp_path / "run" / "metrics.jsonl"
        wait_for(lambda: log.is_file() and log.stat().st_size > 0, launcher)
        launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=90)
    finally:
        launcher.kill()
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    step = saved.progress["step"]
    assert 1 <= step < STEPS, stderr  # stopped in the middle: both ranks at the same step
    said = charrnn_lines(stderr)
    assert said == [
        f"charrnn: stopped at step {step:,}; saved {Path('run') / 'last.pt'}. "
        f"Resume with: charrnn train --resume {Path('run')}"
    ], stderr  # rank 0 alone speaks
    assert launcher.returncode != 0  # torchrun's own code after a signal (1), not the ranks'

    resumed = torchrun("train", "--resume", "run", "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    straight, again = (
        load_checkpoint(jobs / "two" / "last.pt"),
        load_checkpoint(tmp_path / "run" / "last.pt"),
    )
    for name, weights in straight.model_state.items():
        assert torch.equal(again.model_state[name], weights), name
    timing = ("elapsed_s", "chars_per_s", "eval_s", "threads")
    kept = [{k: v for k, v in r.items() if k not in timing} for r in metrics(tmp_path / "run")]
    steps = [r["step"] for r in kept]
    assert steps == list(range(1, STEPS + 1))  # every step logged once, through the stop
    reference = {r["step"]: r for r in metrics(jobs / "two")}
    for record in kept:
        if record["step"] in reference and "val_loss" in record:
            assert record["val_loss"] == reference[record["step"]]["val_loss"]


def test_resuming_with_another_process_count_says_so(jobs, monkeypatch):
    with pytest.raises(UsageError, match="trained by 2 processes; resume it with the same count"):
        resume_command(jobs / "two", {"max_steps": STEPS + 5})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UsageError, match=r"trained by one process \(no torchrun\)"):
        resume_command(jobs / "one", {"max_steps": STEPS + 5})


def test_a_batch_that_does_not_split_among_the_ranks_is_refused(jobs, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    result = invoke("train", "corpus.txt", "--out", "three", *FLAGS, cwd=jobs)
    line = assert_one_error_line(result, 2)
    assert "--batch-size 4 cannot be split evenly among 3 processes" in line
    assert not (jobs / "three").exists()


def test_a_collective_timeout_under_a_second_is_refused(jobs):
    result = invoke("train", "corpus.txt", "--out", "t", *FLAGS, "--collective-timeout", "0.5s",
                    cwd=jobs)  # fmt: skip
    line = assert_one_error_line(result, 2)
    assert line == "charrnn: error: collective_timeout must be at least 1 second, got 0.5"


# ----------------------------------------------------------------------------- a rank that dies


def test_a_killed_rank_ends_the_job_with_a_line_naming_it_and_last_intact(jobs, tmp_path):
    (tmp_path / "corpus.txt").write_bytes((jobs / "corpus.txt").read_bytes())
    endless = [*FLAGS, "--max-steps", "1000000", "--eval-every", "5", "--collective-timeout", "30"]
    launcher = start_torchrun("train", "corpus.txt", "--out", "run", *endless, cwd=tmp_path)
    try:
        last = tmp_path / "run" / "last.pt"
        wait_for(last.is_file, launcher)
        victim = rank_pid(launcher, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=90)  # bounded: the job must end by itself
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    errors = [line for line in charrnn_lines(stderr) if line.startswith("charrnn: error:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("charrnn: error: rank 1 of 2 stopped answering while "), stderr
    saved = load_checkpoint(last)  # intact: loads, a step that was evaluated
    assert saved.progress["step"] % 5 == 0 and saved.progress["step"] >= 5
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp-" in p.name]


# ----------------------------------------------------------------------------- the end of a job

# Two ranks in `joined`, as `charrnn train` uses it: rank 0 takes a while over its last save;
# rank 1 is done at once, and with "vanish" it is gone without leaving the group (a rank that
# died at the end). Each rank writes what it saw once it has left to a file of its own (not to
# the shared stdout, where torch or the launcher may print too).
END_OF_JOB = """
import os, sys, time
from pathlib import Path
import torch
from charrnn.training.distributed import joined, placement_from_env

saved = Path(sys.argv[1])
with joined(placement_from_env(), torch.device("cpu"), 300) as world:
    if world.rank == 0:
        time.sleep(2)
        saved.write_text("saved")
    elif sys.argv[2] == "vanish":
        os._exit(0)
Path(f"left-{world.rank}.txt").write_text(f"rank {world.rank} left; saved: {saved.is_file()}")
"""


def end_of_job(tmp_path: Path, rank_one: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The job's end, and what each rank that left the group saw (in rank order)."""
    (tmp_path / "end.py").write_text(END_OF_JOB, "utf-8")
    done = subprocess.run(
        torchrun_argv("last.pt", rank_one, program=("end.py",)),
        cwd=tmp_path, env=CHILD_ENV, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    return done, [path.read_text() for path in sorted(tmp_path.glob("left-*.txt"))]


def test_every_rank_leaves_the_group_only_after_rank_zeros_last_save(tmp_path):
    done, left = end_of_job(tmp_path, "stay")
    assert done.returncode == 0, done.stderr
    assert left == [
        "rank 0 left; saved: True",
        "rank 1 left; saved: True",
    ]


def test_a_rank_gone_at_the_end_does_not_fail_the_finished_saved_job(tmp_path):
    started = time.monotonic()
    done, left = end_of_job(tmp_path, "vanish")
    assert done.returncode == 0, done.stderr
    assert left == ["rank 0 left; saved: True"]
    assert time.monotonic() - started < 150  # rank 0 did not wait out the 300 s timeout for it


STRESS_RUNS = 50  # issue 23: a rank's SIGABRT at the end, once in ~40 such runs before the fix


@pytest.mark.slow
def test_short_runs_back_to_back_end_cleanly_half_of_them_beside_a_busy_process(tmp_path):
    """The quick benchmark's 1 s run (a 32-unit model on 20 kB), again and again: every job exits
    0 with last.pt saved; every other run shares the CPUs with a process that spins."""
    (tmp_path / "corpus.txt").write_text(corpus_text()[:20_000], "utf-8")
    quick = [
        "--max-time", "1s", "--hidden", "32", "--embed", "16", "--eval-every", "1000000",
        "--log-every", "20", "--threads", "1", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    failures = []
    for run in range(STRESS_RUNS):
        out = tmp_path / f"run{run}"
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if run % 2 else None
        try:
            done = torchrun("train", "corpus.txt", "--out", out, *quick, cwd=tmp_path)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        if done.returncode != 0 or not (out / "last.pt").is_file():
            failures.append(f"run {run} (busy: {busy is not None}) exited {done.returncode}: "
                            f"{why_it_failed(done.stderr)}")  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
    print(
        f"{STRESS_RUNS - len(failures)}/{STRESS_RUNS} clean, {STRESS_RUNS // 2} beside a busy loop"
    )
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- placement


def test_placement_comes_from_torchruns_variables():
    assert placement_from_env({}) == Placement()
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    placement = placement_from_env(env)
    assert placement == Placement(3, 4, 1, 2) and not placement.is_writer
    with pytest.raises(UsageError, match="RANK 4 does not fit WORLD_SIZE 4"):
        placement_from_env({**env, "RANK": "4"})
    check_batch_split(8, placement)
    with pytest.raises(UsageError, match="--batch-size 6 cannot be split evenly among 4"):
        check_batch_split(6, placement)


@pytest.mark.parametrize(("streams", "parts"), [(4, 2), (5, 2), (3, 4), (16, 3)])
def test_the_shares_of_an_evaluation_score_every_prediction_once_as_one_process_does(
    streams, parts
):
    ids = np.arange(1, 2001, dtype=np.int64) % 97
    whole = list(eval_windows(ids, streams, 64))
    shares = [list(eval_windows(ids, streams, 64, (index, parts))) for index in range(parts)]
    for window, pieces in enumerate(zip(*[s for s in shares if s], strict=True)):
        assert np.array_equal(np.concatenate([p[0] for p in pieces]), whole[window][0])
        assert np.array_equal(np.concatenate([p[1] for p in pieces]), whole[window][1])
    assert sum(1 for s in shares if not s) == max(0, parts - streams)  # more ranks than streams


def test_the_ranks_streams_are_disjoint_rows_of_the_one_process_batch():
    ids = np.arange(3000, dtype=np.int64) % 50
    whole = StreamBatches(ids, 8, 16)
    shares = [StreamBatches(ids, 8, 16, part=(rank, 4)) for rank in range(4)]
    for step in (0, 3, whole.steps_per_epoch + 1):
        inputs, targets = whole.batch(step)
        assert np.array_equal(np.concatenate([s.batch(step)[0] for s in shares]), inputs)
        assert np.array_equal(np.concatenate([s.batch(step)[1] for s in shares]), targets)
    assert all(s.chars_per_step == whole.chars_per_step == 8 * 16 for s in shares)

"""A full disk, for real: every write path on a 3 MB tmpfs filled up, with torch's own exceptions.

Mounting needs root (CI runs as root); where it is not permitted the tests skip and say why.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from test_cli import invoke

from charrnn.commands import write_run_config
from charrnn.config import DataConfig, RunConfig
from charrnn.errors import CharRNNError
from charrnn.model.checkpoint import atomic_save, load_checkpoint
from charrnn.run_dir import MetricsLog, run_lock
from charrnn.text.corpus import prepare_corpus

FLAGS = [
    "--hidden", "32", "--embed", "8", "--batch-size", "4", "--seq-len", "16", "--device", "cpu",
    "--precision", "fp32", "--threads", "1", "--quiet", "--eval-every", "5", "--log-every", "5",
]  # fmt: skip
PAGE = 4096  # tmpfs hands out space in pages


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MB filesystem (tmpfs) at tmp_path/disk, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        pytest.skip("a size-limited tmpfs needs Linux and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or 'not permitted'}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Take the free space of `disk` with one file, all but `leave` bytes."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with (disk / "filler").open("ab") as handle:
        handle.write(b"\0" * max(0, free - leave))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` but the filler, by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "filler"
    }


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


def test_torch_really_raises_a_runtime_error_chained_to_enospc(disk):
    # What the other tests meet: not the OSError a mock would raise.
    fill(disk)
    handle = (disk / "raw.pt").open("wb")
    with pytest.raises(RuntimeError) as info:
        torch.save({"w": torch.zeros(100_000)}, handle)
    with pytest.raises(OSError):  # closing flushes what is still buffered: the disk is full
        handle.close()
    cause = info.value.__cause__ or info.value.__context__
    assert "inline_container" in str(info.value)
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC


def _save(path: Path) -> Callable[[], None]:
    return lambda: atomic_save({"w": torch.zeros(100_000)}, path)


def _cache(path: Path) -> Callable[[], None]:
    corpus = path.parent / "big.txt"  # written before the disk fills: only the cache is new
    corpus.write_text("abcdefgh\n" * 20_000, "utf-8")
    return lambda: prepare_corpus([corpus], DataConfig(), path.parent / ".cache")


def _config_json(path: Path) -> Callable[[], None]:
    return lambda: write_run_config(path.parent, RunConfig(), {"sources": ["x" * 5000]})


def _metrics_append(path: Path) -> Callable[[], None]:
    path.write_bytes(b'{"step": 1}'.ljust(PAGE - 1) + b"\n")  # a full page: a new line needs one
    return lambda: MetricsLog(path).append({"step": 2, "text": "y" * 3 * PAGE})


def _metrics_rewrite(path: Path) -> Callable[[], None]:
    path.write_text("".join(f'{{"step": {i}, "pad": "{"z" * 100}"}}\n' for i in range(100)))
    return lambda: MetricsLog(path).truncate_after(90)


def _lock(path: Path) -> Callable[[], None]:
    def lock() -> None:
        with run_lock(path.parent):
            pass

    return lock


@pytest.mark.parametrize(
    ("name", "writer", "leave"),
    [
        ("last.pt", _save, PAGE),
        ("corpus cache", _cache, 0),
        ("config.json", _config_json, 0),
        ("metrics.jsonl", _metrics_append, PAGE),  # a page of the line fits: it is taken back
        ("metrics.jsonl", _metrics_rewrite, 0),
        (".lock", _lock, 0),
    ],
    ids=["checkpoint", "cache", "config-json", "metrics-append", "metrics-rewrite", "lock"],
)
def test_every_write_on_a_full_disk_is_one_line_and_keeps_the_previous_file(
    disk, name, writer, leave
):
    run_dir = disk / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"the previous checkpoint")
    (run_dir / "config.json").write_text('{"previous": true}\n')
    write = writer(run_dir / name)
    fill(disk, leave)
    before = snapshot(disk)
    with pytest.raises(CharRNNError) as info:
        write()
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message
    assert name in message
    after = snapshot(disk)
    if name == ".lock":  # the lock is the open file itself; it stays, empty (no space taken)
        assert after.pop("run/.lock") == b""
    assert after == before  # the previous files, byte for byte; nothing half written
    assert not temp_files(disk)


def test_training_that_fills_the_disk_stops_with_one_line_and_loses_nothing(disk, repetitive_text):
    (disk / "corpus.txt").write_text(repetitive_text(4000), "utf-8")
    first = invoke("train", "corpus.txt", "--out", "run", *FLAGS, "--max-steps", "5", cwd=disk)
    assert first.returncode == 0, first.stderr
    saved = snapshot(disk / "run")
    # Room for the metrics lines, not for a checkpoint: the save at step 10 fails.
    fill(disk, leave=2 * PAGE)
    failed = invoke("train", "--resume", "run", "--max-steps", "10", "-q", cwd=disk)
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.startswith("charrnn: error: cannot save run/")
    assert "No space left on device; the previous checkpoint is unchanged" in failed.stderr
    for name in ("best.pt", "last.pt"):
        assert (disk / "run" / name).read_bytes() == saved[name]
    assert load_checkpoint(disk / "run" / "last.pt").progress["step"] == 5
    assert not temp_files(disk)

    # Resuming on the full disk fails at once, in one line, and changes nothing.
    fill(disk)
    full = snapshot(disk / "run")
    again = invoke("train", "--resume", "run", "--max-steps", "10", "-q", cwd=disk)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "No space left on device" in again.stderr
    assert snapshot(disk / "run") == full and not temp_files(disk)

    # With space again, the run goes on from where it was saved.
    (disk / "filler").unlink()
    resumed = invoke("train", "--resume", "run", "--max-steps", "10", "-q", cwd=disk)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(disk / "run" / "last.pt").progress["step"] == 10


def test_a_new_run_on_a_full_disk_is_one_line_and_leaves_nothing(disk, repetitive_text):
    (disk / "corpus.txt").write_text(repetitive_text(4000), "utf-8")
    fill(disk)
    result = invoke("train", "corpus.txt", "--out", "run", *FLAGS, "--max-steps", "5", cwd=disk)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("charrnn: error: cannot write the corpus cache in .cache")
    assert "No space left on device" in result.stderr
    assert not temp_files(disk) and not list(disk.rglob("*.npy"))


def test_sample_output_on_a_full_disk_keeps_the_earlier_file_whole(disk, repetitive_text):
    (disk / "corpus.txt").write_text(repetitive_text(4000), "utf-8")
    trained = invoke("train", "corpus.txt", "--out", "run", *FLAGS, "--max-steps", "5", cwd=disk)
    assert trained.returncode == 0, trained.stderr
    sample = ("sample", "--checkpoint", "run", "--length", str(3 * PAGE), "--seed", "1",
              "--output", "out.txt")  # fmt: skip
    first = invoke(*sample, cwd=disk)
    assert first.returncode == 0, first.stderr
    earlier = (disk / "out.txt").read_bytes()
    assert len(earlier) > 3 * PAGE
    fill(disk, leave=PAGE)  # room for a page, not for the new sample
    failed = invoke(*sample[:-2], "--seed", "2", "--output", "out.txt", cwd=disk)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1
    assert failed.stderr.startswith("charrnn: error: cannot write out.txt: No space left")
    assert (disk / "out.txt").read_bytes() == earlier and not temp_files(disk)

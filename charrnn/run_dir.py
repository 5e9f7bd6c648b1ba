"""A run directory: the one place that knows what a run writes and under which names.

    best.pt        the checkpoint with the lowest validation loss so far
    last.pt        the latest checkpoint, with everything resuming needs
    config.json    the run's settings and corpus, for people and tools
    metrics.jsonl  one JSON object per log line, appended as training goes
    memory.json    the last `--memory` analysis of the validation split, with what it was of
    .lock          held (flock) by the one process training there

Training writes through `RunDir`; `resume`, `eval`, `compare`, `plot` and every command that takes
"a checkpoint or a run directory" read through it. No torch and no numpy: `plot` and `compare`
read runs and must start at once.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn.errors import CheckpointError, TrainingError, UsageError, WriteError
from charrnn.system.atomic import atomic_write_json, atomic_write_text, stale_temp_files

BEST_NAME, LAST_NAME = "best.pt", "last.pt"
CONFIG_NAME, METRICS_NAME = "config.json", "metrics.jsonl"
LOCK_NAME = ".lock"
MEMORY_NAME = "memory.json"


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory (which need not exist yet)."""

    path: Path

    @classmethod
    def of(cls, path: Path) -> RunDir:
        """The run `path` names: a run directory, or a file inside one (its best.pt)."""
        path = Path(path)
        return cls(path.parent if path.is_file() else path)

    @property
    def best(self) -> Path:
        return self.path / BEST_NAME

    @property
    def last(self) -> Path:
        return self.path / LAST_NAME

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_NAME

    def read_memory(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The cached memory analysis made under `key` (its checkpoint and sizes), else None."""
        try:
            saved = json.loads((self.path / MEMORY_NAME).read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("key") != key:
            return None
        return saved.get("memory")

    def write_memory(self, key: dict[str, Any], memory: dict[str, Any]) -> None:
        """Cache a memory analysis made under `key`; a directory that cannot take it is left
        as it was (it is only a cache)."""
        with contextlib.suppress(WriteError):
            atomic_write_json(self.path / MEMORY_NAME, {"key": key, "memory": memory})

    def checkpoint(self) -> Path | None:
        """Its best.pt, else its last.pt, else None (no evaluation yet)."""
        for path in (self.best, self.last):
            if path.is_file():
                return path
        return None

    def create(self) -> None:
        """Make the directory for a new run; one holding a resumable run is refused."""
        # Only a resumable run is protected: a run killed before its first last.pt starts over.
        if self.last.exists():
            raise UsageError(
                f"run directory {self.path} already holds checkpoints; use --resume {self.path} "
                "to continue it or choose another --out"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create run directory {self.path}: {exc.strerror or exc}"
            ) from None

    def resumable(self) -> Path:
        """The last.pt a resume continues from; a missing directory or file is the user's error."""
        if not self.path.is_dir():
            raise UsageError(f"--resume needs a run directory; not found: {self.path}")
        if not self.last.is_file():
            raise CheckpointError(f"run directory {self.path} has no {LAST_NAME} to resume from")
        return self.last

    def remove_leftovers(self) -> None:
        """Delete the temporary files a killed save left (call it holding the lock)."""
        for stale in stale_temp_files(self.path):
            stale.unlink(missing_ok=True)

    def write_config(self, record: dict[str, Any]) -> None:
        """config.json, written atomically; a full disk is a `TrainingError`."""
        try:
            atomic_write_json(self.config, record)
        except WriteError as exc:
            raise TrainingError(str(exc)) from None

    def read_config(self) -> dict[str, Any]:
        """config.json as a dict; a directory without one is not a run."""
        if not self.path.exists():
            raise UsageError(f"run directory not found: {self.path}")
        if not self.path.is_dir() or not self.config.is_file():
            raise UsageError(f"{self.path} is not a run directory (it has no {CONFIG_NAME})")
        try:
            saved = json.loads(self.config.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"{self.config}: not a readable run configuration ({exc})") from None
        if not isinstance(saved, dict):
            raise UsageError(f"{self.config}: not a readable run configuration (not an object)")
        return saved

    def read_metrics(self) -> list[dict[str, Any]]:
        """The metrics lines with a step, in order (none before the first is written)."""
        if not self.metrics.is_file():
            return []
        return [r for _, r in read_jsonl(self.metrics) if isinstance(r.get("step"), int)]

    def metrics_log(self) -> MetricsLog:
        return MetricsLog(self.metrics)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the run's lock (see `run_lock`)."""
        return run_lock(self.path)


def checkpoint_in(path: Path) -> Path:
    """A checkpoint file, or a run directory's best.pt (else last.pt); the user's error if
    neither (`model.checkpoint.resolve_checkpoint_path` adds the built-in models' names)."""
    path = Path(path)
    if path.is_dir():
        found = RunDir(path).checkpoint()
        if found is None:
            raise CheckpointError(f"run directory {path} has no checkpoint yet (no {BEST_NAME})")
        return found
    if not path.exists():
        raise UsageError(f"checkpoint not found: {path}")
    return path


def read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each line of a JSON-lines file that holds a JSON object, with the object; lines that do
    not (a half-written last line of a killed run) are skipped."""
    try:
        lines = path.read_text("utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield line, record


class MetricsLog:
    """metrics.jsonl: one JSON object per log line, flushed as written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` and any half-written last line (before resuming at `step`)."""
        if not self.path.exists():
            return
        kept = [line + "\n" for line, r in read_jsonl(self.path) if r.get("step", 0) <= step]
        try:
            atomic_write_text(self.path, "".join(kept))
        except WriteError as exc:
            raise TrainingError(str(exc)) from None

    def append(self, record: dict[str, Any]) -> None:
        """Add one line; a failed write (a full disk) cuts the file back to its previous lines."""
        line = (json.dumps(record) + "\n").encode("utf-8")
        try:
            with self.path.open("ab", buffering=0) as handle:  # unbuffered: no retry on close
                size = handle.seek(0, os.SEEK_END)
                try:
                    view = memoryview(line)
                    while view:  # a write may take part of the line: a disk filling up
                        view = view[handle.write(view) or len(view) :]
                except OSError:
                    handle.truncate(size)  # shrinking needs no space
                    raise
        except OSError as exc:
            raise TrainingError(f"cannot write {self.path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a run directory; a second trainer there fails at once.

    The lock is an OS file lock (flock), released by the kernel when the process dies, so a
    killed run never leaves it stuck. Where flock does not exist (Windows) it does nothing.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = run_dir / LOCK_NAME
    try:  # unbuffered: a failed write fails here, not again when the file is closed
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise TrainingError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(handle, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise TrainingError(
                f"run directory {run_dir} is in use by another charrnn train (pid {owner}); "
                "wait for it to finish or use another run directory"
            ) from None
        try:  # the pid is only for the message above; a full disk fails here, at the start
            os.ftruncate(handle, 0)
            os.pwrite(handle, str(os.getpid()).encode("ascii"), 0)
        except OSError as exc:
            raise TrainingError(f"cannot write {path}: {exc.strerror or exc}") from None
        yield
    finally:
        os.close(handle)

"""Writing files so that a crash, a kill or a full disk never leaves a damaged one.

Every file charrnn writes (checkpoints, the corpus cache, config.json, metrics.jsonl) goes through
`atomic_write`: the bytes go to a temporary file beside the target, are flushed and fsynced, and
the temporary file is renamed over the target. At any instant the target is either the old file
or the new one. This module imports neither torch nor numpy, so `prepare` can use it and start fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from charrnn.errors import WriteError

TEMP_MARK = ".tmp-"  # in the name of every temporary file: `.NAME.tmp-PID`


def temp_path(path: Path) -> Path:
    """The temporary name `path` is written under before the rename: `.NAME.tmp-PID`."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def stale_temp_files(directory: Path) -> Iterator[Path]:
    """Temporary files a killed writer left in `directory`."""
    return directory.glob(f".*{TEMP_MARK}*")


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def os_error_in(exc: BaseException) -> OSError | None:
    """The `OSError` behind `exc`: itself, or one in its cause/context chain.

    torch.save reports a failed write (a full disk) as a RuntimeError from its zip writer,
    chained to the OSError that Python's file object raised.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def write_failure_reason(exc: BaseException) -> str:
    """A short reason for a failed write: the OS's words (e.g. 'No space left on device')."""
    os_error = os_error_in(exc)
    if os_error is not None:
        return os_error.strerror or str(os_error) or type(os_error).__name__
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(handle)` on a temporary file beside `path`, fsync it and rename it over `path`.

    On any failure the temporary file is removed and `path` is left as it was. A failure of the
    disk (an `OSError`, or torch's RuntimeError wrapping one) raises `WriteError`; anything else
    (a programming error) propagates unchanged.
    """
    tmp = temp_path(path)
    try:
        with tmp.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if os_error_in(exc) is None and not _is_torch_write_failure(exc):
            raise
        raise WriteError(path, write_failure_reason(exc)) from None
    finally:  # also on a second Ctrl-C (SystemExit) mid-write
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)


def _is_torch_write_failure(exc: BaseException) -> bool:
    # torch's zip writer sometimes loses the OSError and says only where it stopped.
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("unexpected pos" in text or "file write" in text)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` as UTF-8 to `path` atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")

"""The one way tests run the real `charrnn` command in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# One OpenMP thread, as the in-process tests use; UTF-8 pipes whatever the locale.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
# All the machine's threads, as a user gets them.
USER_ENV = {
    **{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
    "PYTHONIOENCODING": "utf-8",
}


def charrnn_argv(*args: str | Path) -> list[str]:
    """The command line of `charrnn ARGS` under this interpreter."""
    return [sys.executable, "-m", "charrnn", *map(str, args)]


def run_charrnn(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `charrnn ARGS` in `cwd` to the end and capture its output as text."""
    return subprocess.run(
        charrnn_argv(*args),
        cwd=cwd,
        env=env or CHILD_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_charrnn(*args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    """Start `charrnn ARGS` in `cwd` with its output piped (for signals and kills)."""
    return subprocess.Popen(
        charrnn_argv(*args),
        cwd=cwd,
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

"""Shared fixtures: one CPU thread, tiny corpora and tiny configurations.

Every test keeps models at hidden <= 32 and corpora at a few KB so the suite runs in well under
a few minutes on two cores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from charrnn.config import RunConfig, resolve_config

torch.set_num_threads(1)

# A repetitive text: a tiny model learns it within tens of steps.
VERSE = (
    "the quick brown fox jumps over the lazy dog.\n"
    "a stitch in time saves nine.\n"
    "to be or not to be, that is the question.\n"
)


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)


def _repetitive_text(n_chars: int) -> str:
    return (VERSE * (n_chars // len(VERSE) + 1))[:n_chars]


@pytest.fixture(scope="session")
def repetitive_text() -> Callable[[int], str]:
    """`VERSE` repeated to exactly `n_chars` characters."""
    return _repetitive_text


@pytest.fixture
def write_corpus(tmp_path: Path) -> Callable[..., Path]:
    """Write text (default: ~4 KB of `VERSE`) to a file under tmp_path and return its path."""

    def write(text: str | None = None, name: str = "corpus.txt") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((_repetitive_text(4000) if text is None else text).encode("utf-8"))
        return path

    return write


def _tiny_config(**overrides: Any) -> RunConfig:
    base: dict[str, Any] = {
        "hidden": 16,
        "embed": 8,
        "batch_size": 4,
        "seq_len": 16,
        "max_steps": 20,
        "eval_every": 10,
        "log_every": 5,
        "eval_streams": 2,
        "warmup_steps": 0,
        "device": "cpu",
        "precision": "fp32",
    }
    base.update(overrides)
    return resolve_config(overrides=base)


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., RunConfig]:
    """A seconds-long run: a 16-unit LSTM, short windows, CPU, no warmup; keys override it."""
    return _tiny_config

"""Reading finished or running run directories: config.json and metrics.jsonl, for people.

`charrnn plot` and `charrnn compare` read runs through here. No torch and no numpy: a run's
history is plain JSON, and plotting or comparing should start at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn.config import RunConfig
from charrnn.errors import UsageError
from charrnn.run_dir import RunDir


@dataclass(frozen=True)
class RunHistory:
    """One run directory: its configuration and every metrics line, in order."""

    path: Path
    config: RunConfig
    corpus: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def train_points(self) -> list[dict[str, Any]]:
        """Metrics lines that carry a training loss."""
        return [r for r in self.records if r.get("train_loss") is not None]

    def val_points(self) -> list[dict[str, Any]]:
        """Metrics lines of evaluations."""
        return [r for r in self.records if r.get("val_loss") is not None]

    def gradient_points(self) -> list[dict[str, Any]]:
        """Metrics lines that carry a gradient norm (runs before it was logged have none)."""
        return [r for r in self.records if r.get("grad_norm") is not None]

    def events(self) -> list[dict[str, Any]]:
        """Metrics lines that report a gradient explosion (`event`)."""
        return [r for r in self.records if isinstance(r.get("event"), dict)]

    @property
    def best_val_loss(self) -> float | None:
        losses = [r["val_loss"] for r in self.val_points()]
        return min(losses) if losses else None


def read_run(path: Path) -> RunHistory:
    """The run in directory `path`; a file inside a run directory (its best.pt) means the run."""
    path = Path(path)
    run = RunDir(path)
    if path.is_file() and RunDir.of(path).metrics.is_file():
        run = RunDir.of(path)
    saved = run.read_config()
    try:
        config = RunConfig.from_dict(saved)
    except (ValueError, TypeError, AttributeError) as exc:
        raise UsageError(f"{run.config}: not a readable run configuration ({exc})") from None
    return RunHistory(run.path, config, saved.get("corpus") or {}, run.read_metrics())


def model_label(config: RunConfig) -> str:
    """The key settings of a run in a few words: 'lstm 2x512 drop 0.2, 32x64, lr 0.006'."""
    m, t = config.model, config.train
    cell = m.cell if m.cell != "rnn" else f"rnn-{m.nonlinearity}"
    dropout = f" drop {m.dropout:g}" if m.dropout else ""
    return f"{cell} {m.layers}x{m.hidden}{dropout}, {t.batch_size}x{t.seq_len}, lr {t.lr:g}"


def summarize(run: RunHistory, parameters: int | None = None) -> dict[str, Any]:
    """One run as plain data: key configuration, size, progress and results (`charrnn compare`).

    `chars_per_s` is characters seen over training time, evaluations included: what a run of
    a given length delivers.
    """
    m, t = run.config.model, run.config.train
    last = run.records[-1] if run.records else {}
    chars, elapsed = last.get("chars", 0), last.get("elapsed_s", 0.0)
    best = run.best_val_loss
    return {
        "run": str(run.path),
        "model": model_label(run.config),
        "cell": m.cell,
        "layers": m.layers,
        "hidden": m.hidden,
        "embed": m.embed,
        "dropout": m.dropout,
        "batch_size": t.batch_size,
        "seq_len": t.seq_len,
        "lr": t.lr,
        "parameters": parameters,
        "steps": last.get("step", 0),
        "chars": chars,
        "best_val_loss": best,
        "best_val_bpc": best / math.log(2) if best is not None else None,
        "elapsed_s": elapsed,
        "chars_per_s": chars / elapsed if elapsed else None,
    }

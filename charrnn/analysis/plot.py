"""Learning curves of one or more runs as an image: loss against characters seen and against time.

matplotlib is an optional extra (`pip install 'charrnn-cli[plot]'`), imported only here and only
when a plot is drawn, so the rest of charrnn neither needs it nor pays for its import.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charrnn.analysis.run_history import RunHistory, model_label
from charrnn.errors import MissingExtraError, UsageError
from charrnn.system.atomic import atomic_write
from charrnn.version import install_hint

PLOT_HINT = f"charrnn plot needs matplotlib: {install_hint('plot')}"
DPI = 100
FORMATS = ("png", "svg", "pdf")


def import_pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or a one-line hint to install it."""
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(PLOT_HINT) from None
    matplotlib.use("Agg")  # no display needed, and no window opens
    import matplotlib.pyplot as pyplot

    return pyplot


def image_format(path: Path) -> str:
    """The image format the output's suffix asks for."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise UsageError(f"cannot tell the image format of {path}; end it in .png, .svg or .pdf")
    return suffix


def _time_axis(runs: Sequence[RunHistory]) -> tuple[float, str]:
    """Seconds per unit of the time axis and its label, by the longest run."""
    longest = max((r["elapsed_s"] for run in runs for r in run.records), default=0.0)
    if longest > 2 * 3600:
        return 3600.0, "training time (h)"
    if longest > 600:
        return 60.0, "training time (min)"
    return 1.0, "training time (s)"


def run_label(run: RunHistory) -> str:
    """The legend entry of a run: its name, key settings and best validation loss."""
    best = run.best_val_loss
    result = f", best val {best:.3f}" if best is not None else ""
    return f"{run.name}: {model_label(run.config)}{result}"


def draw_curves(runs: Sequence[RunHistory], width: int, height: int) -> Any:
    """A figure of `width` x `height` pixels: two panels, loss against characters seen and
    against training time; train loss a thin line, validation loss dots joined by a thick one."""
    pyplot = import_pyplot()
    from matplotlib.ticker import EngFormatter

    figure, (by_chars, by_time) = pyplot.subplots(
        1, 2, figsize=(width / DPI, height / DPI), dpi=DPI, sharey=True, layout="constrained"
    )
    time_unit, time_label = _time_axis(runs)
    colours = pyplot.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, run in enumerate(runs):
        colour = colours[index % len(colours)]
        train, val = run.train_points(), run.val_points()
        for axes, key, unit in ((by_chars, "chars", 1.0), (by_time, "elapsed_s", time_unit)):
            axes.plot(
                [r[key] / unit for r in train], [r["train_loss"] for r in train],
                color=colour, linewidth=0.8, alpha=0.6,
            )  # fmt: skip
            axes.plot(
                [r[key] / unit for r in val], [r["val_loss"] for r in val],
                color=colour, linewidth=2.0, marker="o", markersize=3,
                label=run_label(run) if axes is by_chars else None,
            )  # fmt: skip
    by_chars.xaxis.set_major_formatter(EngFormatter(sep=""))  # 500k, 1M, not "1e6"
    by_chars.set_xlabel("characters seen")
    by_chars.set_ylabel("loss (nats/char)")
    by_time.set_xlabel(time_label)
    for axes in (by_chars, by_time):
        axes.grid(True, alpha=0.3)
    figure.suptitle("train loss: thin lines; validation loss: thick lines with dots", size="small")
    _clip_start(by_chars, runs)
    figure.legend(loc="outside lower center", fontsize="small", ncols=1 if len(runs) < 4 else 2)
    return figure


START_SHARE = 0.1  # of each run's train-loss points, left above the view


def _clip_start(axes: Any, runs: Sequence[RunHistory]) -> None:
    """Leave the first train losses (near log(vocabulary), falling fast) above the view: the
    part worth reading is where runs differ. Every validation loss stays in view."""
    shown = [r["val_loss"] for run in runs for r in run.val_points()]
    for run in runs:
        train = [r["train_loss"] for r in run.train_points()]
        shown += train[max(1, math.ceil(START_SHARE * len(train))) :] or train
    shown = [loss for loss in shown if math.isfinite(loss)]
    if not shown:
        return
    low, high = min(shown), max(shown)
    margin = 0.05 * (high - low) or 0.05
    axes.set_ylim(low - margin, high + margin)


def plot_runs(runs: Sequence[RunHistory], output: Path, width: int, height: int) -> Path:
    """Draw the runs' curves and write the image to `output` atomically."""
    if width < 200 or height < 150 or width > 20000 or height > 20000:
        raise UsageError(f"image size {width}x{height} is out of range (200x150 to 20000x20000)")
    fmt = image_format(output)
    empty = [run.name for run in runs if not run.records]
    if empty:
        raise UsageError(f"no metrics yet in {', '.join(empty)}: nothing to plot")
    figure = draw_curves(runs, width, height)
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format=fmt, dpi=DPI)
    finally:
        import_pyplot().close(figure)
    atomic_write(output, lambda handle: handle.write(buffer.getvalue()))
    return output

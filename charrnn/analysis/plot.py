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
    """A figure of `width` x `height` pixels: loss against characters seen and against training
    time; train loss a thin line, validation loss dots joined by a thick one. Under them, when
    any run logged it, the gradient norm and the share of steps clipped (`_draw_gradients`)."""
    pyplot = import_pyplot()
    from matplotlib.ticker import EngFormatter

    with_gradients = any(run.gradient_points() for run in runs)
    figure, panels = pyplot.subplots(
        2 if with_gradients else 1, 2, figsize=(width / DPI, height / DPI), dpi=DPI,
        sharex="col", squeeze=False, layout="constrained",
        gridspec_kw={"height_ratios": [2, 1] if with_gradients else [1]},
    )  # fmt: skip
    by_chars, by_time = panels[0]
    by_time.sharey(by_chars)
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
    by_chars.set_ylabel("loss (nats/char)")
    by_time.tick_params(labelleft=False)
    if with_gradients:
        _draw_gradients(runs, panels, time_unit, colours)
    bottom_chars, bottom_time = panels[-1]
    bottom_chars.xaxis.set_major_formatter(EngFormatter(sep=""))  # 500k, 1M, not "1e6"
    bottom_chars.set_xlabel("characters seen")
    bottom_time.set_xlabel(time_label)
    for axes in panels.flat:
        axes.grid(True, alpha=0.3)
    title = "train loss: thin lines; validation loss: thick lines with dots"
    if with_gradients:
        title += (
            "\ngradient norm before clipping: mean, max faint, --grad-clip dashed; "
            "steps clipped: dotted"
        )
    figure.suptitle(title, size="small")
    _clip_start(by_chars, runs)
    figure.legend(loc="outside lower center", fontsize="small", ncols=1 if len(runs) < 4 else 2)
    return figure


def _draw_gradients(
    runs: Sequence[RunHistory], panels: Any, time_unit: float, colours: list[str]
) -> None:
    """The second row: each run's gradient norm (log scale; mean thick, max faint), its
    --grad-clip as a dashed line, the share of steps clipped (dotted, right axis, 0 to 100%),
    and each reported explosion as a red line through both rows."""
    from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter

    by_chars, by_time = panels[1]
    by_time.sharey(by_chars)
    by_time.tick_params(labelleft=False)
    shares = []
    by_chars.set_yscale("log")
    by_chars.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.1, 1
    if _decades(runs) < 2:  # few powers of ten in view: label the 2s and 5s between them too
        by_chars.yaxis.set_minor_formatter(FuncFormatter(_two_or_five))
    else:
        by_chars.yaxis.set_minor_formatter(NullFormatter())
    for axes in (by_chars, by_time):
        share = axes.twinx()
        share.set_ylim(-0.03, 1.05)  # a share of 0 stays in view, above the axis
        share.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        shares.append(share)
    by_chars.set_ylabel("gradient norm")
    shares[0].tick_params(labelright=False)
    shares[1].set_ylabel("steps clipped")
    explosion_label = "gradient explosion reported"
    for index, run in enumerate(runs):
        colour = colours[index % len(colours)]
        points, clip = run.gradient_points(), run.config.train.grad_clip
        for axes, share, key, unit in (
            (by_chars, shares[0], "chars", 1.0),
            (by_time, shares[1], "elapsed_s", time_unit),
        ):
            x = [r[key] / unit for r in points]
            axes.plot(x, [r["grad_norm"] for r in points], color=colour, linewidth=1.5)
            axes.plot(x, [r["grad_norm_max"] for r in points], color=colour, linewidth=0.8,
                      alpha=0.35)  # fmt: skip
            share.plot(x, [r["clip_share"] for r in points], color=colour, linewidth=1.0,
                       linestyle=":")  # fmt: skip
            if clip > 0 and points:
                axes.axhline(clip, color=colour, linewidth=0.8, linestyle="--", alpha=0.7)
            for record in run.events():
                for panel in (axes, panels[0][0] if key == "chars" else panels[0][1]):
                    panel.axvline(record[key] / unit, color="red", linewidth=0.8, alpha=0.6,
                                  label=explosion_label)  # fmt: skip
                    explosion_label = None  # one legend entry for all of them


def _decades(runs: Sequence[RunHistory]) -> float:
    """How many powers of ten the gradient panel spans (its norms and clip thresholds)."""
    values = [
        r[key]
        for run in runs
        for r in run.gradient_points()
        for key in ("grad_norm", "grad_norm_max")
    ]
    values += [run.config.train.grad_clip for run in runs if run.gradient_points()]
    values = [v for v in values if v > 0]
    return math.log10(max(values) / min(values)) if values else 0.0


def _two_or_five(value: float, _: Any) -> str:
    """A minor tick's label on a log axis: 0.2, 0.5, 2, 5, ...; the others none."""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if min(abs(mantissa - 2), abs(mantissa - 5)) < 1e-6 else ""


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
    return save_figure(draw_curves(runs, width, height), output, fmt)


def save_figure(figure: Any, output: Path, fmt: str) -> Path:
    """Write `figure` to `output` in `fmt` atomically and close it."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format=fmt, dpi=DPI)
    finally:
        import_pyplot().close(figure)
    atomic_write(output, lambda handle: handle.write(buffer.getvalue()))
    return output


MEMORY_SIZE = (1500, 450)  # pixels of `plot_memory`'s three panels


def draw_memory(runs: Sequence[tuple[str, dict[str, Any]]], width: int, height: int) -> Any:
    """A figure of three panels for one or more models' memory analyses (`MemoryReport.to_dict`,
    by name): the context-use loss against k (log2 axis; the full-state loss plus the paired
    gap of each k, so that every point is on the same predictions; the full-state loss dashed,
    the effective context dotted), the gradient norm against distance on a log scale, and the
    gate timescales' histogram."""
    pyplot = import_pyplot()
    figure, (context, gradient, gates) = pyplot.subplots(
        1, 3, figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained"
    )
    colours = pyplot.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, memory) in enumerate(runs):
        colour = colours[index % len(colours)]
        points = memory["context"]
        effective = memory["effective_context"]
        label = f"{name}: {memory['cell']}, context {effective or '>' + str(points[-1]['k'])}"
        context.errorbar(
            [p["k"] for p in points], [memory["full_loss"] + p["gap"] for p in points],
            yerr=[_or_nan(p["gap_stderr"]) for p in points], color=colour, marker="o", markersize=3,
            capsize=2, label=label,
        )  # fmt: skip
        context.axhline(memory["full_loss"], color=colour, linestyle="--", linewidth=0.8)
        if effective is not None:
            context.axvline(effective, color=colour, linestyle=":", linewidth=0.8)
        norms = [_or_nan(v) for v in memory["gradient_norms"]]
        gradient.plot(
            range(1, len(norms) + 1), norms, color=colour,
            label=f"{name}: x{memory['decay_per_100']:.3g} per 100 chars"
            if memory["decay_per_100"] is not None else name,
        )  # fmt: skip
        if memory["keep_gate"] is not None:
            counts = memory["timescale_histogram"]
            gates.stairs(counts, range(len(counts) + 1), color=colour, label=name, linewidth=1.5)
    context.set_xscale("log", base=2)
    context.set_xlabel("k: characters the model may see")
    context.set_ylabel("loss seeing k chars (nats/char); dashed: full state")
    gradient.set_yscale("log")
    gradient.set_xlabel("k: distance of the input (characters)")
    gradient.set_ylabel("mean |d log p(x_t) / d e(t-k)|")
    bins = len(runs[0][1]["timescale_histogram"]) if runs else 12
    gates.set_xticks([b + 0.5 for b in range(bins)])
    gates.set_xticklabels(["<1"] + [str(2**j) for j in range(bins - 2)] + [f">={2 ** (bins - 2)}"],
                          rotation=60, size="small")  # fmt: skip
    gates.set_xlabel("gate timescale -1/mean(ln keep), characters (bin start)")
    gates.set_ylabel("units")
    for axes in (context, gradient, gates):
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    if not any(memory["keep_gate"] for _, memory in runs):
        gates.text(0.5, 0.5, "no gated cell", ha="center", transform=gates.transAxes)
    return figure


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def plot_memory(runs: Sequence[tuple[str, dict[str, Any]]], output: Path) -> Path:
    """Draw the memory analyses (`draw_memory`) and write the image to `output` atomically."""
    fmt = image_format(output)
    return save_figure(draw_memory(runs, *MEMORY_SIZE), output, fmt)

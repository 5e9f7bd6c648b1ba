"""How an `Inspection` is shown: coloured text and tables for the terminal (rich), one plain JSON
object for machines, and one self-contained HTML page (inline CSS and script, no network) from
the template templates/inspect.html. The colours are computed here, once, for both."""

from __future__ import annotations

import base64
import html
import json
import math
from importlib import resources
from typing import Any

import numpy as np
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from charrnn.analysis.inspection import (
    FEATURE_HELP,
    SATURATION,
    Inspection,
    Tracker,
    UnitRef,
)
from charrnn.text.corpus import symbol_glyph

MAX_BITS = 8.0  # the surprisal colour scale saturates here
EXCERPT_CHARS = 160  # the text shown under each --find tracker in the terminal
BLOCKS = " ▁▂▃▄▅▆▇█"
PLAIN_WIDTH = 76  # characters per line of the plain view (a bar line goes under each)
UNIT_STEPS = 127  # a unit's values reach the page as int8 steps of its largest |value|


# ----------------------------------------------------------------------------- colours


def surprisal_rgb(bits: float) -> tuple[int, int, int]:
    """White (expected) through yellow to red (surprised, MAX_BITS and above)."""
    t = min(max(bits / MAX_BITS, 0.0), 1.0)
    if t < 0.5:
        return 255, 255, int(255 * (1 - 2 * t))
    return 255, int(255 * (1 - (t - 0.5) * 2 * 0.85)), 0


def unit_rgb(value: float, scale: float) -> tuple[int, int, int]:
    """Blue (negative) through white (0) to red (positive); `scale` is full strength."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    fade = int(255 * (1 - abs(t)))
    return (255, fade, fade) if t >= 0 else (fade, fade, 255)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def surprisal_stops() -> list[str]:
    """The surprisal scale's legend: 9 colours from 0 to MAX_BITS (the terminal and the page)."""
    return [_hex(surprisal_rgb(k * MAX_BITS / 8)) for k in range(9)]


def unit_stops() -> list[str]:
    """A unit's scale's legend: 9 colours from -1 to +1 of its full strength."""
    return [_hex(unit_rgb(k / 4, 1.0)) for k in range(-4, 5)]


# ----------------------------------------------------------------------------- terminal


def coloured_text(
    inspection: Inspection,
    unit: UnitRef | None = None,
    limit: int | None = None,
    plain: bool = False,
) -> Text:
    """The shown text with each character's background set by its surprisal, or by `unit`'s
    value; unknown characters are dim and struck through. `plain`: no colours; under each line
    of text a line of bars (higher = more surprised, or a larger value)."""
    count = (
        inspection.symbols.shape[0] if limit is None else min(limit, inspection.symbols.shape[0])
    )
    values = inspection.unit_values(unit)[:count] if unit is not None else None
    scale = _unit_scale(values) if values is not None else 0.0
    chars = [symbol_glyph(int(s), inspection.is_bytes, True) for s in inspection.symbols[:count]]
    if plain:
        return _text_with_bars(inspection, chars, values)
    text = Text()
    for k, char in enumerate(chars):
        if not inspection.known[k]:
            text.append(char, style="dim strike")
            continue
        if values is not None:
            rgb = unit_rgb(float(values[k]), scale)
        else:
            bits = float(inspection.bits[k])
            rgb = (255, 255, 255) if math.isnan(bits) else surprisal_rgb(bits)
        if char == "\n":  # a background on a newline colours nothing: colour a space before it
            text.append(" ", style=f"on {_hex(rgb)}")
            text.append("\n")
        else:
            text.append(char, style=f"black on {_hex(rgb)}")
    return text


def _text_with_bars(inspection: Inspection, chars: list[str], values: np.ndarray | None) -> Text:
    """Each line of text (cut at PLAIN_WIDTH) above a line of bars, one per character."""
    if values is not None:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        span = high - low or 1.0
        levels = [None if not math.isfinite(v) else (v - low) / span for v in values.tolist()]
    else:
        levels = [
            None if math.isnan(b) else min(b / MAX_BITS, 1.0) for b in inspection.bits.tolist()
        ]
    out: list[str] = []
    line, bars = [], []
    for k, char in enumerate(chars):
        if char != "\n":
            line.append(char)
            level = levels[k]
            bars.append(" " if level is None else BLOCKS[max(1, round(level * 8))])
        if char == "\n" or len(line) == PLAIN_WIDTH or k == len(chars) - 1:
            out += ["".join(line), "".join(bars)] if line else [""]  # a blank line stays one
            line, bars = [], []
    return Text("\n".join(out))


def _unit_scale(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def legend(unit: UnitRef | None, inspection: Inspection, plain: bool = False) -> Text:
    """A colour bar (or, plain, a bar scale) with its end values."""
    text = Text()
    if unit is None:
        text.append("surprisal: 0 bits ")
        for k, colour in enumerate(surprisal_stops()):
            if plain:
                text.append(BLOCKS[max(1, k)])
            else:
                text.append("  ", style=f"on {colour}")
        text.append(f" {MAX_BITS:g}+ bits (what the model expected least)")
        return text
    values = inspection.unit_values(unit)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scale = _unit_scale(values)
    text.append(f"unit {unit.label()}: ")
    if plain:
        text.append(f"{low:.2f} {BLOCKS[1:]} {high:+.2f}")
        return text
    text.append(f"{-scale:.2f} ")
    for colour in unit_stops():
        text.append("  ", style=f"on {colour}")
    text.append(f" {scale:+.2f}")
    return text


def totals_table(inspection: Inspection, source: str) -> Table:
    table = Table(title=f"surprisal of {source}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("characters scored", f"{inspection.chars:,}"),
        ("bits per character", f"{inspection.bpc:.4f}"),
        ("loss (nats/char)", f"{inspection.loss_sum / max(inspection.chars, 1):.4f}"),
        ("characters outside the vocabulary", f"{inspection.unknown_chars:,} (shown, skipped)"),
        ("shown", f"the first {inspection.symbols.shape[0]:,} of {inspection.total_symbols:,}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def spans_table(inspection: Inspection) -> Table:
    table = Table(title="most surprising spans", title_justify="left")
    for name in ("position", "text", "bits/char", "worst"):
        table.add_column(name)
    for span in inspection.spans:
        worst = span["text"][span["worst"]] if span["text"] else ""
        table.add_row(
            f"{span['start']:,}",
            repr(span["text"]),
            f"{span['bits_per_char']:.2f}",
            f"{worst!r} {span['worst_bits']:.1f} bits",
        )
    return table


def trackers_table(inspection: Inspection) -> Table:
    table = Table(title="units that track features of the text (--find)", title_justify="left")
    for name in ("feature", "layer:unit", "state", "correlation", "meaning"):
        table.add_column(name, justify="right" if name == "correlation" else "left")
    previous = None
    for tracker in inspection.trackers:
        table.add_row(
            tracker.feature,
            f"{tracker.unit.layer}:{tracker.unit.unit}",
            tracker.unit.state,
            f"{tracker.correlation:+.3f}",
            FEATURE_HELP[tracker.feature] if tracker.feature != previous else "",
            end_section=False,
        )
        previous = tracker.feature
    absent = [name for name, present in inspection.feature_present.items() if not present]
    if absent:
        table.caption = f"not in this text (no correlation): {', '.join(absent)}"
    return table


def gates_table(inspection: Inspection) -> Table:
    table = Table(
        title=f"gate saturation: closed < {SATURATION:g}, open > {1 - SATURATION:g} "
        "(fraction of time, over all units)",
        title_justify="left",
    )
    for name in ("layer", "gate", "mean", "closed", "open", "units >50% closed/open", "values 0-1"):
        table.add_column(name)
    for row in inspection.gates:
        table.add_row(
            str(row["layer"]),
            row["gate"],
            f"{row['mean']:.2f}",
            f"{row['closed']:.1%}",
            f"{row['open']:.1%}",
            f"{row['mostly_closed_units']}/{row['mostly_open_units']} of {row['units']}",
            sparkline(_pairs(row["histogram"])),
        )
    return table


def _pairs(fractions: list[float]) -> list[float]:
    return [sum(fractions[k : k + 2]) for k in range(0, len(fractions), 2)]


def sparkline(fractions: list[float]) -> str:
    top = max(fractions) if fractions else 0.0
    if top <= 0:
        return " " * len(fractions)
    return "".join(BLOCKS[min(8, math.ceil(8 * f / top))] for f in fractions)


def terminal_report(
    inspection: Inspection,
    source: str,
    unit: UnitRef | None,
    plain: bool = False,
    memory: dict[str, Any] | None = None,
) -> RenderableType:
    """Everything for the terminal: the coloured text and legend, totals, spans, trackers with an
    excerpt coloured by each, the gate table (`plain`: bars under the text, no colour) and the
    memory analysis (`MemoryReport.to_dict()`), when given."""
    parts: list[RenderableType] = [
        legend(unit, inspection, plain),
        coloured_text(inspection, unit, plain=plain),
        "",
    ]
    parts += [totals_table(inspection, source), spans_table(inspection)]
    if inspection.trackers:
        parts.append(trackers_table(inspection))
        for tracker in _best_per_feature(inspection.trackers):
            parts.append(
                Text(
                    f"{tracker.feature}: unit {tracker.unit.label()} "
                    f"(correlation {tracker.correlation:+.2f})",
                    style="bold",
                )
            )
            parts.append(coloured_text(inspection, tracker.unit, EXCERPT_CHARS, plain))
    if inspection.gates:
        parts.append(gates_table(inspection))
    if memory is not None:
        parts.append(memory_tables(memory))
    return Group(*parts)


def _best_per_feature(trackers: list[Tracker]) -> list[Tracker]:
    seen: dict[str, Tracker] = {}
    for tracker in trackers:
        seen.setdefault(tracker.feature, tracker)
    return list(seen.values())


# ----------------------------------------------------------------------------- JSON


def _num(value: float, digits: int = 5) -> float | None:
    return None if math.isnan(value) else round(float(value), digits)


def json_report(
    inspection: Inspection, unit: UnitRef | None, memory: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Plain data: totals, and per shown position the character, its loss in bits, the top-5
    the model expected there, and the chosen unit's value; spans, trackers and gates; the
    memory analysis under "memory" when given."""
    vocab = inspection.vocab
    values = inspection.unit_values(unit) if unit is not None else None
    positions = []
    for k in range(inspection.symbols.shape[0]):
        known = bool(inspection.known[k])
        bits = float(inspection.bits[k])
        entry: dict[str, Any] = {
            "char": symbol_glyph(int(inspection.symbols[k]), inspection.is_bytes),
            "known": known,
            "bits": _num(bits),
            "top5": []
            if math.isnan(bits)
            else [
                [vocab.glyph(int(i)), _num(float(p))]
                for i, p in zip(inspection.top_ids[k], inspection.top_probs[k], strict=False)
            ],
        }
        if values is not None:
            entry["value"] = _num(float(values[k]))
        positions.append(entry)
    return {
        "chars": inspection.chars,
        "loss_sum": inspection.loss_sum,
        "loss": inspection.loss_sum / max(inspection.chars, 1),
        "bpc": inspection.bpc,
        "unknown_chars": inspection.unknown_chars,
        "symbols": inspection.total_symbols,
        "cell": inspection.cell,
        "unit": None if unit is None else vars(unit),
        "positions": positions,
        "spans": inspection.spans,
        "find": [_tracker_dict(t) for t in inspection.trackers],
        "gates": [
            {k: v for k, v in row.items() if not k.startswith("unit_")} for row in inspection.gates
        ],
        **({} if memory is None else {"memory": memory}),
    }


def _tracker_dict(tracker: Tracker) -> dict[str, Any]:
    return {
        "feature": tracker.feature,
        "layer": tracker.unit.layer,
        "unit": tracker.unit.unit,
        "state": tracker.unit.state,
        "correlation": round(tracker.correlation, 5),
    }


# ----------------------------------------------------------------------------- HTML


def _quantised_units(inspection: Inspection) -> tuple[dict[str, str], dict[str, list[float]]]:
    """Every unit's shown values as int8 (scaled per unit to its largest |value|), base64, in
    position-major order, with the scales: a picker over hundreds of units stays a few MB."""
    data, scales = {}, {}
    for state, values in inspection.values.items():
        flat = np.nan_to_num(values.reshape(values.shape[0], -1), nan=0.0)
        scale = np.abs(flat).max(0)
        scale[scale == 0] = 1.0
        quantised = np.round(flat / scale * UNIT_STEPS).astype(np.int8)
        data[state] = base64.b64encode(quantised.tobytes()).decode("ascii")
        scales[state] = scale.astype(float).round(6).tolist()
    return data, scales


def html_report(
    inspection: Inspection,
    source: str,
    unit: UnitRef | None,
    memory: dict[str, Any] | None = None,
) -> str:
    """One self-contained page: the surprisal view, a unit picker that recolours the text, the
    top-5 on hover, the --find table, spans, gates and the memory panel."""
    vocab = inspection.vocab
    units_data, units_scale = _quantised_units(inspection)
    bits = inspection.bits.astype(float).tolist()
    steps = range(-UNIT_STEPS, UNIT_STEPS + 1)  # the page's unit colours, one per int8 step
    payload = {
        "chars": [symbol_glyph(int(s), inspection.is_bytes, True) for s in inspection.symbols],
        "known": inspection.known.astype(int).tolist(),
        "bits": [_num(float(b), 3) for b in inspection.bits],
        "top": [
            [
                [vocab.glyph(int(i)), round(float(p), 4)]
                for i, p in zip(ids, probs, strict=False)
                if p > 0
            ]
            for ids, probs in zip(inspection.top_ids, inspection.top_probs, strict=False)
        ],
        "layers": inspection.layers,
        "hidden": inspection.hidden,
        "states": list(inspection.state_names),
        "units": units_data,
        "scales": units_scale,
        "maxBits": MAX_BITS,
        "colours": [None if math.isnan(b) else _hex(surprisal_rgb(b)) for b in bits],
        "surprisalStops": surprisal_stops(),
        "unitSteps": UNIT_STEPS,
        "unitRamp": [_hex(unit_rgb(q / UNIT_STEPS, 1.0)) for q in steps],
        "unitStops": unit_stops(),
        "initial": None if unit is None else vars(unit),
        "find": [_tracker_dict(t) for t in inspection.trackers],
    }
    data = json.dumps(payload, ensure_ascii=True).replace("<", "\\u003c")  # no "</script>"
    summary = (
        f"{inspection.chars:,} characters scored, {inspection.bpc:.4f} bits per character, "
        f"{inspection.unknown_chars:,} outside the vocabulary; showing the first "
        f"{inspection.symbols.shape[0]:,} of {inspection.total_symbols:,}"
    )
    page = resources.files("charrnn.analysis").joinpath("templates/inspect.html")
    return (
        page.read_text("utf-8")
        .replace("%TITLE%", html.escape(f"charrnn inspect: {source}"))
        .replace("%SUMMARY%", html.escape(summary))
        .replace("%FIND%", _find_html(inspection))
        .replace("%SPANS%", _spans_html(inspection))
        .replace("%GATES%", _gates_html(inspection))
        .replace("%MEMORY%", memory_html(memory))
        .replace("%DATA%", data)
    )


def _find_html(inspection: Inspection) -> str:
    if not inspection.trackers:
        return "<p>Run with <code>--find</code> to rank the units that track features.</p>"
    rows = "".join(
        f'<tr><td>{t.feature}</td><td><a href="#" class="pick" data-layer="{t.unit.layer}" '
        f'data-unit="{t.unit.unit}" data-state="{t.unit.state}">{t.unit.layer}:{t.unit.unit}</a>'
        f"</td><td>{t.unit.state}</td><td>{t.correlation:+.3f}</td>"
        f"<td>{html.escape(FEATURE_HELP[t.feature])}</td></tr>"
        for t in inspection.trackers
    )
    return (
        '<table id="find"><tr><th>feature</th><th>layer:unit</th><th>state</th>'
        f"<th>correlation</th><th>meaning</th></tr>{rows}</table>"
    )


def _spans_html(inspection: Inspection) -> str:
    rows = "".join(
        f"<tr><td>{s['start']:,}</td><td><code>{html.escape(repr(s['text']))}</code></td>"
        f"<td>{s['bits_per_char']:.2f}</td></tr>"
        for s in inspection.spans
    )
    return f"<table><tr><th>position</th><th>text</th><th>bits/char</th></tr>{rows}</table>"


def _gates_html(inspection: Inspection) -> str:
    if not inspection.gates:
        return "<p>This cell type has no gates.</p>"
    rows = []
    for row in inspection.gates:
        bars = "".join(
            f'<span class="bar" style="height:{max(1, round(60 * f / max(row["histogram"])))}px"'
            f' title="{k / len(row["histogram"]):.2f}: {f:.1%}"></span>'
            for k, f in enumerate(row["histogram"])
        )
        rows.append(
            f"<tr><td>{row['layer']}</td><td>{row['gate']}</td><td>{row['mean']:.2f}</td>"
            f"<td>{row['closed']:.1%}</td><td>{row['open']:.1%}</td>"
            f"<td>{row['mostly_closed_units']} / {row['mostly_open_units']} of {row['units']}</td>"
            f'<td><div class="hist">{bars}</div></td><td>{_scatter_svg(row)}</td></tr>'
        )
    return (
        f"<table><tr><th>layer</th><th>gate</th><th>mean</th><th>closed (&lt; {SATURATION:g})</th>"
        f"<th>open (&gt; {1 - SATURATION:g})</th><th>units mostly closed / open</th>"
        "<th>values 0..1</th><th>each unit: closed (x) vs open (y)</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _scatter_svg(row: dict[str, Any]) -> str:
    """The paper's saturation plot: one dot per unit at (fraction closed, fraction open)."""
    size = 90
    dots = "".join(
        f'<circle cx="{5 + c * (size - 10):.1f}" cy="{size - 5 - o * (size - 10):.1f}" r="1.6"/>'
        for c, o in zip(row["unit_closed"], row["unit_open"], strict=False)
    )
    return (
        f'<svg width="{size}" height="{size}" viewBox="0 0 {size} {size}">'
        f'<line x1="5" y1="5" x2="{size - 5}" y2="{size - 5}" class="diag"/>'
        f'<rect x="5" y="5" width="{size - 10}" height="{size - 10}" class="frame"/>{dots}</svg>'
    )


# ----------------------------------------------------------------------------- memory

SPARK_WIDTH = 64  # columns of the gradient curve's sparkline


def _curve_points(values: list[float | None], width: int, log: bool) -> list[float]:
    """At most `width` means of equal groups of `values` (None, and with `log` a value <= 0,
    is missing: NaN), by log10 with `log`."""
    points = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            points = np.where(points > 0, np.log10(np.where(points > 0, points, 1.0)), math.nan)
    groups = [g for g in np.array_split(points, min(width, max(1, points.shape[0]))) if g.size]
    return [float(np.nanmean(g)) if np.isfinite(g).any() else math.nan for g in groups]


def curve_sparkline(
    values: list[float | None],
    width: int = SPARK_WIDTH,
    log: bool = False,
    scale: tuple[float, float] | None = None,
) -> str:
    """`values` as a line of blocks from the lowest (▁) to the highest (█), at most `width`
    columns (`_curve_points`); `scale`: the (low, high) of the blocks, else the values' own."""
    means = _curve_points(values, width, log)
    finite = [m for m in means if math.isfinite(m)]
    if not finite:
        return " " * len(means)
    low, high = scale or (min(finite), max(finite))
    span = (high - low) or 1.0
    return "".join(
        " " if not math.isfinite(m) else BLOCKS[1 + max(0, min(7, int(8 * (m - low) / span)))]
        for m in means
    )


def _common_scale(curves: list[list[float | None]], width: int, log: bool) -> tuple[float, float]:
    """The (low, high) over several curves, so that their sparklines compare."""
    finite = [m for c in curves for m in _curve_points(c, width, log) if math.isfinite(m)]
    return (min(finite), max(finite)) if finite else (0.0, 1.0)


def _context_words(memory: dict[str, Any]) -> str:
    k = memory["effective_context"]
    last = memory["context"][-1]["k"]
    return f"{k} characters" if k is not None else f"more than {last} characters"


def _timescale_bins(memory: dict[str, Any]) -> list[str]:
    edges = memory["timescale_edges"]
    labels = [f"< {edges[1]:g}"]
    labels += [f"{a:g}-{b:g}" for a, b in zip(edges[1:-2], edges[2:-1], strict=True)]
    return labels + [f">= {edges[-2]:g}"]


def memory_tables(memory: dict[str, Any]) -> RenderableType:
    """The memory analysis for the terminal: the context-use table and its effective context,
    the gradient flow (sparkline, decay per 100 characters) and the gate timescales."""
    context = Table(
        title=f"context use: loss (nats/char) when the model sees only the last k characters "
        f"({memory['positions']:,} positions of {memory['text_chars']:,} characters)",
        title_justify="left",
    )
    for name in ("k", "loss", "± s.e.", "gap to full", "± s.e."):
        context.add_column(name, justify="right")
    context.add_column("")
    gaps = [max(0.0, p["gap"] or 0.0) for p in memory["context"]]
    for point, gap in zip(memory["context"], gaps, strict=True):
        bar = "█" * round(24 * gap / max(max(gaps), 1e-9))
        context.add_row(
            str(point["k"]), _fixed(point["loss"]), _fixed(point["stderr"]),
            _fixed(point["gap"], "+.4f"), _fixed(point["gap_stderr"]), bar,
        )  # fmt: skip
    context.add_row("full", f"{memory['full_loss']:.4f}", "", "", "", "")
    norms = memory["gradient_norms"]
    errors = memory["gradient_stderr"]
    probes = [k for k in (2**j for j in range(len(norms).bit_length())) if k <= len(norms)]
    gradient = Table(
        title=f"gradient flow: mean |d log p(x_t) / d e(t-k)| over "
        f"{memory['gradient_positions']:,} predictions (BPTT from a zero state {len(norms)} back)",
        title_justify="left",
    )
    for name in ("k", "mean |gradient|", "± s.e."):
        gradient.add_column(name, justify="right")
    gradient.add_column("log10")
    logs = [math.log10(norms[k - 1]) if norms[k - 1] else math.nan for k in probes]
    low = min((v for v in logs if math.isfinite(v)), default=0.0)
    high = max((v for v in logs if math.isfinite(v)), default=0.0)
    for k, value in zip(probes, logs, strict=True):
        width = 1 + round(23 * (value - low) / ((high - low) or 1)) if math.isfinite(value) else 0
        gradient.add_row(
            str(k), f"{norms[k - 1] or 0:.3g}", f"{errors[k - 1] or 0:.2g}",
            f"{value:+.1f} " + "█" * width if math.isfinite(value) else "-",
        )  # fmt: skip
    lines = [
        context,
        Text(
            f"effective context: {_context_words(memory)} (the smallest k within 1% and 0.01 "
            "nats of the full-state loss)",
            style="bold",
        ),
        gradient,
        Text(f"log10 |gradient| for k = 1..{len(norms)}:"),
        Text(curve_sparkline(norms, log=True)),
        Text(
            f"gradient decay per 100 characters: x{_factor(memory['decay_per_100'])}",
            style="bold",
        ),
    ]
    if memory["keep_gate"] is None:
        lines.append(
            Text(
                f"gate timescales: a vanilla {memory['cell'].upper()} has no gate; what it keeps "
                "is up to its recurrent weights alone"
            )
        )
        return Group(*lines)
    counts = memory["timescale_histogram"]
    gates = Table(
        title=f"memory timescales -1/mean(ln a) of the {memory['keep_gate']}, per unit, over "
        f"{memory['gate_chars']:,} characters",
        title_justify="left",
    )
    for name in ("characters", "units"):
        gates.add_column(name, justify="right")
    gates.add_column("")
    for label, count in zip(_timescale_bins(memory), counts, strict=True):
        gates.add_row(label, str(count), "█" * round(24 * count / max(max(counts), 1)))
    scales = [t for t in memory["timescales"] if t is not None]
    median = float(np.median(scales)) if scales else math.nan
    lines += [gates, Text(f"median timescale: {median:.3g} characters", style="bold")]
    return Group(*lines)


def _fixed(value: float | None, spec: str = ".4f") -> str:
    """A number of the memory data (None where it is not finite, e.g. one position's standard
    error) as text."""
    return "-" if value is None else format(value, spec)


def _factor(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def memory_compare_table(summaries: list[dict[str, Any]]) -> RenderableType:
    """`compare --memory`: one row per run (its effective context, decay per 100 characters
    and median gate timescale), then each run's context-use and gradient curves as sparklines."""
    table = Table(
        title="memory, on each run's validation split (docs/memory.md)", title_justify="left"
    )
    for name in ("run", "cell", "full loss", "context (chars)", "decay /100 chars",
                 "median timescale"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("run", "cell") else "right")
    lines: list[RenderableType] = [table]
    for summary in summaries:
        memory = summary["memory"]
        scales = [t for t in memory["timescales"] if t is not None]
        table.add_row(
            str(summary["run"]),
            memory["cell"],
            f"{memory['full_loss']:.4f}",
            _context_words(memory).replace(" characters", ""),
            f"x{_factor(memory['decay_per_100'])}",
            f"{float(np.median(scales)):.3g}" if scales else "-",
        )
    ks = [p["k"] for p in summaries[0]["memory"]["context"]] if summaries else []
    gaps = [[max(p["gap"] or 0.0, 0.0) for p in s["memory"]["context"]] for s in summaries]
    norms = [s["memory"]["gradient_norms"] for s in summaries]
    gap_scale, norm_scale = _common_scale(gaps, 64, False), _common_scale(norms, 48, True)
    lines.append(Text(f"loss gap to the full state, k = {', '.join(map(str, ks))}:"))
    lines += [
        Text(f"  {curve_sparkline(g, scale=gap_scale)}  {s['run']}")
        for g, s in zip(gaps, summaries, strict=True)
    ]
    lines.append(Text("log10 |gradient| by distance k = 1, 2, ..., max (one scale for all runs):"))
    lines += [
        Text(f"  {curve_sparkline(n, width=48, log=True, scale=norm_scale)}  {s['run']}")
        for n, s in zip(norms, summaries, strict=True)
    ]
    return Group(*lines)


def _polyline(xs: list[float], ys: list[float], width: int, height: int) -> str:
    """An SVG polyline of the finite points, scaled into the box (y up)."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y)]
    if not points:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    sx, sy = (width - 20) / ((x1 - x0) or 1), (height - 20) / ((y1 - y0) or 1)
    coords = " ".join(
        f"{10 + (x - x0) * sx:.1f},{height - 10 - (y - y0) * sy:.1f}" for x, y in points
    )
    return (
        f'<svg width="{width}" height="{height}" class="curve">'
        f'<rect x="1" y="1" width="{width - 2}" height="{height - 2}" class="frame"/>'
        f'<polyline points="{coords}"/></svg>'
    )


def memory_html(memory: dict[str, Any] | None) -> str:
    """The page's memory panel: the context-use curve and table, the gradient flow on a log
    scale, and the gate timescales' histogram."""
    if memory is None:
        return "<p>Run with <code>--memory</code> to measure how far back the model remembers.</p>"
    context = memory["context"]
    rows = "".join(
        f"<tr><td>{p['k']}</td><td>{_fixed(p['loss'])} ± {_fixed(p['stderr'])}</td>"
        f"<td>{_fixed(p['gap'], '+.4f')} ± {_fixed(p['gap_stderr'])}</td></tr>"
        for p in context
    )
    log_norms = [
        math.log10(v) if v is not None and v > 0 else math.nan for v in memory["gradient_norms"]
    ]
    curve_k = [math.log2(p["k"]) for p in context]
    parts = [
        f"<p>Effective context: <b>{_context_words(memory)}</b> (the smallest k whose loss is "
        f"within 1% and 0.01 nats of the full-state loss, {memory['full_loss']:.4f}); "
        f"{memory['positions']:,} sampled positions of {memory['text_chars']:,} characters.</p>",
        "<p>Loss against k (log<sub>2</sub> k across; the full-state loss plus the gap at "
        "each k, all on the same predictions):</p>",
        _polyline(curve_k, [memory["full_loss"] + p["gap"] for p in context], 420, 160),
        f"<table><tr><th>k</th><th>loss</th><th>gap to full</th></tr>{rows}</table>",
        f"<p>Gradient flow: log<sub>10</sub> of the mean |d log p(x<sub>t</sub>) / "
        f"d e(t-k)| for k = 1..{len(log_norms)} ({memory['gradient_positions']:,} predictions); "
        f"decay per 100 characters: <b>x{_factor(memory['decay_per_100'])}</b>.</p>",
        _polyline([float(k) for k in range(1, len(log_norms) + 1)], log_norms, 420, 160),
    ]
    if memory["keep_gate"] is None:
        parts.append(f"<p>A vanilla {memory['cell'].upper()} has no gate: no timescales.</p>")
    else:
        counts = memory["timescale_histogram"]
        bars = "".join(
            f'<span class="bar" style="height:{max(1, round(60 * c / max(max(counts), 1)))}px" '
            f'title="{html.escape(label)} characters: {c} units"></span>'
            for label, c in zip(_timescale_bins(memory), counts, strict=True)
        )
        parts.append(
            f"<p>Memory timescales of the {memory['keep_gate']}, -1/mean(ln a) per unit over "
            f"{memory['gate_chars']:,} characters (bins &lt;1, 1-2, 2-4, ..., &ge;1024):</p>"
            f'<div class="hist">{bars}</div>'
        )
    return "".join(parts)

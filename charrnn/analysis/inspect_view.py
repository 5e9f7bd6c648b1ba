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
    inspection: Inspection, source: str, unit: UnitRef | None, plain: bool = False
) -> RenderableType:
    """Everything for the terminal: the coloured text and legend, totals, spans, trackers with an
    excerpt coloured by each, and the gate table (`plain`: bars under the text, no colour)."""
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
    return Group(*parts)


def _best_per_feature(trackers: list[Tracker]) -> list[Tracker]:
    seen: dict[str, Tracker] = {}
    for tracker in trackers:
        seen.setdefault(tracker.feature, tracker)
    return list(seen.values())


# ----------------------------------------------------------------------------- JSON


def _num(value: float, digits: int = 5) -> float | None:
    return None if math.isnan(value) else round(float(value), digits)


def json_report(inspection: Inspection, unit: UnitRef | None) -> dict[str, Any]:
    """Plain data: totals, and per shown position the character, its loss in bits, the top-5
    the model expected there, and the chosen unit's value; spans, trackers and gates."""
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


def html_report(inspection: Inspection, source: str, unit: UnitRef | None) -> str:
    """One self-contained page: the surprisal view, a unit picker that recolours the text, the
    top-5 on hover, the --find table, spans and gates."""
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

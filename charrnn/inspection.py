"""Looking inside a model: per-character surprisal, unit values, gate statistics, and the units
that best track simple features of the text (Karpathy, Johnson & Fei-Fei 2015).

The text streams through the network window by window with the state carried, as `eval` scores
it, so a long file needs memory for one window of activations, not for the whole text. Each layer
runs as its own single-layer fused module with the model's weights, which yields every layer's
outputs h; the gates and the LSTM cell state c are then computed from those outputs and the same
weights, vectorised over the window (c by a parallel scan), and checked against the fused
layers' final state in the tests.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn.data import Vocab, read_byte_chunks, read_text_chunks, symbols_of
from charrnn.device import CpuThreads
from charrnn.errors import CorpusError, UsageError
from charrnn.model import CharRNN, State

WINDOW = 512  # characters per forward call; bounds memory, not the result
TOP_K = 5  # predictions kept per shown position
SATURATION = 0.1  # a gate below this is "closed", above 1 - this "open" (the paper's threshold)
HISTOGRAM_BINS = 20
SPAN_CHARS = 12  # width of the "most surprising spans"
SPANS = 5
GATE_NAMES = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update")}
FEATURES = (
    "quote",
    "bracket_depth",
    "line_position",
    "line_start",
    "word_start",
    "speaker_line",
    "digit",
)
FEATURE_HELP = {
    "quote": 'inside "double quotes"',
    "bracket_depth": "nesting depth of ( [ {",
    "line_position": "characters since the newline",
    "line_start": "first character of a line",
    "word_start": "first letter of a word",
    "speaker_line": "a name line: 'ROMEO:'",
    "digit": "a digit",
}


@dataclass(frozen=True)
class InspectOptions:
    """What `charrnn inspect` shows; see its --help for each."""

    cell_index: str | None = None  # "L:N"
    state: str | None = None  # c or h; None: c for an LSTM, else h
    find: bool = False
    find_top: int = 1
    show: int = 2000
    html: Path | None = None
    json: bool = False
    encoding: str | None = None
    plain: bool = False  # the terminal shows no colours: bars under the text instead


# ----------------------------------------------------------------------------- reading the text


def read_symbols(source: Path | str, vocab: Vocab, encoding: str) -> np.ndarray:
    """Every symbol (code point, or byte for a bytes model) of a file, or of stdin for "-"."""
    if str(source) == "-":
        data = sys.stdin.buffer.read()
        if vocab.is_bytes:
            return symbols_of(data, True)
        try:
            text = data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise CorpusError(f"stdin: not valid {encoding} ({exc})") from None
        return symbols_of(text.replace("\r\n", "\n").replace("\r", "\n"), False)
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"file not found: {path}")
    if vocab.is_bytes:
        chunks = [symbols_of(block, True) for block in read_byte_chunks(path)]
    else:
        chunks = [symbols_of(text, False) for text in read_text_chunks(path, encoding)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint32)


def symbol_text(symbol: int, is_bytes: bool) -> str:
    """How one symbol is shown: the character, or for a byte above ASCII a middle dot."""
    if is_bytes and symbol >= 0x80:
        return "\u00b7"
    return chr(symbol)


# ----------------------------------------------------------------------------- text features


def text_features(symbols: np.ndarray) -> np.ndarray:
    """(n, len(FEATURES)) float32 values of the simple features at each symbol, computed from the
    text up to and including it (speaker_line looks at its whole line)."""
    s = np.asarray(symbols, dtype=np.int64)
    n = s.shape[0]
    out = np.zeros((n, len(FEATURES)), dtype=np.float32)
    if n == 0:
        return out
    index = np.arange(n)
    newline = s == ord("\n")
    out[:, 0] = np.cumsum(s == ord('"')) % 2
    out[:, 1] = _bracket_depth(s)
    last_newline = np.maximum.accumulate(np.where(newline, index, -1))
    out[:, 2] = index - last_newline
    previous = np.concatenate([[ord("\n")], s[:-1]])
    out[:, 3] = (previous == ord("\n")) & ~newline
    letters = _is_letter(s)
    out[:, 4] = letters & ~_is_letter(previous)
    out[:, 5] = _speaker_lines(s, newline)
    out[:, 6] = (s >= ord("0")) & (s <= ord("9"))
    return out


def _is_letter(s: np.ndarray) -> np.ndarray:
    unique = np.unique(s)
    letters = np.array([chr(int(c)).isalpha() for c in unique], dtype=bool)
    return letters[np.searchsorted(unique, s)]


def _bracket_depth(s: np.ndarray) -> np.ndarray:
    """Nesting depth after each symbol; a closing bracket with none open leaves it at 0."""
    step = np.isin(s, [ord(c) for c in "([{"]).astype(np.int64)
    step -= np.isin(s, [ord(c) for c in ")]}"])
    changes = np.flatnonzero(step)
    if changes.shape[0] == 0:
        return np.zeros(s.shape[0], dtype=np.int64)
    depth_after = np.zeros(changes.shape[0], dtype=np.int64)
    depth = 0
    for k, position in enumerate(changes.tolist()):  # only the bracket positions, usually few
        depth = max(0, depth + int(step[position]))
        depth_after[k] = depth
    at = np.searchsorted(changes, np.arange(s.shape[0]), side="right") - 1
    return np.where(at >= 0, depth_after[np.maximum(at, 0)], 0)


def _speaker_lines(s: np.ndarray, newline: np.ndarray) -> np.ndarray:
    """1 on each symbol (its newline included) of a line of capitals, spaces and apostrophes
    that ends in a colon and starts with a capital."""
    line = np.concatenate([[0], np.cumsum(newline)[:-1]])  # a newline belongs to its line
    n_lines = int(line[-1]) + 1
    body = ~newline
    upper = (s >= ord("A")) & (s <= ord("Z"))
    allowed = upper | (s == ord(" ")) | (s == ord("'"))
    next_is_end = np.concatenate([newline[1:], [True]])
    colon_last = (s == ord(":")) & next_is_end
    bad = np.bincount(line, weights=body & ~allowed & ~colon_last, minlength=n_lines)
    colons = np.bincount(line, weights=colon_last, minlength=n_lines)
    first = np.concatenate([[True], newline[:-1]])
    starts_upper = np.bincount(line, weights=first & upper, minlength=n_lines)
    speaker = (bad == 0) & (colons == 1) & (starts_upper == 1)
    return speaker[line]


# ----------------------------------------------------------------------------- the network


@dataclass
class WindowTrace:
    """What one window of T symbols produced. `values[state]` is (T, layers, hidden): the state
    after reading each symbol; `gates[name]` likewise; `logits` (T, vocab) predict the next."""

    logits: Tensor
    values: dict[str, Tensor]
    gates: dict[str, Tensor]


class Tracer:
    """Runs a model window by window with carried state and records every unit and gate."""

    def __init__(self, model: CharRNN) -> None:
        config = model.config
        self.model, self.cell, self.hidden = model, config.cell, config.hidden
        self.layers = [_single_layer(model, k) for k in range(config.layers)]
        self.state: State | None = None

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("c", "h") if self.cell == "lstm" else ("h",)

    def run(self, ids: Tensor) -> WindowTrace:
        """Feed ids (T,) continuing from the previous window's state."""
        with torch.inference_mode():
            x = self.model.embed(ids.unsqueeze(0))  # (1, T, E)
            previous = (
                self.state if self.state is not None else self.model.initial_state(1, ids.device)
            )
            values: dict[str, list[Tensor]] = {name: [] for name in self.state_names}
            gates: dict[str, list[Tensor]] = {name: [] for name in GATE_NAMES.get(self.cell, ())}
            carried_h, carried_c = [], []
            for k, layer in enumerate(self.layers):
                h0 = (previous[0] if isinstance(previous, tuple) else previous)[k : k + 1]
                c0 = previous[1][k : k + 1] if isinstance(previous, tuple) else None
                out, last = layer(x, (h0, c0) if c0 is not None else h0)
                h = out[0]  # (T, H)
                h_before = torch.cat([h0[0], h[:-1]])
                if self.cell == "lstm":
                    c, layer_gates = _lstm_cells(layer, x[0], h_before, c0[0])
                    values["c"].append(c)
                    carried_c.append(last[1])
                elif self.cell == "gru":
                    layer_gates = _gru_gates(layer, x[0], h_before)
                else:
                    layer_gates = {}
                for name, value in layer_gates.items():
                    gates[name].append(value)
                values["h"].append(h)
                carried_h.append(last[0] if isinstance(last, tuple) else last)
                x = out
            logits = self.model.head(x[0]).float()
            h_all = torch.cat(carried_h)
            self.state = (h_all, torch.cat(carried_c)) if self.cell == "lstm" else h_all
            return WindowTrace(
                logits,
                {name: torch.stack(v, dim=1).float() for name, v in values.items()},
                {name: torch.stack(v, dim=1).float() for name, v in gates.items()},
            )


def _single_layer(model: CharRNN, k: int) -> nn.RNNBase:
    """Layer k of the model's stacked fused module as a one-layer fused module (same weights)."""
    rnn = model.rnn
    extra = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    layer = type(rnn)(
        rnn.input_size if k == 0 else rnn.hidden_size,
        rnn.hidden_size,
        num_layers=1,
        batch_first=True,
        **extra,
    )
    with torch.no_grad():
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{kind}_l0").copy_(getattr(rnn, f"{kind}_l{k}"))
    param = model.head.weight
    return layer.to(device=param.device, dtype=param.dtype).eval()


def _lstm_cells(
    layer: nn.LSTM, x: Tensor, h_before: Tensor, c0: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Cell states (T, H) and gates of one layer, from its inputs and the outputs h before each
    step; c_t = f_t c_(t-1) + i_t g_t is solved for all t at once by a scan."""
    pre = x @ layer.weight_ih_l0.t() + layer.bias_ih_l0 + h_before @ layer.weight_hh_l0.t()
    pre = (pre + layer.bias_hh_l0).float()
    i, f, g, o = pre.chunk(4, dim=-1)
    i, f, o, g = i.sigmoid(), f.sigmoid(), o.sigmoid(), g.tanh()
    c = linear_scan(f, i * g, c0.float())
    return c, {"input": i, "forget": f, "output": o}


def _gru_gates(layer: nn.GRU, x: Tensor, h_before: Tensor) -> dict[str, Tensor]:
    from_input = (x @ layer.weight_ih_l0.t() + layer.bias_ih_l0).float()
    from_hidden = (h_before @ layer.weight_hh_l0.t() + layer.bias_hh_l0).float()
    hidden = layer.hidden_size
    reset = (from_input[:, :hidden] + from_hidden[:, :hidden]).sigmoid()
    update = (from_input[:, hidden : 2 * hidden] + from_hidden[:, hidden : 2 * hidden]).sigmoid()
    return {"reset": reset, "update": update}


def linear_scan(decay: Tensor, add: Tensor, start: Tensor) -> Tensor:
    """x_t = decay_t x_(t-1) + add_t for all t (rows), from x_(-1) = start: a Hillis-Steele
    scan, log2(T) vectorised steps, with only products of the decays (no division)."""
    a, b = decay.clone(), add.clone()
    shift = 1
    while shift < a.shape[0]:
        b_next = b.clone()
        b_next[shift:] = a[shift:] * b[:-shift] + b[shift:]
        a_next = a.clone()
        a_next[shift:] = a[shift:] * a[:-shift]
        a, b = a_next, b_next
        shift *= 2
    return a * start + b


# ----------------------------------------------------------------------------- accumulators


class Correlations:
    """Pearson correlation of every unit with every feature, from running sums (shifted by the
    first window's means so the sums stay well conditioned over millions of positions)."""

    def __init__(self, units: int, features: int) -> None:
        self.n = 0
        self.shift_v: np.ndarray | None = None
        self.shift_f: np.ndarray | None = None
        self.sv, self.svv = np.zeros(units), np.zeros(units)
        self.sf, self.sff = np.zeros(features), np.zeros(features)
        self.svf = np.zeros((units, features))

    def add(self, values: np.ndarray, features: np.ndarray) -> None:
        if self.shift_v is None:
            self.shift_v, self.shift_f = values.mean(0), features.mean(0)
        v = values.astype(np.float64) - self.shift_v
        f = features.astype(np.float64) - self.shift_f
        self.n += v.shape[0]
        self.sv += v.sum(0)
        self.svv += (v * v).sum(0)
        self.sf += f.sum(0)
        self.sff += (f * f).sum(0)
        self.svf += v.T @ f

    def result(self) -> np.ndarray:
        """(units, features) correlations; NaN where a unit or a feature never varies."""
        n = max(self.n, 1)
        cov = self.svf / n - np.outer(self.sv / n, self.sf / n)
        var_v = self.svv / n - (self.sv / n) ** 2
        var_f = self.sff / n - (self.sf / n) ** 2
        scale = np.sqrt(np.outer(var_v, var_f))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.where(scale > 1e-12, cov / scale, np.nan)
        # Constant features (a text without quotes) and constant units have no correlation.
        corr[:, var_f <= 1e-12] = np.nan
        corr[var_v <= 1e-12 * np.maximum(1.0, self.svv / n), :] = np.nan
        return np.clip(corr, -1.0, 1.0)


@dataclass
class GateStats:
    """Per layer and unit of one gate: how often it was closed (< 0.1) and open (> 0.9)."""

    name: str
    closed: np.ndarray  # (layers, hidden) counts
    open: np.ndarray
    total: np.ndarray  # (layers, hidden) sums of the gate's value
    histogram: np.ndarray  # (layers, HISTOGRAM_BINS) counts over [0, 1]
    steps: int = 0

    @classmethod
    def empty(cls, name: str, layers: int, hidden: int) -> GateStats:
        zeros = np.zeros((layers, hidden))
        return cls(
            name, zeros.copy(), zeros.copy(), zeros.copy(), np.zeros((layers, HISTOGRAM_BINS))
        )

    def add(self, values: np.ndarray) -> None:
        """values: (T, layers, hidden) in [0, 1]."""
        self.steps += values.shape[0]
        self.closed += (values < SATURATION).sum(0)
        self.open += (values > 1.0 - SATURATION).sum(0)
        self.total += values.sum(0, dtype=np.float64)
        bins = np.minimum((values * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
        for layer in range(values.shape[1]):
            self.histogram[layer] += np.bincount(bins[:, layer].ravel(), minlength=HISTOGRAM_BINS)

    def summary(self) -> list[dict]:
        """One dict per layer: mean value, the fractions of time closed and open (over all units),
        the units that are closed or open more than half the time, and the value histogram."""
        steps = max(self.steps, 1)
        rows = []
        for layer in range(self.closed.shape[0]):
            closed, opened = self.closed[layer] / steps, self.open[layer] / steps
            rows.append(
                {
                    "layer": layer,
                    "gate": self.name,
                    "mean": float(self.total[layer].mean() / steps),
                    "closed": float(closed.mean()),
                    "open": float(opened.mean()),
                    "mostly_closed_units": int((closed > 0.5).sum()),
                    "mostly_open_units": int((opened > 0.5).sum()),
                    "units": int(closed.shape[0]),
                    "histogram": (self.histogram[layer] / max(self.histogram[layer].sum(), 1))
                    .round(5)
                    .tolist(),
                    "unit_closed": closed.round(4).tolist(),
                    "unit_open": opened.round(4).tolist(),
                }
            )
        return rows


# ----------------------------------------------------------------------------- the whole pass


@dataclass(frozen=True)
class UnitRef:
    """One unit: layer, index within the layer, and which state (c or h)."""

    layer: int
    unit: int
    state: str

    def label(self) -> str:
        return f"{self.layer}:{self.unit} {self.state}"


@dataclass
class Tracker:
    """A unit that tracks a feature, with the correlation of its value and the feature's."""

    feature: str
    unit: UnitRef
    correlation: float


@dataclass
class Inspection:
    """Everything `charrnn inspect` shows. Per-symbol arrays cover the shown prefix; the totals,
    spans, trackers and gate statistics cover the whole text."""

    is_bytes: bool
    cell: str
    layers: int
    hidden: int
    state_names: tuple[str, ...]
    symbols: np.ndarray  # shown prefix, every symbol (also the unknown ones)
    known: np.ndarray  # bool per shown symbol
    bits: np.ndarray  # per shown symbol; NaN for the first and for unknown symbols
    top_ids: np.ndarray  # (shown, TOP_K): what the model expected at each shown symbol
    top_probs: np.ndarray
    values: dict[str, np.ndarray]  # state -> (shown, layers, hidden); NaN rows for unknown
    vocab: Vocab
    loss_sum: float  # nats, over every scored prediction
    chars: int  # predictions scored
    unknown_chars: int
    total_symbols: int
    spans: list[dict] = field(default_factory=list)
    trackers: list[Tracker] = field(default_factory=list)
    gates: list[dict] = field(default_factory=list)
    feature_present: dict[str, bool] = field(default_factory=dict)

    @property
    def bpc(self) -> float:
        return self.loss_sum / self.chars / math.log(2) if self.chars else math.nan

    def unit_values(self, unit: UnitRef) -> np.ndarray:
        """The unit's value at each shown symbol (NaN at unknown ones)."""
        return self.values[unit.state][:, unit.layer, unit.unit]


def parse_cell_index(text: str, layers: int, hidden: int) -> tuple[int, int]:
    """`L:N` (both from 0) checked against the model's shape."""
    parts = text.split(":")
    try:
        layer, unit = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        layer, unit = None, None
    if layer is None or unit is None:
        raise UsageError(f"--cell-index {text}: expected LAYER:UNIT, e.g. 0:42 (both from 0)")
    if not (0 <= layer < layers and 0 <= unit < hidden):
        raise UsageError(
            f"--cell-index {text}: the model has {layers} layer(s) of {hidden} units "
            f"(layers 0-{layers - 1}, units 0-{hidden - 1})"
        )
    return layer, unit


def inspect_symbols(
    model: CharRNN,
    vocab: Vocab,
    symbols: np.ndarray,
    show: int,
    find: bool,
    device: torch.device | str = "cpu",
    threads: CpuThreads | None = None,
    trackers_per_feature: int = 1,
) -> Inspection:
    """Stream `symbols` through `model`: surprisal, unit values for the first `show` symbols
    (0: all), trackers of FEATURES (with `find`) and gate statistics for the whole text."""
    lookup = vocab.lookup_table()
    plus_one = lookup[np.asarray(symbols, dtype=np.int64)]
    known = plus_one > 0
    ids = (plus_one[known] - 1).astype(np.int64)
    if ids.shape[0] < 2:
        raise CorpusError(
            "nothing to score: the text has fewer than two characters the model knows"
        )
    show = symbols.shape[0] if show == 0 else min(show, symbols.shape[0])
    shown_known = int(known[:show].sum())
    tracer = Tracer(model)
    config = model.config
    shape = (config.layers, config.hidden)
    features = text_features(symbols[known]) if find else None
    correlations = {
        name: Correlations(config.layers * config.hidden, len(FEATURES))
        for name in tracer.state_names
    }
    gate_stats = {name: GateStats.empty(name, *shape) for name in GATE_NAMES.get(config.cell, ())}
    bits_known = np.full(ids.shape[0], np.nan, dtype=np.float32)
    top_ids = np.zeros((shown_known, TOP_K), dtype=np.int64)
    top_probs = np.zeros((shown_known, TOP_K), dtype=np.float32)
    values = {
        name: np.zeros((shown_known, *shape), dtype=np.float32) for name in tracer.state_names
    }
    loss_sum = 0.0
    model.eval()
    for start, window in _windows(ids.shape[0]):
        if threads is not None:
            threads.tick()
        inputs = torch.from_numpy(ids[window]).to(device)
        trace = tracer.run(inputs)
        stop = window.stop
        targets = ids[start + 1 : stop + 1]
        with torch.inference_mode():
            scored = trace.logits[: targets.shape[0]]
            losses = F.cross_entropy(
                scored, torch.from_numpy(targets).to(scored.device), reduction="none"
            ).double()
            loss_sum += float(losses.sum())
            bits_known[start + 1 : start + 1 + targets.shape[0]] = (
                (losses / math.log(2)).float().cpu().numpy()
            )
            keep = max(0, min(stop, shown_known - 1) - start)  # predictions for shown symbols
            if keep:
                probs, top = trace.logits[:keep].softmax(-1).topk(min(TOP_K, vocab.size), dim=-1)
                top_ids[start + 1 : start + 1 + keep, : top.shape[1]] = top.cpu().numpy()
                top_probs[start + 1 : start + 1 + keep, : top.shape[1]] = probs.cpu().numpy()
        host = {name: v.cpu().numpy() for name, v in trace.values.items()}
        shown_here = max(0, min(stop, shown_known) - start)
        for name, value in host.items():
            if shown_here:
                values[name][start : start + shown_here] = value[:shown_here]
            if features is not None:
                correlations[name].add(value.reshape(value.shape[0], -1), features[window])
        for name, gate in trace.gates.items():
            gate_stats[name].add(gate.cpu().numpy())
    shown_symbols = symbols[:show]
    shown_mask = known[:show]
    inspection = Inspection(
        is_bytes=vocab.is_bytes,
        cell=config.cell,
        layers=config.layers,
        hidden=config.hidden,
        state_names=tracer.state_names,
        symbols=shown_symbols,
        known=shown_mask,
        bits=_spread(bits_known[:shown_known], shown_mask),
        top_ids=_spread(top_ids, shown_mask, fill=0),
        top_probs=_spread(top_probs, shown_mask, fill=0.0),
        values={name: _spread(v, shown_mask) for name, v in values.items()},
        vocab=vocab,
        loss_sum=loss_sum,
        chars=int(ids.shape[0] - 1),
        unknown_chars=int((~known).sum()),
        total_symbols=int(symbols.shape[0]),
        spans=surprising_spans(bits_known, ids, vocab),
        gates=[row for stats in gate_stats.values() for row in stats.summary()],
    )
    if features is not None:
        present = features.std(0) > 0
        inspection.feature_present = {
            name: bool(p) for name, p in zip(FEATURES, present, strict=False)
        }
        inspection.trackers = best_trackers(
            {name: c.result() for name, c in correlations.items()}, shape, trackers_per_feature
        )
    return inspection


def _windows(n: int) -> Iterator[tuple[int, slice]]:
    for start in range(0, n, WINDOW):
        yield start, slice(start, min(start + WINDOW, n))


def _spread(known_rows: np.ndarray, mask: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """Rows for known symbols placed at their positions among all symbols; `fill` elsewhere."""
    out = np.full((mask.shape[0], *known_rows.shape[1:]), fill, dtype=known_rows.dtype)
    out[mask] = known_rows
    return out


def surprising_spans(bits: np.ndarray, ids: np.ndarray, vocab: Vocab) -> list[dict]:
    """The SPANS non-overlapping runs of SPAN_CHARS known symbols with the most bits in all."""
    scored = np.nan_to_num(bits, nan=0.0).astype(np.float64)
    width = min(SPAN_CHARS, scored.shape[0])
    sums = np.convolve(scored, np.ones(width), mode="valid")
    taken: list[int] = []
    for start in np.argsort(-sums, kind="stable").tolist():
        if all(abs(start - other) >= width for other in taken):
            taken.append(start)
            if len(taken) == SPANS:
                break
    spans = []
    for start in taken:
        piece = ids[start : start + width]
        worst = start + int(np.nanargmax(np.nan_to_num(bits[start : start + width], nan=-1.0)))
        spans.append(
            {
                "start": start,
                "text": "".join(symbol_text(vocab.symbols[i], vocab.is_bytes) for i in piece),
                "bits": float(sums[start]),
                "bits_per_char": float(sums[start] / width),
                "worst": worst - start,
                "worst_bits": float(bits[worst]),
            }
        )
    return spans


def best_trackers(
    correlations: dict[str, np.ndarray], shape: tuple[int, int], per_feature: int
) -> list[Tracker]:
    """The `per_feature` units with the largest |correlation| for each feature, features ordered
    by their best |correlation| (features the text never varies are left out)."""
    by_feature: list[list[Tracker]] = []
    hidden = shape[1]
    for f, feature in enumerate(FEATURES):
        candidates = [
            (abs(float(corr[u, f])), float(corr[u, f]), state, u)
            for state, corr in correlations.items()
            for u in range(corr.shape[0])
            if not math.isnan(corr[u, f])
        ]
        if not candidates:
            continue
        candidates.sort(key=lambda item: -item[0])
        by_feature.append(
            [
                Tracker(feature, UnitRef(u // hidden, u % hidden, state), value)
                for _, value, state, u in candidates[:per_feature]
            ]
        )
    by_feature.sort(key=lambda rows: -abs(rows[0].correlation))
    return [row for rows in by_feature for row in rows]

"""Looking inside a model: per-character surprisal, unit values, gate statistics, and the units
that best track simple features of the text (Karpathy, Johnson & Fei-Fei 2015).

The text streams through the network window by window with the state carried, through the same
`scoring.forward_windows` that `eval` scores with, so a long file needs memory for one window of
activations, not for the whole text. Each layer runs as its own single-layer fused module with the
model's weights, which yields every layer's outputs h; the gates and the LSTM cell state c are
then computed from those outputs and the same weights, vectorised over the window (c by a
parallel scan), and checked against the fused layers' final state in the tests.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from charrnn.analysis.metrics import TOP_K
from charrnn.analysis.scoring import EVAL_WINDOW as WINDOW
from charrnn.analysis.scoring import Window, evaluating, forward_windows
from charrnn.config import DataConfig, ModelConfig
from charrnn.errors import CorpusError, UsageError
from charrnn.model.network import CharRNN, State, cat_states, map_state, state_parts
from charrnn.system.device import CpuThreads
from charrnn.text.corpus import IGNORE_INDEX, Vocab, corpus_symbol_chunks, symbols_of
from charrnn.text.preprocess import preprocess_text

SATURATION = 0.1  # a gate below this is "closed", above 1 - this "open" (the paper's threshold)
HISTOGRAM_BINS = 20
SPAN_CHARS = 12  # width of the "most surprising spans"
SPANS = 5
GATE_NAMES = {
    "lstm": ("input", "forget", "output"),
    "gru": ("reset", "update"),
    "mingru": ("update",),
}
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
    memory: bool = False  # also how far back the model remembers (analysis.memory)
    plot: Path | None = None  # draw the memory curves to this image (implies memory)


# ----------------------------------------------------------------------------- reading the text


def symbol_chunks(
    source: Path | str, vocab: Vocab, encoding: str, data_config: DataConfig | None = None
) -> Iterator[np.ndarray]:
    """The symbols (code points, or bytes for a bytes model) of a file piece by piece, or of
    stdin for "-" (read whole), preprocessed as the model's corpus was (`data_config`). A
    missing file fails here, before any piece is read."""
    config = dataclasses.replace(
        data_config or DataConfig(), encoding=encoding, bytes=vocab.is_bytes
    )
    if str(source) == "-":
        return iter([_stdin_symbols(vocab, config)])
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"file not found: {path}")
    return corpus_symbol_chunks([path], config)


def _stdin_symbols(vocab: Vocab, config: DataConfig) -> np.ndarray:
    data = sys.stdin.buffer.read()
    if vocab.is_bytes:
        return symbols_of(data, True)
    try:
        text = data.decode(config.encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise CorpusError(f"stdin: not valid {config.encoding} ({exc})") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return symbols_of(preprocess_text(text, config), False)


# ----------------------------------------------------------------------------- text features

NEWLINE = ord("\n")
MAX_NAME_LINE = 64  # a speaker-name line is at most this long; so a window looks this far ahead


def text_features(symbols: np.ndarray) -> np.ndarray:
    """(n, len(FEATURES)) float32 values of the simple features at each symbol of a whole text."""
    return FeatureStream().features(np.asarray(symbols), np.zeros(0, dtype=np.int64))


@dataclass
class FeatureStream:
    """FEATURES of a text read window by window: what each feature needs from before a window
    (quote parity, bracket depth, position in the line, the previous symbol, the line so far)
    is carried; speaker_line also looks at the rest of the line, up to MAX_NAME_LINE ahead."""

    parity: int = 0
    depth: int = 0
    line_position: int = 0
    previous: int = NEWLINE
    line_so_far: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def features(self, window: np.ndarray, ahead: np.ndarray) -> np.ndarray:
        """Features at each symbol of `window`; `ahead`: the next MAX_NAME_LINE + 1 symbols
        (fewer only where the text ends)."""
        s = np.asarray(window, dtype=np.int64)
        n = s.shape[0]
        out = np.zeros((n, len(FEATURES)), dtype=np.float32)
        if n == 0:
            return out
        index = np.arange(n)
        newline = s == NEWLINE
        quotes = np.cumsum(s == ord('"')) + self.parity
        out[:, 0] = quotes % 2
        out[:, 1] = _bracket_depth(s, self.depth)
        last_newline = np.maximum.accumulate(np.where(newline, index, -1 - self.line_position))
        out[:, 2] = index - last_newline
        previous = np.concatenate([[self.previous], s[:-1]])
        out[:, 3] = (previous == NEWLINE) & ~newline
        out[:, 4] = _is_letter(s) & ~_is_letter(previous)
        out[:, 6] = (s >= ord("0")) & (s <= ord("9"))
        rest = np.asarray(ahead[: MAX_NAME_LINE + 1], dtype=np.int64)
        ends = np.flatnonzero(rest == NEWLINE)
        rest = rest[: ends[0] + 1] if ends.shape[0] else rest
        context = np.concatenate([self.line_so_far, s, rest])
        before = self.line_so_far.shape[0]
        out[:, 5] = _speaker_lines(context, context == NEWLINE)[before : before + n]
        self.parity, self.depth = int(quotes[-1] % 2), int(out[-1, 1])
        self.line_position, self.previous = int(out[-1, 2]), int(s[-1])
        newlines = np.flatnonzero(newline)
        tail = s[newlines[-1] + 1 :] if newlines.shape[0] else np.concatenate([self.line_so_far, s])
        self.line_so_far = tail[-(MAX_NAME_LINE + 1) :]  # a longer line is no name line anyway
        return out


def _is_letter(s: np.ndarray) -> np.ndarray:
    unique = np.unique(s)
    letters = np.array([chr(int(c)).isalpha() for c in unique], dtype=bool)
    return letters[np.searchsorted(unique, s)]


def _bracket_depth(s: np.ndarray, depth: int = 0) -> np.ndarray:
    """Nesting depth after each symbol, from `depth` before the first; a closing bracket with
    none open leaves it at 0."""
    step = np.isin(s, [ord(c) for c in "([{"]).astype(np.int64)
    step -= np.isin(s, [ord(c) for c in ")]}"])
    changes = np.flatnonzero(step)
    if changes.shape[0] == 0:
        return np.full(s.shape[0], depth, dtype=np.int64)
    depth_after, start = np.zeros(changes.shape[0], dtype=np.int64), depth
    for k, position in enumerate(changes.tolist()):  # only the bracket positions, usually few
        depth = max(0, depth + int(step[position]))
        depth_after[k] = depth
    at = np.searchsorted(changes, np.arange(s.shape[0]), side="right") - 1
    return np.where(at >= 0, depth_after[np.maximum(at, 0)], start)


def _speaker_lines(s: np.ndarray, newline: np.ndarray) -> np.ndarray:
    """1 on each symbol (its newline included) of a line of at most MAX_NAME_LINE capitals,
    spaces and apostrophes that starts with a capital and ends in a colon. `s` starts at the
    start of a line."""
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
    length = np.bincount(line, weights=body, minlength=n_lines)
    speaker = (bad == 0) & (colons == 1) & (starts_upper == 1) & (length <= MAX_NAME_LINE)
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
            trace, self.state = self.forward(ids.unsqueeze(0), self.state)
        return trace

    def forward(self, ids: Tensor, state: State | None) -> tuple[WindowTrace, State]:
        """The trace of ids (1, T) read from `state` (None: zeros), and the state after them;
        the signature of `CharRNN.forward`, for `forward_windows`."""
        x = self.model.embed(ids)  # (1, T, E)
        previous = state if state is not None else self.model.initial_state(1, ids.device)
        values: dict[str, list[Tensor]] = {name: [] for name in self.state_names}
        gates: dict[str, list[Tensor]] = {name: [] for name in GATE_NAMES.get(self.cell, ())}
        carried: list[State] = []
        for k, layer in enumerate(self.layers):
            start = map_state(lambda part, k=k: part[k : k + 1], previous)
            h0, *c0 = state_parts(start)  # an LSTM's c0 too
            out, last = layer(x, start)
            h = out[0]  # (T, H)
            h_before = torch.cat([h0[0], h[:-1]])
            if c0:
                c, layer_gates = _lstm_cells(layer, x[0], h_before, c0[0][0])
                values["c"].append(c)
            elif self.cell == "gru":
                layer_gates = _gru_gates(layer, x[0], h_before)
            elif self.cell == "mingru":
                layer_gates = _mingru_gates(layer, x[0])
            else:
                layer_gates = {}
            for name, value in layer_gates.items():
                gates[name].append(value)
            values["h"].append(h)
            carried.append(last)
            x = out
        trace = WindowTrace(
            self.model.head(x[0]).float(),
            {name: torch.stack(v, dim=1).float() for name, v in values.items()},
            {name: torch.stack(v, dim=1).float() for name, v in gates.items()},
        )
        return trace, cat_states(carried, dim=0)


def _single_layer(model: CharRNN, k: int) -> nn.Module:
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
        for name, weight in layer.named_parameters():  # weight_ih_l0 is the stack's weight_ih_lk
            weight.copy_(getattr(rnn, f"{name.removesuffix('_l0')}_l{k}"))
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


def _mingru_gates(layer: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """The minGRU's update gate z_t, from the layer's inputs alone."""
    hidden = layer.hidden_size
    gate = x @ layer.weight_ih_l0[:hidden].t() + layer.bias_ih_l0[:hidden]
    return {"update": gate.float().sigmoid()}


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

    def feature_varies(self) -> np.ndarray:
        """Per feature: whether it took more than one value."""
        n = max(self.n, 1)
        return self.sff / n - (self.sf / n) ** 2 > 1e-12

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


class _KnownStream:
    """The ids of the known symbols of a text read piece by piece (`pending`, from known index
    `offset`), and the first `show` symbols of all (0: all) with whether each is known."""

    def __init__(self, chunks: Iterable[np.ndarray], vocab: Vocab, show: int) -> None:
        self.vocab = vocab
        self.chunks = iter(chunks)
        self.show = show
        self.pending = np.zeros(0, dtype=np.int64)
        self.offset = self.seen = self.unknown = 0
        self.shown_symbols: list[np.ndarray] = []
        self.shown_known: list[np.ndarray] = []
        self.exhausted = False

    def fill(self, count: int) -> None:
        """Read until `count` known ids are pending or the text ends."""
        while self.pending.shape[0] < count and not self.exhausted:
            chunk = next(self.chunks, None)
            if chunk is None:
                self.exhausted = True
                return
            ids, known = self.vocab.known_ids(np.asarray(chunk, dtype=np.int64))
            room = chunk.shape[0] if self.show == 0 else max(0, self.show - self.seen)
            if room:
                self.shown_symbols.append(np.asarray(chunk[:room], dtype=np.int64))
                self.shown_known.append(known[:room])
            self.seen += chunk.shape[0]
            self.unknown += int((~known).sum())
            self.pending = np.concatenate([self.pending, ids])

    def advance(self, count: int) -> None:
        self.pending, self.offset = self.pending[count:], self.offset + count

    def windows(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Known ids (1, <= WINDOW) and their next-symbol targets (IGNORE_INDEX past the text's
        end), window by window; the stream stands at a window's start while it is out, with
        the symbols after it read (the features look ahead)."""
        while True:
            self.fill(WINDOW + MAX_NAME_LINE + 2)
            count = min(WINDOW, self.pending.shape[0])
            if count == 0 or (self.offset == 0 and self.pending.shape[0] < 2):
                return
            targets = np.full((1, count), IGNORE_INDEX, dtype=np.int64)
            following = self.pending[1 : count + 1]
            targets[0, : following.shape[0]] = following
            yield self.pending[None, :count], targets
            self.advance(count)

    def shown_limit(self) -> int:
        """Known positions below this are shown (every one read so far, until `show` symbols
        have been read)."""
        if self.show == 0 or self.seen < self.show:
            return self.offset + self.pending.shape[0]
        return int(sum(int(k.sum()) for k in self.shown_known))


class _SpanFinder:
    """The most surprising SPAN_CHARS-long runs, found window by window: each window keeps its
    best CANDIDATES starts, enough for SPANS non-overlapping picks over the whole text."""

    CANDIDATES = SPANS * 2 * SPAN_CHARS + SPANS

    def __init__(self) -> None:
        self.bits = np.zeros(0, dtype=np.float64)
        self.ids = np.zeros(0, dtype=np.int64)
        self.first = 1  # position of self.bits[0]: the first character has no loss
        self.candidates: list[tuple[float, int, np.ndarray, np.ndarray]] = []

    def add(self, bits: np.ndarray, ids: np.ndarray) -> None:
        """The bits and ids of the next positions."""
        self.bits = np.concatenate([self.bits, bits.astype(np.float64)])
        self.ids = np.concatenate([self.ids, ids])
        if self.bits.shape[0] >= SPAN_CHARS:
            sums = np.convolve(self.bits, np.ones(SPAN_CHARS), mode="valid")
            best = np.argsort(-sums, kind="stable")[: self.CANDIDATES]
            self.candidates += [
                (float(sums[k]), self.first + int(k), self.ids[k : k + SPAN_CHARS].copy(),
                 self.bits[k : k + SPAN_CHARS].copy())
                for k in best.tolist()
            ]  # fmt: skip
            self.candidates.sort(key=lambda c: (-c[0], c[1]))
            del self.candidates[self.CANDIDATES :]
            keep = SPAN_CHARS - 1  # the starts not yet complete
            self.first += self.bits.shape[0] - keep
            self.bits, self.ids = self.bits[-keep:], self.ids[-keep:]

    def result(self, vocab: Vocab) -> list[dict]:
        """Up to SPANS non-overlapping spans, most bits first (a shorter text: one span of it)."""
        candidates = self.candidates or (
            [(float(self.bits.sum()), self.first, self.ids, self.bits)] if self.bits.size else []
        )
        taken: list[tuple[float, int, np.ndarray, np.ndarray]] = []
        for candidate in candidates:
            if all(abs(candidate[1] - other[1]) >= SPAN_CHARS for other in taken):
                taken.append(candidate)
                if len(taken) == SPANS:
                    break
        return [
            {
                "start": start,
                "text": "".join(vocab.glyph(i) for i in ids),
                "bits": total,
                "bits_per_char": total / bits.shape[0],
                "worst": int(bits.argmax()),
                "worst_bits": float(bits.max()),
            }
            for total, start, ids, bits in taken
        ]


def inspect_symbols(
    model: CharRNN,
    vocab: Vocab,
    chunks: Iterable[np.ndarray] | np.ndarray,
    show: int,
    find: bool,
    device: torch.device | str = "cpu",
    threads: CpuThreads | None = None,
    trackers_per_feature: int = 1,
) -> Inspection:
    """Stream a text (symbol arrays, piece by piece) through `model`: surprisal, top-5 and unit
    values for the first `show` symbols (0: all); totals, spans, trackers of FEATURES (with
    `find`) and gate statistics for the whole text, in memory for one window."""
    stream = _KnownStream([chunks] if isinstance(chunks, np.ndarray) else chunks, vocab, show)
    tracer = Tracer(model)
    collector = _Collector(model.config, vocab, tracer.state_names, find)
    with evaluating(model), torch.inference_mode():
        for window in forward_windows(tracer.forward, stream.windows(), device, threads):
            collector.add(window, stream)
    if stream.offset + stream.pending.shape[0] < 2:
        raise CorpusError(
            "nothing to score: the text has fewer than two characters the model knows"
        )
    return collector.result(stream, trackers_per_feature)


class _Collector:
    """What `inspect` keeps of the windows: the shown positions' bits, top predictions and unit
    values, and over the whole text the loss, spans, gate statistics and feature correlations."""

    def __init__(
        self, config: ModelConfig, vocab: Vocab, state_names: tuple[str, ...], find: bool
    ) -> None:
        self.config, self.vocab, self.state_names = config, vocab, state_names
        self.shape = (config.layers, config.hidden)
        self.code_points = np.asarray(vocab.symbols, dtype=np.int64)
        self.features = FeatureStream() if find else None
        units = config.layers * config.hidden
        self.correlations = {name: Correlations(units, len(FEATURES)) for name in state_names}
        gate_names = GATE_NAMES.get(config.cell, ())
        self.gates = {name: GateStats.empty(name, *self.shape) for name in gate_names}
        self.spans = _SpanFinder()
        self.bits: list[np.ndarray] = [np.full(1, np.nan, dtype=np.float32)]  # from position 0
        self.top: list[tuple[np.ndarray, np.ndarray]] = []  # from position 1
        self.values: dict[str, list[np.ndarray]] = {name: [] for name in state_names}
        self.loss_sum = 0.0

    def add(self, window: Window, stream: _KnownStream) -> None:
        """One window, while `stream` stands at its start."""
        trace: WindowTrace = window.output
        start, count = stream.offset, window.inputs.shape[1]
        targets = window.host_targets[0][window.host_targets[0] != IGNORE_INDEX]
        losses = window.losses("none")[: targets.shape[0]].double()
        self.loss_sum += float(losses.sum())
        bits = (losses / math.log(2)).float().cpu().numpy()
        self.spans.add(bits, targets)
        limit = stream.shown_limit()
        keep = max(0, min(start + targets.shape[0], limit - 1) - start)  # shown predictions
        if keep:
            self.bits.append(bits[:keep])
            top_k = min(TOP_K, self.vocab.size)
            probs, top = window.logits[:keep].softmax(-1).topk(top_k, dim=-1)
            self.top.append((top.cpu().numpy(), probs.cpu().numpy()))
        shown_here = max(0, min(start + count, limit) - start)
        features = None
        if self.features is not None:
            ahead = self.code_points[stream.pending[count : count + MAX_NAME_LINE + 1]]
            features = self.features.features(self.code_points[stream.pending[:count]], ahead)
        for name, tensor in trace.values.items():
            value = tensor.cpu().numpy()
            if shown_here:
                self.values[name].append(value[:shown_here])
            if features is not None:
                self.correlations[name].add(value.reshape(value.shape[0], -1), features)
        for name, gate in trace.gates.items():
            self.gates[name].add(gate.cpu().numpy())

    def result(self, stream: _KnownStream, trackers_per_feature: int) -> Inspection:
        """The inspection of the whole text `stream` has read."""
        mask = np.concatenate(stream.shown_known) if stream.shown_known else np.zeros(0, bool)
        symbols = np.concatenate(stream.shown_symbols) if stream.shown_symbols else np.zeros(0)
        shown = int(mask.sum())
        top_ids = np.zeros((shown, TOP_K), dtype=np.int64)
        top_probs = np.zeros((shown, TOP_K), dtype=np.float32)
        if self.top:
            ids = np.concatenate([t for t, _ in self.top])
            top_ids[1 : 1 + ids.shape[0], : ids.shape[1]] = ids
            top_probs[1 : 1 + ids.shape[0], : ids.shape[1]] = np.concatenate(
                [p for _, p in self.top]
            )
        empty = np.zeros((0, *self.shape), dtype=np.float32)
        values = {
            name: _spread(np.concatenate(parts)[:shown] if parts else empty, mask)
            for name, parts in self.values.items()
        }
        config = self.config
        inspection = Inspection(
            is_bytes=self.vocab.is_bytes,
            cell=config.cell,
            layers=config.layers,
            hidden=config.hidden,
            state_names=self.state_names,
            symbols=symbols.astype(np.int64),
            known=mask,
            bits=_spread(np.concatenate(self.bits)[:shown], mask),
            top_ids=_spread(top_ids, mask, fill=0),
            top_probs=_spread(top_probs, mask, fill=0.0),
            values=values,
            vocab=self.vocab,
            loss_sum=self.loss_sum,
            chars=stream.offset + stream.pending.shape[0] - 1,
            unknown_chars=stream.unknown,
            total_symbols=stream.seen,
            spans=self.spans.result(self.vocab),
            gates=[row for stats in self.gates.values() for row in stats.summary()],
        )
        if self.features is not None:
            any_state = next(iter(self.correlations.values()))
            present = any_state.feature_varies().tolist()
            inspection.feature_present = dict(zip(FEATURES, present, strict=True))
            correlations = {name: c.result() for name, c in self.correlations.items()}
            inspection.trackers = best_trackers(correlations, self.shape, trackers_per_feature)
        return inspection


def _spread(known_rows: np.ndarray, mask: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """Rows for known symbols placed at their positions among all symbols; `fill` elsewhere."""
    out = np.full((mask.shape[0], *known_rows.shape[1:]), fill, dtype=known_rows.dtype)
    out[mask] = known_rows
    return out


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

"""How far back a model remembers: context use, gradient flow and gate timescales.

- Context use (Khandelwal et al. 2018, "Sharp Nearby, Fuzzy Far Away"): the loss of a
  prediction when the model may see only the last k characters (the state starts from zero k
  characters before the predicted one), against its loss with the state carried as `charrnn
  eval` carries it. One run from a zero state at a sampled start s predicts s+1 from 1
  character, s+2 from 2, ..., so a batch of starts gives every k at once; each k is compared
  with the full-state loss of the same targets (paired, which keeps its standard error small).
- Gradient flow: the mean norm of d log p(x_t) / d e(t-k), the gradient of one prediction with
  respect to the input embedding k characters earlier, by backpropagation through time over a
  window of the `max_lag` characters before t (from a zero state): the vanishing gradient.
  Each window's loss depends on its own embeddings only, so one backward pass of a batch of
  windows gives every position's gradient.
- Gate timescales: how long a gated cell keeps what it holds. The keep factor a of
  h_t = a_t * h_(t-1) + ... (an LSTM's forget gate f on c; a GRU's update gate z, since
  torch's GRU is h' = (1 - z) n + z h; a minGRU's 1 - z) gives each unit the timescale
  -1 / mean(ln a) over the text: the characters after which a kept value has shrunk by 1/e.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn.analysis.inspection import Tracer
from charrnn.analysis.scoring import EVAL_WINDOW, evaluating, forward_windows
from charrnn.errors import CorpusError, UsageError
from charrnn.model.network import CharRNN
from charrnn.system.device import CpuThreads
from charrnn.text.corpus import IGNORE_INDEX, eval_windows

MAX_CONTEXT = 1024  # the largest k of the context-use curve (k = 1, 2, 4, ..., MAX_CONTEXT)
MAX_LAG = 512  # the gradient flow's largest distance
POSITIONS = 256  # sampled starts of the context runs (each gives every k)
GRADIENT_POSITIONS = 64  # sampled predictions of the gradient flow
MAX_TEXT = 1 << 21  # characters of the text read at most (the first ones)
GATE_CHARS = 1 << 13  # characters the gate timescales are averaged over (the first ones)
MAX_STREAMS = 64  # the full-state pass: streams as `charrnn eval` cuts them, at most this many
STREAM_CONTEXTS = 4  # ... each at least this many times max_context long
RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE = 0.01, 0.01  # "within 1% and within 0.01 nats"
BATCH = 128  # windows per forward call
STEP = 128  # characters per forward call of the context runs (bounds the activations kept)
KEEP_GATE = {"lstm": "forget", "gru": "update", "mingru": "update"}
KEEP_LABEL = {"lstm": "forget gate f", "gru": "update gate z", "mingru": "1 - update gate z"}
TIMESCALE_EDGES = [0.0] + [float(2**j) for j in range(11)] + [math.inf]  # <1, 1-2, ... >=1024


@dataclass(frozen=True)
class ContextPoint:
    """The mean loss (nats) of `positions` predictions made from the last `k` characters only,
    the full-state loss of the same predictions, and the standard errors of the loss and of
    the gap (paired: the same predictions)."""

    k: int
    loss: float
    full_loss: float
    stderr: float
    gap_stderr: float

    @property
    def gap(self) -> float:
        return self.loss - self.full_loss


@dataclass(frozen=True)
class MemoryReport:
    """What `charrnn inspect --memory` and `Model.memory` report; see the module docstring."""

    cell: str
    text_chars: int  # characters of the text used
    positions: int  # sampled predictions per context point
    full_loss: float  # their mean loss with the full state
    context: list[ContextPoint]
    effective_context: int | None  # the smallest k within tolerance; None: none up to the last
    gradient_positions: int
    gradient_norms: list[float]  # [k - 1]: mean norm of d log p(x_t) / d e(t - k)
    gradient_stderr: list[float]
    decay_per_100: float  # the fitted factor of the gradient norm per 100 characters
    keep_gate: str | None  # what the timescales come from; None: the cell has no gate
    timescales: list[float]  # per unit (layer-major), in characters
    gate_chars: int

    def timescale_histogram(self) -> list[int]:
        """Units per TIMESCALE_EDGES bin: <1, [1, 2), [2, 4), ..., [512, 1024), >= 1024."""
        values = np.asarray(self.timescales, dtype=np.float64)
        counts, _ = np.histogram(values, bins=np.asarray(TIMESCALE_EDGES))
        return [int(c) for c in counts]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        plain = asdict(self)
        plain["context"] = [dict(asdict(p), gap=p.gap) for p in self.context]
        plain["timescale_edges"] = [e if math.isfinite(e) else None for e in TIMESCALE_EDGES]
        plain["timescale_histogram"] = self.timescale_histogram()
        return _finite(plain)


def _finite(value: Any) -> Any:
    """NaN and infinities as None, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def context_ks(max_context: int) -> list[int]:
    """1, 2, 4, ... up to `max_context` (included, whether a power of two or not)."""
    ks = [2**j for j in range(max_context.bit_length()) if 2**j < max_context]
    return ks + [max_context]


def required_chars(max_context: int, max_lag: int) -> int:
    """The shortest text the analysis takes: a start with `max_context` characters carried
    before it and as many after it; a window of `max_lag` characters and its target."""
    return max(2 * max_context + 2, max_lag + 2)


def memory_report(
    model: CharRNN,
    ids: np.ndarray,
    *,
    max_context: int = MAX_CONTEXT,
    max_lag: int = MAX_LAG,
    positions: int = POSITIONS,
    gradient_positions: int = GRADIENT_POSITIONS,
    seed: int = 0,
    threads: CpuThreads | None = None,
) -> MemoryReport:
    """The context-use curve, the gradient flow and the gate timescales of `model` on `ids`
    (known symbol ids, one text; the first MAX_TEXT are used)."""
    if max_context < 1 or max_lag < 1 or positions < 1 or gradient_positions < 1:
        raise UsageError("the memory analysis needs positive sizes")
    ids = np.asarray(ids[:MAX_TEXT], dtype=np.int64)
    needed = required_chars(max_context, max_lag)
    if ids.shape[0] < needed:
        raise CorpusError(
            f"the memory analysis needs a text of at least {needed} characters the model knows "
            f"(contexts up to {max_context} and as many before them); this one has {ids.shape[0]}"
        )
    rng = np.random.default_rng(seed)
    device = model.head.weight.device
    with evaluating(model):
        full, carried = full_losses(model, ids, max_context, threads)
        starts = _context_starts(carried, max_context, positions, rng)
        ks = context_ks(max_context)
        cut = cut_losses(model, ids, starts, ks, device)
        # The target of start s at context k is ids[s + k].
        context = [_point(k, cut[:, j], full[starts + k]) for j, k in enumerate(ks)]
        candidates = np.arange(max_lag, ids.shape[0])
        count = min(gradient_positions, candidates.shape[0])
        ends = np.sort(rng.choice(candidates, count, replace=False))
        norms = gradient_norms(model, ids, ends, max_lag)
        keep_gate, timescales, gate_chars = gate_timescales(model, ids[:GATE_CHARS], threads)
    mean_norms = norms.mean(0)
    return MemoryReport(
        cell=model.config.cell,
        text_chars=int(ids.shape[0]),
        positions=int(starts.shape[0]),
        full_loss=float(np.mean([p.full_loss for p in context])),
        context=context,
        effective_context=effective_context(context),
        gradient_positions=int(ends.shape[0]),
        gradient_norms=[float(v) for v in mean_norms],
        gradient_stderr=[float(v) for v in norms.std(0, ddof=1) / math.sqrt(norms.shape[0])]
        if norms.shape[0] > 1
        else [math.nan] * max_lag,
        decay_per_100=decay_per_100(mean_norms),
        keep_gate=keep_gate,
        timescales=timescales,
        gate_chars=gate_chars,
    )


def _point(k: int, cut: np.ndarray, full: np.ndarray) -> ContextPoint:
    n = cut.shape[0]
    se = (lambda v: float(v.std(ddof=1) / math.sqrt(n))) if n > 1 else (lambda v: math.nan)
    return ContextPoint(k, float(cut.mean()), float(full.mean()), se(cut), se(cut - full))


def effective_context(points: list[ContextPoint]) -> int | None:
    """The smallest k whose loss is within 1% and within 0.01 nats of the full loss."""
    for p in points:
        if p.gap <= min(ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE * abs(p.full_loss)):
            return p.k
    return None


def decay_per_100(norms: np.ndarray) -> float:
    """10 ** (100 * slope) of the least-squares line through log10(norm) against k (the norms
    that are 0 or not finite left out): the factor the gradient shrinks by per 100 characters."""
    k = np.arange(1, norms.shape[0] + 1, dtype=np.float64)
    ok = np.isfinite(norms) & (norms > 0)
    if ok.sum() < 2:
        return math.nan
    slope = np.polyfit(k[ok], np.log10(norms[ok].astype(np.float64)), 1)[0]
    return float(10.0 ** (100.0 * slope))


# ----------------------------------------------------------------------------- context use


def full_losses(
    model: CharRNN, ids: np.ndarray, max_context: int, threads: CpuThreads | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The loss of every prediction with the state carried (`loss[i]`: of ids[i]; NaN at 0),
    in streams as `charrnn eval` cuts them (as many as leave each at least STREAM_CONTEXTS *
    max_context characters, at most MAX_STREAMS), and how many characters each had carried
    before it."""
    predictions = ids.shape[0] - 1
    streams = max(1, min(MAX_STREAMS, predictions // (STREAM_CONTEXTS * max_context)))
    length = math.ceil(predictions / streams)
    losses = np.full(ids.shape[0], np.nan, dtype=np.float64)
    offset = 0
    device = model.head.weight.device
    with torch.inference_mode():
        windows = eval_windows(ids, streams, EVAL_WINDOW)
        for window in forward_windows(model, windows, device, threads):
            width = window.inputs.shape[1]
            rows = window.losses("none").double().cpu().numpy().reshape(window.inputs.shape)
            scored = window.host_targets != IGNORE_INDEX
            for stream in range(scored.shape[0]):
                first = stream * length + offset + 1  # the position of the first target
                count = int(scored[stream].sum())
                losses[first : first + count] = rows[stream, :count]
            offset += width
    position = np.arange(ids.shape[0])
    carried = position - ((position - 1) // length) * length  # prediction i - 1's stream start
    carried[0] = 0
    return losses, carried


def _context_starts(
    carried: np.ndarray, max_context: int, positions: int, rng: np.random.Generator
) -> np.ndarray:
    """Sampled starts s: ids[s] was predicted from at least `max_context` characters
    (`carried[i]`: the characters read when ids[i] was predicted), and so were the next ones up
    to ids[s + max_context], in the same stream."""
    n = carried.shape[0]
    candidates = np.arange(1, n - max_context)
    ok = (carried[candidates] >= max_context) & (
        carried[candidates + max_context] == carried[candidates] + max_context
    )
    candidates = candidates[ok]
    if candidates.shape[0] == 0:
        raise CorpusError("the text is too short for the memory analysis")
    count = min(positions, candidates.shape[0])
    return np.sort(rng.choice(candidates, count, replace=False))


def cut_losses(
    model: CharRNN, ids: np.ndarray, starts: np.ndarray, ks: list[int], device: torch.device
) -> np.ndarray:
    """(starts, ks) losses of ids[s + k] predicted from ids[s : s + k] alone, from a zero state:
    one run of max(ks) characters per start, in batches of BATCH starts."""
    span = max(ks)
    picks = torch.tensor([k - 1 for k in ks], device=device)  # output index predicting s + k
    out = np.zeros((starts.shape[0], len(ks)), dtype=np.float64)
    with torch.inference_mode():
        for first in range(0, starts.shape[0], BATCH):
            rows = starts[first : first + BATCH]
            window = np.stack([ids[s : s + span + 1] for s in rows])
            inputs = torch.from_numpy(window[:, :-1]).to(device)
            targets = torch.from_numpy(window[:, [k for k in ks]]).to(device)
            state, kept = None, []
            for at in range(0, span, STEP):
                features, state = model.rnn(model.embed(inputs[:, at : at + STEP]), state)
                kept.append(features[:, _local(picks, at, features.shape[1])])  # the picked only
            logits = _at_least_float32(model.head(torch.cat(kept, dim=1)))
            loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            out[first : first + rows.shape[0]] = loss.double().cpu().numpy()
    return out


def _at_least_float32(tensor: Tensor) -> Tensor:
    """Half-precision values as float32; float32 and float64 as they are."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _local(picks: Tensor, at: int, width: int) -> Tensor:
    """The picked output indices that fall in the chunk [at, at + width), made local."""
    inside = picks[(picks >= at) & (picks < at + width)]
    return inside - at


# ----------------------------------------------------------------------------- gradient flow


def gradient_norms(model: CharRNN, ids: np.ndarray, ends: np.ndarray, max_lag: int) -> np.ndarray:
    """(len(ends), max_lag): for each target t in `ends` and k = 1..max_lag, the norm of
    d log p(ids[t]) / d e(t - k) over the window ids[t - max_lag : t] read from a zero state."""
    device = model.head.weight.device
    out = np.zeros((ends.shape[0], max_lag), dtype=np.float64)
    # cuDNN backpropagates through its RNNs only in training mode; dropout stays off.
    with torch.backends.cudnn.flags(enabled=False), torch.enable_grad():
        for first in range(0, ends.shape[0], BATCH):
            rows = ends[first : first + BATCH]
            window = torch.from_numpy(np.stack([ids[t - max_lag : t + 1] for t in rows]))
            window = window.to(device)
            embedded = model.embed(window[:, :-1]).detach().requires_grad_(True)
            features, _ = model.rnn(embedded)
            log_p = torch.log_softmax(_at_least_float32(model.head(features[:, -1])), dim=-1)
            chosen = log_p.gather(1, window[:, -1:]).sum()
            (grad,) = torch.autograd.grad(chosen, embedded)
            norms = grad.double().norm(dim=-1).flip(1)  # column k - 1: k characters before
            out[first : first + rows.shape[0]] = norms.cpu().numpy()
    return out


# ----------------------------------------------------------------------------- gate timescales


def gate_timescales(
    model: CharRNN, ids: np.ndarray, threads: CpuThreads | None = None
) -> tuple[str | None, list[float], int]:
    """The keep factor's name, each unit's timescale -1 / mean(ln keep) in characters (layer
    by layer), and the characters averaged over; a vanilla RNN has no keep gate: (None, [], 0)."""
    cell = model.config.cell
    if cell not in KEEP_GATE:
        return None, [], 0
    tracer = Tracer(model)
    total: Tensor | None = None
    count = 0
    device = model.head.weight.device
    tiny = torch.finfo(torch.float32).eps / 2  # a keep factor of 1 in float32 is 1 - eps/2 here
    with torch.inference_mode():
        for window in forward_windows(tracer.forward, eval_windows(ids, 1, EVAL_WINDOW), device):
            gate = window.output.gates[KEEP_GATE[cell]].double()  # (T, layers, hidden)
            keep = 1 - gate if cell == "mingru" else gate
            logs = keep.clamp(1e-12, 1 - tiny).log().sum(0)
            total = logs if total is None else total + logs
            count += gate.shape[0]
    assert total is not None
    scales = (-count / total).flatten().cpu().numpy()
    return KEEP_LABEL[cell], [float(v) for v in scales], count

"""The network: embedding -> stacked RNN/LSTM/GRU/minGRU -> linear to the vocabulary.

Training uses PyTorch's fused recurrent layers, and `MinGRU` (below) for the minGRU. Generation
uses `Stepper`, which writes the cell equations out with the model's own weights: at batch size 1
the fused layers' per-call overhead dominates, and one step of hand-written equations is several
times cheaper. On the CPU with numba installed, its steps and draws are model/kernels.py's
compiled calls, whose sums are the same loop for every row: a stream gets the same bits alone
and batched. The tests check the paths against each other.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn.config import ModelConfig

# An LSTM's state is (h, c); a GRU's or RNN's is h. Each has shape (layers, batch, hidden).
State = Tensor | tuple[Tensor, Tensor]


class _LinearScan(torch.autograd.Function):
    """h_t = a_t h_(t-1) + b_t along dim 0 of (T, batch, hidden), from h0 (batch, hidden).

    A plain loop over time, one fused multiply-add per step forward and one backward, with the
    gradient written by hand: autograd's graph of T small nodes costs more than the arithmetic.
    Measured here (benchmarks/mingru.py) against autograd's loop and a parallel (Hillis-Steele)
    scan at windows of 64-128: the hand-written loop was the fastest.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:  # type: ignore[override]
        out = torch.empty_like(b)
        h = h0
        for t in range(b.shape[0]):
            h = torch.addcmul(b[t], a[t], h, out=out[t])
        ctx.save_for_backward(a, out, h0)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        a, out, h0 = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        # g_t = dL/dh_t in full = grad_out_t + a_(t+1) g_(t+1); then dL/db_t = g_t.
        grad_b = torch.empty_like(grad_out)
        g = grad_b[-1]
        g.copy_(grad_out[-1])
        for t in range(grad_out.shape[0] - 2, -1, -1):
            g = torch.addcmul(grad_out[t], a[t + 1], g, out=grad_b[t])
        before = torch.cat([h0.unsqueeze(0), out[:-1]])
        return grad_b * before, grad_b, a[0] * grad_b[0]


def linear_recurrence(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """h_t = a_t h_(t-1) + b_t for every t of (T, batch, hidden) inputs, from h0."""
    return _LinearScan.apply(a, b, h0)


class MinGRU(nn.Module):
    """Stacked minGRU layers (Feng et al. 2024, "Were RNNs All We Needed?").

    Each layer's gate and candidate depend on its input only:
        z_t = sigmoid(W_z x_t + b_z),  c_t = W_c x_t + b_c,  h_t = (1 - z_t) h_(t-1) + z_t c_t,
    so the whole window's arithmetic is one matrix product per layer, leaving only an elementwise
    recurrence over time. Shapes and state follow `nn.GRU` (batch first, h of (layers, B, H));
    layer k holds `weight_ih_lk` (2H, in), rows [z; c], and `bias_ih_lk`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        assert batch_first, "MinGRU is batch first, as CharRNN uses it"
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout = dropout
        bound = 1 / math.sqrt(hidden_size)  # nn.GRU's initialisation
        for k in range(num_layers):
            width = input_size if k == 0 else hidden_size
            weight = nn.Parameter(torch.empty(2 * hidden_size, width).uniform_(-bound, bound))
            bias = nn.Parameter(torch.empty(2 * hidden_size).uniform_(-bound, bound))
            self.register_parameter(f"weight_ih_l{k}", weight)
            self.register_parameter(f"bias_ih_l{k}", bias)

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Outputs (B, T, H) of the top layer and the last state (layers, B, H)."""
        batch, hidden = x.shape[0], self.hidden_size
        if h0 is None:
            h0 = self.weight_ih_l0.new_zeros(self.num_layers, batch, hidden)
        inputs = x.transpose(0, 1)  # time first: each step's rows are contiguous
        last = []
        for k in range(self.num_layers):
            if k > 0 and self.dropout and self.training:
                inputs = F.dropout(inputs, self.dropout, training=True)
            weight, bias = getattr(self, f"weight_ih_l{k}"), getattr(self, f"bias_ih_l{k}")
            # One product for the window; the recurrence in fp32 under autocast too.
            projected = F.linear(inputs, weight, bias)
            if projected.dtype in (torch.bfloat16, torch.float16):
                projected = projected.float()
            gate, candidate = projected.chunk(2, dim=-1)
            update = torch.sigmoid(gate)
            start = h0[k].to(projected.dtype)
            inputs = linear_recurrence(1 - update, update * candidate, start)
            last.append(inputs[-1])
        return inputs.transpose(0, 1), torch.stack(last).to(h0.dtype)


_RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN, "mingru": MinGRU}


class CharRNN(nn.Module):
    """Character-level language model; `forward` maps ids (B, T) to logits (B, T, V)."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.config, self.vocab_size = config, vocab_size
        self.embed = nn.Embedding(vocab_size, config.embed)
        extra = {"nonlinearity": config.nonlinearity} if config.cell == "rnn" else {}
        self.rnn = _RECURRENT[config.cell](
            config.embed,
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
            **extra,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, vocab_size)

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """Zero hidden state for `batch_size` streams."""
        device = device or self.head.weight.device
        shape = (self.config.layers, batch_size, self.config.hidden)
        zeros = torch.zeros(shape, device=device, dtype=self.head.weight.dtype)
        return (zeros, zeros.clone()) if self.config.cell == "lstm" else zeros

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits for every position and the state after the last one."""
        features, state = self.rnn(self.embed(ids), state)
        return self.head(self.drop(features)), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def resize_vocab(self, new_size: int) -> None:
        """Grow the embedding and output rows to `new_size`; old rows keep their weights."""
        old = self.vocab_size
        if new_size <= old:
            return
        embed = nn.Embedding(new_size, self.config.embed).to(self.embed.weight)
        head = nn.Linear(self.config.hidden, new_size).to(self.head.weight)
        with torch.no_grad():
            embed.weight[:old] = self.embed.weight
            head.weight[:old] = self.head.weight
            head.bias[:old] = self.head.bias
        self.embed, self.head, self.vocab_size = embed, head, new_size


def autocast_failure(config: ModelConfig, dtype: torch.dtype, device: torch.device) -> str | None:
    """Why a model of `config`'s cell and depth cannot train under autocast to `dtype` on
    `device` (the kernel library's first sentence), or None when it can.

    Tried for real on a tiny model of the same cell and depth, one forward and backward step
    (milliseconds): on a CPU without AVX512 oneDNN has no bfloat16 LSTM, and asking for one
    fails inside the step. The global random state is left as it was."""
    tiny = dataclasses.replace(config, hidden=8, embed=8, dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        model = CharRNN(tiny, 4).to(device)
        ids = torch.zeros(2, 3, dtype=torch.long, device=device)
        try:
            with torch.autocast(device.type, dtype=dtype):
                logits, _ = model(ids)
            logits.float().sum().backward()
        except RuntimeError as error:
            return str(error).split(". ")[0].strip().rstrip(".")
    return None


def _layer_weights(rnn: nn.Module, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(w_ih, w_hh, b_ih, b_hh) of one layer; a minGRU has no hidden-to-hidden part: zeros."""
    w_ih, b_ih = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"bias_ih_l{layer}")
    if isinstance(rnn, MinGRU):
        return w_ih, w_ih.new_zeros(0, 0), b_ih, b_ih.new_zeros(0)
    return w_ih, getattr(rnn, f"weight_hh_l{layer}"), b_ih, getattr(rnn, f"bias_hh_l{layer}")


class Stepper:
    """One recurrent step at a time with the model's weights, for fast generation.

    At batch size 1 a step is a few matrix-vector products that stream the weights from memory,
    plus many tiny operations whose dispatch costs more than their arithmetic. So:
    - the state lives in buffers that each step updates in place (no allocation or stacking),
      and the views into them are made once, since indexing a tensor is an operation too;
    - the hidden-to-hidden products of all layers are one batched call (each depends only on
      the previous state);
    - the first layer's input projection is a table lookup per symbol (embedding x W_ih);
    - for the LSTM the gates are reordered (i, f, o, g) and the candidate's rows doubled, so one
      sigmoid covers all four gates: tanh(x) = 2 sigmoid(2x) - 1;
    - a minGRU has no hidden-to-hidden product: a step is its input projection and three
      elementwise operations per layer.
    The output layer is `head_weight` (hidden, vocab) and `head_bias`: `step` applies it, and a
    sampler may fold temperature and noise into it and call `advance` instead.
    """

    def __init__(self, model: CharRNN, state: State) -> None:
        config = model.config
        self.cell, self.layers = config.cell, config.layers
        self.relu = config.nonlinearity == "relu"
        with torch.no_grad():
            weights = [self._layer(model, layer) for layer in range(config.layers)]
            # The GRU's candidate needs the hidden bias on its own; the minGRU has none.
            fold = self.cell not in ("gru", "mingru")
            if self.cell != "mingru":
                self.hidden_weight = torch.stack([w.t() for _, w, _, _ in weights]).contiguous()
                self.hidden_bias = torch.stack(
                    [(b_hh + b_ih if fold else b_hh).unsqueeze(0) for _, _, b_ih, b_hh in weights]
                )
            w_ih0, _, b_ih0, _ = weights[0]
            table = model.embed.weight.detach().float() @ w_ih0.t()
            self.input_table = table if fold else table + b_ih0
            self.input_weights = [w_ih.t().contiguous() for w_ih, _, _, _ in weights[1:]]
            self.input_biases = [b_ih.unsqueeze(0) for _, _, b_ih, _ in weights[1:]]
            self.head_weight = model.head.weight.detach().float().t().contiguous()
            self.head_bias = model.head.bias.detach().float().clone()
            self._width, self._hidden = weights[0][0].shape[0], config.hidden
        self._kernel_weights: _KernelWeights | None = None  # made when first used
        self._bind_state(state)

    @staticmethod
    def _layer(model: CharRNN, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(w_ih, w_hh, b_ih, b_hh) of one layer in fp32, LSTM gates reordered and scaled."""
        w_ih, w_hh, b_ih, b_hh = (t.detach().float() for t in _layer_weights(model.rnn, layer))
        if model.config.cell != "lstm":
            return w_ih, w_hh, b_ih, b_hh
        hidden = model.config.hidden
        order = torch.cat(
            [
                torch.arange(0, 2 * hidden),
                torch.arange(3 * hidden, 4 * hidden),
                torch.arange(2 * hidden, 3 * hidden),
            ]
        )
        scale = torch.ones(4 * hidden)
        scale[3 * hidden :] = 2.0
        return (
            w_ih[order] * scale[:, None],
            w_hh[order] * scale[:, None],
            b_ih[order] * scale,
            b_hh[order] * scale,
        )

    @property
    def state(self) -> State:
        """A copy of the current state, shaped as the fused layers return it."""
        return map_state(Tensor.clone, self._rows())

    @property
    def top(self) -> Tensor:
        """The top layer's output (batch, hidden) after the last symbol fed; updated in place."""
        return self._h[-1]

    def step(self, ids: Tensor) -> Tensor:
        """Feed `ids` (batch,) and return the logits (batch, vocab) of what comes next."""
        return torch.addmm(self.head_bias, self.advance(ids), self.head_weight)

    def advance(self, ids: Tensor) -> Tensor:
        """Feed `ids` (batch,) and return `top`, a view that the next call overwrites."""
        if self.compiled is not None:
            self.compiled.advance(ids)
            return self._h[-1]
        if self.cell == "mingru":
            for layer in range(self.layers):
                self._mingru(layer, ids)
            return self._h[-1]
        torch.baddbmm(self.hidden_bias, self.h, self.hidden_weight, out=self.gates)
        for layer in range(self.layers):
            if self.cell == "gru":
                self._gru(layer, ids)
                continue
            gates = self._gates[layer]
            if layer == 0:
                gates.add_(self.input_table.index_select(0, ids))
            else:
                gates.addmm_(self._h[layer - 1], self.input_weights[layer - 1])
            if self.cell == "lstm":
                self._lstm(layer, gates)
            elif self.relu:
                torch.clamp_min(gates, 0.0, out=self._h[layer])
            else:
                torch.tanh(gates, out=self._h[layer])
        return self._h[-1]

    def _lstm(self, layer: int, gates: Tensor) -> None:
        inputs, forget, output, half = self._split[layer]
        gates.sigmoid_()
        # c' = f c + i g with g = 2 sigmoid(2x) - 1 = 2 half - 1 (rows doubled in _layer)
        c = self._c[layer]
        c.mul_(forget).sub_(inputs).addcmul_(inputs, half, value=2.0)
        torch.mul(output, torch.tanh(c, out=self.scratch), out=self._h[layer])

    def _project_input(self, layer: int, ids: Tensor) -> None:
        """A GRU's or minGRU's input part, bias included, into `_from_input[layer]`."""
        from_input = self._from_input[layer]
        if layer == 0:
            torch.index_select(self.input_table, 0, ids, out=from_input)
        else:
            below, weight, bias = (
                self._h[layer - 1],
                self.input_weights[layer - 1],
                self.input_biases[layer - 1],
            )
            torch.addmm(bias, below, weight, out=from_input)

    def _gru(self, layer: int, ids: Tensor) -> None:
        self._project_input(layer, ids)
        reset, update, candidate = self._split[layer]
        self._rz[layer].add_(self._rz_input[layer]).sigmoid_()
        candidate.mul_(reset).add_(self._n_input[layer]).tanh_()
        # h' = (1 - z) n + z h = n + z (h - n)
        self._h[layer].sub_(candidate).mul_(update).add_(candidate)

    def _mingru(self, layer: int, ids: Tensor) -> None:
        self._project_input(layer, ids)
        update, candidate = self._zc[layer]
        # h' = (1 - z) h + z c = h + z (c - h)
        h = self._h[layer]
        update.sigmoid_()
        h.addcmul_(update, candidate.sub_(h))

    # The rows of a batch whose streams join and leave between steps (generation/streams.py).

    def _bind_state(self, state: State) -> None:
        """Take a copy of `state` as the rows to step, with the buffers and views over them."""
        h, c = state if isinstance(state, tuple) else (state, None)
        with torch.no_grad():
            self.h = h.detach().float().clone()  # (layers, batch, hidden)
            self.c = None if c is None else c.detach().float().clone()
        batch, width, hidden = self.h.shape[1], self._width, self._hidden
        self.gates = self.h.new_empty(self.layers, batch, width)
        self.from_input = self.h.new_empty(self.layers, batch, width)  # GRU only
        self.scratch = torch.empty_like(self.h[0])
        self._h, self._gates = self.h.unbind(0), self.gates.unbind(0)
        self._c = None if self.c is None else self.c.unbind(0)
        self._from_input = self.from_input.unbind(0)
        parts = width // hidden  # gates per layer (a view of -1 is ambiguous at batch 0)
        self._split = [gates.view(batch, parts, hidden).unbind(1) for gates in self._gates]
        # GRU: the reset and update gates together, and the candidate, of both parts.
        self._rz = [gates[:, : 2 * hidden] for gates in self._gates]
        self._rz_input = [part[:, : 2 * hidden] for part in self._from_input]
        self._n_input = [part[:, 2 * hidden :] for part in self._from_input]
        # minGRU: the update gate and the candidate, from the input.
        if self.cell == "mingru":
            self._zc = [part.view(batch, 2, width // 2).unbind(1) for part in self._from_input]
        self.compiled: _Compiled | None = None
        kernels = _kernels_for(self.h.device)
        if kernels is not None:
            if self._kernel_weights is None:  # once: the rows change as streams come and go
                self._kernel_weights = _KernelWeights(self)
            self.compiled = _Compiled(self, self._kernel_weights, kernels)

    @property
    def rows(self) -> int:
        """How many streams the stepper holds."""
        return self.h.shape[1]

    def _rows(self) -> State:
        """The rows being stepped (no copy), shaped as the fused layers return a state."""
        return self.h if self.c is None else (self.h, self.c)

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only these rows of the state, in this order (the rest are dropped)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.h.device)
        self._bind_state(select_rows(self._rows(), index))

    def append_rows(self, state: State) -> None:
        """Add the rows of `state` (shaped as the fused layers return it) after the others."""
        self._bind_state(cat_states([self._rows(), map_state(Tensor.float, state)]))

    def row_state(self, row: int) -> State:
        """A copy of one row's state, as a batch of one shaped as the fused layers return it."""
        return map_state(Tensor.clone, select_rows(self._rows(), slice(row, row + 1)))


@functools.cache
def _compiled_kernels() -> ModuleType | None:
    """model/kernels.py, or None without numba."""
    try:
        from charrnn.model import kernels
    except ImportError:
        return None
    return kernels


def _kernels_for(device: torch.device) -> ModuleType | None:
    """The compiled kernels where they serve (the CPU) and numba is installed."""
    return _compiled_kernels() if device.type == "cpu" else None


def load_kernels(model: CharRNN) -> bool:
    """Load the compiled kernels now where they serve `model` (on the CPU): a `Stepper` loads
    them anyway; this lets a long-lived process pay their ~0.5 s at its start. False where they
    cannot serve it or numba is not installed."""
    return _kernels_for(model.head.weight.device) is not None


class _KernelWeights:
    """A `Stepper`'s matrices as model/kernels.py reads them: one output a row (torch's own
    layout), a copy in C order, since the kernels read each row from start to end. A part the
    cell lacks (a single layer's upper matrices, a minGRU's recurrent ones) is a small zero
    array of the same shape's rank.

    When every matrix holds bfloat16 values (a model exported with `--dtype bfloat16`), they are
    kept as their 16 bits: a one-stream step reads half the bytes for the same numbers."""

    def __init__(self, stepper: Stepper) -> None:
        def rows(matrices: list[Tensor], width: int) -> np.ndarray:
            if not matrices:
                return np.zeros((1, 1, width), np.float32)
            return np.ascontiguousarray(np.stack([m.numpy().T for m in matrices]))

        def biases(vectors: list[Tensor], width: int) -> np.ndarray:
            if not vectors:
                return np.zeros((1, width), np.float32)
            return np.ascontiguousarray(np.stack([v.reshape(-1).numpy() for v in vectors]))

        recurrent = stepper.cell != "mingru"
        hidden = stepper._hidden
        self.cell = _CELL_CODES[stepper.cell] + (1 if stepper.relu else 0)
        self.table = np.ascontiguousarray(stepper.input_table.numpy())
        self.hidden_bias = biases(list(stepper.hidden_bias.unbind(0)) if recurrent else [], hidden)
        self.input_bias = biases(stepper.input_biases, hidden)
        matrices = [
            rows(list(stepper.hidden_weight.unbind(0)) if recurrent else [], hidden),
            rows(stepper.input_weights, hidden),
            np.ascontiguousarray(stepper.head_weight.numpy().T),
        ]
        self.bfloat16 = all(_bfloat16_values(matrix) for matrix in matrices)
        if self.bfloat16:
            matrices = [(matrix.view(np.uint32) >> 16).astype(np.uint16) for matrix in matrices]
        self.hidden_weight, self.input_weight, self.head = matrices


# model/kernels.py's cell codes (an RNN with relu is the next code after tanh).
_CELL_CODES = {"lstm": 0, "gru": 1, "rnn": 2, "mingru": 4}


def _bfloat16_values(matrix: np.ndarray) -> bool:
    """Whether every float32 of `matrix` is a bfloat16 value (its lower 16 bits are zero)."""
    return not np.any(matrix.view(np.uint32) & np.uint32(0xFFFF))


class _Compiled:
    """A CPU `Stepper`'s step and draw through model/kernels.py, for any number of rows: the
    state and the scratch are views of the stepper's buffers, the matrices its
    `_KernelWeights`. Each row's sums are one loop whatever the rows, so a stream steps and
    draws to the same bits alone and in a batch."""

    def __init__(self, stepper: Stepper, weights: _KernelWeights, kernels: ModuleType) -> None:
        self.kernels, self.cell = kernels, weights.cell
        self.h = stepper.h.numpy()  # views (layers, rows, hidden)
        self.c = self.h if stepper.c is None else stepper.c.numpy()
        self.top = self.h[-1]
        self.head_rows = weights.head
        rows = self.h.shape[1]
        self.logits = np.empty((rows, self.head_rows.shape[0]), dtype=np.float32)
        self.drawn = np.empty(rows, dtype=np.int64)
        # The model and state `advance` steps, as one tuple, made once (all views/buffers).
        self.model = (
            weights.table, weights.hidden_weight, weights.hidden_bias, weights.input_weight,
            weights.input_bias, self.h, self.c, stepper.gates.numpy(),
            stepper.from_input.numpy(),
        )  # fmt: skip
        self._threads_applied: tuple[int, int] | None = None  # (thread, count) `_split` set
        self._split_now = False

    def _split(self) -> bool:
        """Whether this call's large products are shared among torch's threads (the command's
        --threads): where there are two or more, they read the weights that much faster.
        numba's count is per calling thread and costs ~4 us to set, so it is set again only
        when the thread or torch's count changed since the last call, not every character."""
        applied = (threading.get_ident(), torch.get_num_threads())
        if applied != self._threads_applied:
            self._split_now = bool(self.kernels.use_threads(applied[1]))
            self._threads_applied = applied
        return self._split_now

    def advance(self, ids: Tensor) -> None:
        """Feed `ids` (one per row); the stepper's h and c change in place."""
        self.kernels.advance(self.cell, ids.numpy(), self.model, self._split())

    def draw(self, scales: np.ndarray, extras: Tensor) -> tuple[Tensor, Tensor]:
        """The next id of every row, the argmax of (top * scale) @ head_weight + extra
        (generation/streams.py's draw), and the logits it took it from (a buffer the next call
        overwrites). `scales` (rows,) float32, `extras` (rows, vocab)."""
        self.kernels.draw(self.top, scales, self.head_rows, extras.numpy(), self.logits, self.drawn)
        return torch.from_numpy(self.drawn.copy()), torch.from_numpy(self.logits)

    def sample(self, symbol: int, scale: np.ndarray, extras: Tensor) -> list[int]:
        """One row only: feed `symbol`, then draw and feed one symbol per row of `extras` (the
        last drawn is not fed): `advance` and `draw` in turn, in one compiled call. Returns the
        symbols."""
        drawn = np.empty(extras.shape[0], dtype=np.int64)
        symbols = np.array([symbol], dtype=np.int64)
        self.kernels.sample(
            self.cell, symbols, self.model, scale, self.head_rows, extras.numpy(), self.logits,
            drawn, self._split(),
        )  # fmt: skip
        return drawn.tolist()


# ----------------------------------------------------------------------------- recurrent state
# An LSTM's state is the pair (h, c), the other cells' is h alone, each (layers, batch, hidden).
# These take either form (a state saved for resuming may hold a list) and act on every tensor,
# so no caller needs to ask which cell made it.


def map_state(fn: Callable[[Tensor], Tensor], state: State | Sequence[Tensor]) -> State:
    """`fn` applied to each tensor of `state`; a pair (or a saved list) comes back a tuple."""
    if isinstance(state, tuple | list):
        return tuple(fn(part) for part in state)
    return fn(state)


def detach_state(state: State) -> State:
    """Cut the graph at a window boundary (truncated BPTT)."""
    return map_state(Tensor.detach, state)


def select_rows(state: State, rows: slice | Tensor) -> State:
    """The streams (batch rows) `rows` of `state`."""
    return map_state(lambda part: part[:, rows], state)


def repeat_rows(state: State, count: int) -> State:
    """A batch-1 state as `count` identical rows (a new tensor: the layers want it contiguous)."""
    return map_state(lambda part: part.repeat(1, count, 1), state)


def cat_states(states: Sequence[State], dim: int = 1) -> State:
    """States joined tensor by tensor along `dim` (1: streams; 0: layers)."""
    if isinstance(states[0], tuple | list):
        return tuple(torch.cat(parts, dim=dim) for parts in zip(*states, strict=True))
    return torch.cat(states, dim=dim)


def state_parts(state: State) -> list[Tensor]:
    """The tensors of `state` as a list: [h, c] or [h]."""
    return list(state) if isinstance(state, tuple | list) else [state]


def state_from_parts(parts: Sequence[Tensor]) -> State:
    """The state whose `state_parts` are `parts`."""
    return (parts[0], parts[1]) if len(parts) == 2 else parts[0]

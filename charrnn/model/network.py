"""The network: embedding -> stacked RNN/LSTM/GRU -> linear to the vocabulary.

Training uses PyTorch's fused recurrent layers. Generation uses `Stepper`, which writes the cell
equations out with the model's own weights: at batch size 1 the fused layers' per-call overhead
dominates, and one step of hand-written equations is several times cheaper. The tests check the
two against each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from charrnn.config import ModelConfig

# An LSTM's state is (h, c); a GRU's or RNN's is h. Each has shape (layers, batch, hidden).
State = Tensor | tuple[Tensor, Tensor]

_RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


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


def _layer_weights(rnn: nn.RNNBase, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (
        getattr(rnn, f"weight_ih_l{layer}"),
        getattr(rnn, f"weight_hh_l{layer}"),
        getattr(rnn, f"bias_ih_l{layer}"),
        getattr(rnn, f"bias_hh_l{layer}"),
    )


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
      sigmoid covers all four gates: tanh(x) = 2 sigmoid(2x) - 1.
    The output layer is `head_weight` (hidden, vocab) and `head_bias`: `step` applies it, and a
    sampler may fold temperature and noise into it and call `advance` instead.
    """

    def __init__(self, model: CharRNN, state: State) -> None:
        config = model.config
        self.cell, self.layers = config.cell, config.layers
        self.relu = config.nonlinearity == "relu"
        with torch.no_grad():
            weights = [self._layer(model, layer) for layer in range(config.layers)]
            fold = self.cell != "gru"  # the GRU's candidate needs the hidden bias on its own
            self.hidden_weight = torch.stack([w_hh.t() for _, w_hh, _, _ in weights]).contiguous()
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
            h, c = state if isinstance(state, tuple) else (state, None)
            self.h = h.detach().float().clone()  # (layers, batch, hidden)
            self.c = None if c is None else c.detach().float().clone()
        batch, width = self.h.shape[1], self.hidden_weight.shape[-1]
        self.gates = self.h.new_empty(self.layers, batch, width)
        self.from_input = self.h.new_empty(self.layers, batch, width)  # GRU only
        self.scratch = torch.empty_like(self.h[0])
        self._h, self._gates = self.h.unbind(0), self.gates.unbind(0)
        self._c = None if self.c is None else self.c.unbind(0)
        self._from_input = self.from_input.unbind(0)
        self._split = [gates.view(batch, -1, config.hidden).unbind(1) for gates in self._gates]
        # GRU: the reset and update gates together, and the candidate, of both parts.
        self._rz = [gates[:, : 2 * config.hidden] for gates in self._gates]
        self._rz_input = [part[:, : 2 * config.hidden] for part in self._from_input]
        self._n_input = [part[:, 2 * config.hidden :] for part in self._from_input]

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
        return self.h.clone() if self.c is None else (self.h.clone(), self.c.clone())

    @property
    def top(self) -> Tensor:
        """The top layer's output (batch, hidden) after the last symbol fed; updated in place."""
        return self._h[-1]

    def step(self, ids: Tensor) -> Tensor:
        """Feed `ids` (batch,) and return the logits (batch, vocab) of what comes next."""
        return torch.addmm(self.head_bias, self.advance(ids), self.head_weight)

    def advance(self, ids: Tensor) -> Tensor:
        """Feed `ids` (batch,) and return `top`, a view that the next call overwrites."""
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

    def _gru(self, layer: int, ids: Tensor) -> None:
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
        reset, update, candidate = self._split[layer]
        self._rz[layer].add_(self._rz_input[layer]).sigmoid_()
        candidate.mul_(reset).add_(self._n_input[layer]).tanh_()
        # h' = (1 - z) n + z h = n + z (h - n)
        self._h[layer].sub_(candidate).mul_(update).add_(candidate)


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

"""The network: embedding -> stacked RNN/LSTM/GRU -> linear to the vocabulary.

Training uses PyTorch's fused recurrent layers. Generation uses `Stepper`, which writes the cell
equations out with the model's own weights: at batch size 1 the fused layers' per-call overhead
dominates, and one step of hand-written equations is several times cheaper. The tests check the
two against each other.
"""

from __future__ import annotations

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

    def start_logits(self, batch_size: int) -> Tensor:
        """The model's prediction from an all-zero state, used to draw a first character."""
        zeros = torch.zeros(batch_size, self.config.hidden, device=self.head.weight.device)
        return self.head(zeros)

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


def detach_state(state: State) -> State:
    """Cut the graph at a window boundary (truncated BPTT)."""
    if isinstance(state, tuple):
        return (state[0].detach(), state[1].detach())
    return state.detach()


def select_streams(state: State, keep: Tensor) -> State:
    """The state of the streams picked by index tensor `keep`."""
    if isinstance(state, tuple):
        return (state[0][:, keep], state[1][:, keep])
    return state[:, keep]


def _layer_weights(rnn: nn.RNNBase, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (
        getattr(rnn, f"weight_ih_l{layer}"),
        getattr(rnn, f"weight_hh_l{layer}"),
        getattr(rnn, f"bias_ih_l{layer}"),
        getattr(rnn, f"bias_hh_l{layer}"),
    )


class Stepper:
    """One recurrent step at a time with the model's weights, for fast generation.

    Precomputes the first layer's input projection for every symbol (a table lookup replaces
    the embedding and a matrix product) and stores each weight transposed. For the LSTM the
    gates are reordered (i, f, o, g) and the candidate's rows doubled, so that one sigmoid
    covers all four gates: tanh(x) = 2 sigmoid(2x) - 1. Fewer, larger operations matter here:
    at batch size 1 each one costs more in dispatch than in arithmetic.
    """

    def __init__(self, model: CharRNN) -> None:
        config = model.config
        self.cell, self.hidden, self.layers = config.cell, config.hidden, config.layers
        self.activation = torch.relu if config.nonlinearity == "relu" else torch.tanh
        hidden = config.hidden
        order = (
            torch.cat(
                [
                    torch.arange(0, 2 * hidden),
                    torch.arange(3 * hidden, 4 * hidden),
                    torch.arange(2 * hidden, 3 * hidden),
                ]
            )
            if self.cell == "lstm"
            else None
        )
        with torch.no_grad():
            embedded = model.embed.weight.float()
            self.weights: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
            for layer in range(config.layers):
                w_ih, w_hh, b_ih, b_hh = (
                    t.detach().float() for t in _layer_weights(model.rnn, layer)
                )
                if order is not None:
                    scale = torch.ones(4 * hidden, 1)
                    scale[3 * hidden :] = 2.0
                    w_ih, w_hh = w_ih[order] * scale, w_hh[order] * scale
                    b_ih, b_hh = b_ih[order] * scale[:, 0], b_hh[order] * scale[:, 0]
                self.weights.append(self._pack(layer, w_ih, w_hh, b_ih, b_hh, embedded))
            self.head_weight = model.head.weight.detach().float().t().contiguous()
            self.head_bias = model.head.bias.detach().float().clone()

    def _pack(
        self, layer: int, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor, embedded: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-layer tensors: (input weight or table, hidden weight, input bias, hidden bias)."""
        if self.cell == "gru":
            # The GRU's candidate gate needs the hidden part separately: keep biases apart.
            first = embedded @ w_ih.t() + b_ih if layer == 0 else w_ih.t().contiguous()
            return first, w_hh.t().contiguous(), b_ih.clone(), b_hh.clone()
        bias = b_ih + b_hh
        if layer == 0:
            return embedded @ w_ih.t() + bias, w_hh.t().contiguous(), bias, bias
        stacked = torch.cat([w_ih, w_hh], dim=1).t().contiguous()
        return stacked, stacked, bias, bias

    def begin(self, state: State) -> list[Tensor]:
        """The state as a flat list [h_0 .. h_L-1] (then [c_0 .. c_L-1] for the LSTM)."""
        if isinstance(state, tuple):
            return list(state[0].unbind(0)) + list(state[1].unbind(0))
        return list(state.unbind(0))

    def finish(self, flat: list[Tensor]) -> State:
        """The flat list of `begin` back in the model's (layers, batch, hidden) form."""
        if self.cell == "lstm":
            return (torch.stack(flat[: self.layers]), torch.stack(flat[self.layers :]))
        return torch.stack(flat)

    def advance(self, ids: Tensor, flat: list[Tensor]) -> Tensor:
        """Feed `ids` (B,), updating the flat state in place; returns logits (B, V)."""
        layers = self.layers
        below = ids
        for layer, (first, w_hh, b_ih, b_hh) in enumerate(self.weights):
            h = flat[layer]
            if self.cell == "gru":
                below = self._gru(layer, below, h, first, w_hh, b_ih, b_hh)
            else:
                if layer == 0:
                    gates = torch.addmm(first.index_select(0, below), h, w_hh)
                else:
                    gates = torch.addmm(b_ih, torch.cat([below, h], dim=1), first)
                if self.cell == "lstm":
                    below, flat[layers + layer] = self._lstm(gates, flat[layers + layer])
                else:
                    below = self.activation(gates)
            flat[layer] = below
        return torch.addmm(self.head_bias, below, self.head_weight)

    def step(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """Logits (B, V) after feeding `ids` (B,) from `state`; returns the new state."""
        flat = self.begin(state)
        logits = self.advance(ids, flat)
        return logits, self.finish(flat)

    def _lstm(self, gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        inputs, forget, output, half = torch.sigmoid(gates).view(-1, 4, self.hidden).unbind(1)
        # c' = f c + i g with g = 2 sigmoid(2x) - 1 = 2 half - 1 (rows doubled in __init__)
        c = torch.addcmul(forget * c - inputs, inputs, half, value=2.0)
        return output * torch.tanh(c), c

    def _gru(
        self,
        layer: int,
        below: Tensor,
        h: Tensor,
        first: Tensor,
        w_hh: Tensor,
        b_ih: Tensor,
        b_hh: Tensor,
    ) -> Tensor:
        hidden = self.hidden
        if layer == 0:
            from_input = first.index_select(0, below)  # layer 0: `below` holds the ids
        else:
            from_input = torch.addmm(b_ih, below, first)
        from_hidden = torch.addmm(b_hh, h, w_hh)
        reset_update = torch.sigmoid(from_input[:, : 2 * hidden] + from_hidden[:, : 2 * hidden])
        candidate = torch.tanh(
            torch.addcmul(
                from_input[:, 2 * hidden :], reset_update[:, :hidden], from_hidden[:, 2 * hidden :]
            )
        )
        update = reset_update[:, hidden:]
        return torch.addcmul(candidate, update, h - candidate)

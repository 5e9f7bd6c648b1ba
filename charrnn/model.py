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
    - the hidden-to-hidden products of all layers are one batched call (each depends only on
      the previous state);
    - the first layer's input projection is a table lookup per symbol (embedding x W_ih);
    - for the LSTM the gates are reordered (i, f, o, g) and the candidate's rows doubled, so one
      sigmoid covers all four gates: tanh(x) = 2 sigmoid(2x) - 1.
    """

    def __init__(self, model: CharRNN) -> None:
        config = model.config
        self.cell, self.hidden, self.layers = config.cell, config.hidden, config.layers
        self.activation = torch.relu if config.nonlinearity == "relu" else torch.tanh
        with torch.no_grad():
            layers = [self._layer(model, layer) for layer in range(config.layers)]
            fold = self.cell != "gru"  # the GRU's candidate needs the hidden bias on its own
            self.hidden_weight = torch.stack([w_hh.t() for _, w_hh, _, _ in layers]).contiguous()
            self.hidden_bias = torch.stack(
                [(b_hh + b_ih if fold else b_hh).unsqueeze(0) for _, _, b_ih, b_hh in layers]
            )
            w_ih0, _, b_ih0, _ = layers[0]
            table = model.embed.weight.detach().float() @ w_ih0.t()
            self.input_table = table if fold else table + b_ih0
            self.input_weights = [w_ih.t().contiguous() for w_ih, _, _, _ in layers[1:]]
            self.input_biases = [None if fold else b_ih for _, _, b_ih, _ in layers[1:]]
            self.head_weight = model.head.weight.detach().float().t().contiguous()
            self.head_bias = model.head.bias.detach().float().clone()

    def _layer(self, model: CharRNN, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(w_ih, w_hh, b_ih, b_hh) of one layer in fp32, LSTM gates reordered and scaled."""
        w_ih, w_hh, b_ih, b_hh = (t.detach().float() for t in _layer_weights(model.rnn, layer))
        if self.cell != "lstm":
            return w_ih, w_hh, b_ih, b_hh
        hidden = self.hidden
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

    def step(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """Logits (B, V) after feeding `ids` (B,) from `state`; returns the new state."""
        h_all, c_all = state if isinstance(state, tuple) else (state, None)
        from_hidden = torch.baddbmm(self.hidden_bias, h_all, self.hidden_weight).unbind(0)
        new_h, new_c = [], []
        below = ids
        for layer in range(self.layers):
            hidden_part = from_hidden[layer]
            if self.cell == "gru":
                if layer == 0:
                    from_input = self.input_table.index_select(0, ids)
                else:
                    weight, bias = self.input_weights[layer - 1], self.input_biases[layer - 1]
                    from_input = torch.addmm(bias, below, weight)
                below = self._gru(from_input, hidden_part, h_all[layer])
            else:
                if layer == 0:
                    gates = self.input_table.index_select(0, ids) + hidden_part
                else:
                    gates = torch.addmm(hidden_part, below, self.input_weights[layer - 1])
                if c_all is not None:
                    below, c = self._lstm(gates, c_all[layer])
                    new_c.append(c)
                else:
                    below = self.activation(gates)
            new_h.append(below)
        logits = torch.addmm(self.head_bias, below, self.head_weight)
        h_next = torch.stack(new_h)
        return logits, ((h_next, torch.stack(new_c)) if c_all is not None else h_next)

    def _lstm(self, gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        inputs, forget, output, half = torch.sigmoid(gates).view(-1, 4, self.hidden).unbind(1)
        # c' = f c + i g with g = 2 sigmoid(2x) - 1 = 2 half - 1 (rows doubled in _layer)
        c = torch.addcmul(forget * c - inputs, inputs, half, value=2.0)
        return output * torch.tanh(c), c

    def _gru(self, from_input: Tensor, from_hidden: Tensor, h: Tensor) -> Tensor:
        hidden = self.hidden
        reset_update = torch.sigmoid(from_input[:, : 2 * hidden] + from_hidden[:, : 2 * hidden])
        candidate = torch.tanh(
            torch.addcmul(
                from_input[:, 2 * hidden :], reset_update[:, :hidden], from_hidden[:, 2 * hidden :]
            )
        )
        update = reset_update[:, hidden:]
        return torch.addcmul(candidate, update, h - candidate)

"""Compiled kernels (numba) for one stream of an LSTM: a step and a draw in two calls.

At one stream a step is three matrix-vector products that stream the weights from memory and
~20 tiny operations whose dispatch costs more than their arithmetic (model/network.py's
`Stepper`). Here the whole step is one compiled call and the draw (the output layer, the
temperature, the noise and the argmax) another. The cell is the one `Stepper` steps: gates
reordered (i, f, o, g) with the candidate's rows doubled, so g = 2 sigmoid(2x) - 1.

Imported only where numba is installed (the `fast` extra) and a generation is long enough to
repay loading it (about half a second); the products sum in another order than torch's, so the
numbers differ from the torch path by about 1e-7 (tests/test_model.py compares them).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# The products may sum in any order and fuse multiply-adds; nothing else is relaxed.
_SUMS = {"reassoc", "contract"}


@njit(cache=True, boundscheck=False, fastmath=_SUMS)
def add_product(x: np.ndarray, weight: np.ndarray, out: np.ndarray) -> None:
    """out += x @ weight (rows, width), four rows of weight per pass over out."""
    rows, width = weight.shape
    whole = rows - rows % 4
    for i in range(0, whole, 4):
        a0, a1, a2, a3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        w0, w1, w2, w3 = weight[i], weight[i + 1], weight[i + 2], weight[i + 3]
        for j in range(width):
            out[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j]
    for i in range(whole, rows):
        a, w = x[i], weight[i]
        for j in range(width):
            out[j] += a * w[j]


@njit(cache=True, boundscheck=False)
def lstm_cell(gates: np.ndarray, h: np.ndarray, c: np.ndarray) -> None:
    """c' = f c + i g, h' = o tanh(c') from the pre-activations (i, f, o, 2g) in `gates`."""
    hidden, one, two = h.shape[0], np.float32(1.0), np.float32(2.0)  # float32 throughout
    for k in range(hidden):
        input_gate = one / (one + math.exp(-gates[k]))
        forget = one / (one + math.exp(-gates[hidden + k]))
        output = one / (one + math.exp(-gates[2 * hidden + k]))
        half = one / (one + math.exp(-gates[3 * hidden + k]))
        c[k] = forget * c[k] - input_gate + two * input_gate * half
        h[k] = output * math.tanh(c[k])


@njit(cache=True, boundscheck=False)
def lstm_advance(
    symbol: int,
    table: np.ndarray,
    hidden_weight: np.ndarray,
    hidden_bias: np.ndarray,
    input_weight: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    gates: np.ndarray,
) -> None:
    """Feed `symbol` to every layer; h and c (layers, hidden) are updated in place.

    `table` (vocab, 4H): the first layer's input projection per symbol; `hidden_weight`
    (layers, H, 4H) with `hidden_bias` (layers, 4H), both biases; `input_weight` (layers - 1,
    H, 4H) for the layers above the first; `gates` (layers, 4H) is scratch."""
    for layer in range(h.shape[0]):
        pre = gates[layer]
        pre[:] = hidden_bias[layer]
        if layer == 0:
            pre += table[symbol]
        else:
            add_product(h[layer - 1], input_weight[layer - 1], pre)
        add_product(h[layer], hidden_weight[layer], pre)
        lstm_cell(pre, h[layer], c[layer])


@njit(cache=True, boundscheck=False, fastmath=_SUMS)
def draw(
    top: np.ndarray, scale: float, head_weight: np.ndarray, extra: np.ndarray, logits: np.ndarray
) -> int:
    """argmax of (top * scale) @ head_weight + extra: the next symbol, with the noise and the
    bias at this temperature in `extra` (as generation/streams.py draws); `logits` is scratch."""
    logits[:] = extra
    hidden, vocab = head_weight.shape
    scale32 = np.float32(scale)
    for i in range(hidden):
        a, w = top[i] * scale32, head_weight[i]
        for j in range(vocab):
            logits[j] += a * w[j]
    return np.argmax(logits)

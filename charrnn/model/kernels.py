"""Compiled kernels (numba) for one stream of an LSTM: a step, a draw, and runs of both.

At one stream a step is three matrix-vector products that stream the weights from memory and
~20 tiny operations whose dispatch costs more than their arithmetic (model/network.py's
`Stepper`). Here the whole step is one compiled call and the draw (the output layer, the
temperature, the noise and the argmax) another; `lstm_sample` does both for a run of characters
without coming back to Python. The cell is the one `Stepper` steps: gates reordered (i, f, o, g)
with the candidate's rows doubled, so g = 2 sigmoid(2x) - 1; its exponentials are `exp32`, a
polynomial the compiler vectorises, where `math.exp` is one call per number.

Imported only where numba is installed (the `fast` extra) and a generation is long enough to
repay loading it (about half a second); the products sum in another order than torch's and the
exponential is another, so the numbers differ from the torch path by a few 1e-7
(tests/test_model.py compares them)."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# The products may sum in any order and fuse multiply-adds; nothing else is relaxed.
_SUMS = {"reassoc", "contract"}
_F = np.float32


@intrinsic
def _float_from_bits(typingctx, bits):  # noqa: ARG001 (numba's signature)
    """The float32 whose bits are the int32 `bits` (a reinterpretation, not a conversion)."""

    def codegen(context, builder, signature, args):  # noqa: ARG001
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always", error_model="numpy")
def exp32(x: float) -> float:
    """e**x in float32 within ~2 ulp, in operations a loop vectorises (math.exp is a call).

    x = n ln2 + r with |r| <= ln2 / 2; e**r by Cephes' minimax polynomial, 2**n by writing n
    into the exponent's bits. x is first held to [-87, 88], where e**x stays a normal float32:
    beyond it a sigmoid or tanh is 0 or 1 to float32 precision anyway."""
    x = min(max(x, _F(-87.0)), _F(88.0))
    n = np.floor(x * _F(1.44269504088896341) + _F(0.5))
    r = x - n * _F(0.693359375) + n * _F(2.12194440e-4)  # ln2 in two parts: r stays exact
    p = _F(1.9875691500e-4)
    p = p * r + _F(1.3981999507e-3)
    p = p * r + _F(8.3334519073e-3)
    p = p * r + _F(4.1665795894e-2)
    p = p * r + _F(1.6666665459e-1)
    p = p * r + _F(5.0000001201e-1)
    p = p * r * r + r + _F(1.0)
    return p * _float_from_bits((np.int32(n) + np.int32(127)) << 23)


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


# error_model "numpy": a division by zero gives inf, not an exception to check for, which is
# what lets the loop run eight or sixteen units at a time (10x here).
@njit(cache=True, boundscheck=False, error_model="numpy", fastmath={"contract"})
def lstm_cell(gates: np.ndarray, h: np.ndarray, c: np.ndarray) -> None:
    """c' = f c + i g, h' = o tanh(c') from the pre-activations (i, f, o, 2g) in `gates`,
    with tanh(c') = 1 - 2 / (1 + e**2c')."""
    hidden, one, two = h.shape[0], _F(1.0), _F(2.0)  # float32 throughout
    for k in range(hidden):
        input_gate = one / (one + exp32(-gates[k]))
        forget = one / (one + exp32(-gates[hidden + k]))
        output = one / (one + exp32(-gates[2 * hidden + k]))
        half = one / (one + exp32(-gates[3 * hidden + k]))
        cell = forget * c[k] - input_gate + two * input_gate * half
        c[k] = cell
        h[k] = output * (one - two / (one + exp32(two * cell)))


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


@njit(cache=True, boundscheck=False)
def lstm_sample(
    symbol: int,
    table: np.ndarray,
    hidden_weight: np.ndarray,
    hidden_bias: np.ndarray,
    input_weight: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    gates: np.ndarray,
    scale: float,
    head_weight: np.ndarray,
    extras: np.ndarray,
    logits: np.ndarray,
    drawn: np.ndarray,
) -> None:
    """One stream's next `len(extras)` symbols into `drawn`: feed `symbol`, draw with row t of
    `extras` (`draw`'s extra), feed that, and so on; the last symbol drawn is not fed. The same
    calls as `lstm_advance` then `draw` once per symbol, without returning to Python between."""
    top = h.shape[0] - 1
    for t in range(extras.shape[0]):
        lstm_advance(symbol, table, hidden_weight, hidden_bias, input_weight, h, c, gates)
        symbol = draw(h[top], scale, head_weight, extras[t], logits)
        drawn[t] = symbol

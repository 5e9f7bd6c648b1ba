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
import torch
from llvmlite import ir
from numba import config, njit, prange, set_num_threads, types
from numba.extending import intrinsic, overload

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


def weight_value(weight):  # noqa: ANN001, ANN201 (numba's overload below)
    """A stored weight as float32: itself, or a bfloat16's 16 bits (uint16) widened."""


@overload(weight_value, inline="always")
def _weight_value(weight):  # noqa: ANN001, ANN202
    if isinstance(weight, types.Float):
        return lambda weight: weight
    if weight == types.uint16:  # bfloat16 is float32's upper half: shift it back in place
        return lambda weight: _float_from_bits(np.int32(weight) << 16)
    return None


@njit(inline="always", boundscheck=False, fastmath=_SUMS)
def row_dot(row: np.ndarray, x: np.ndarray) -> float:
    """row . x, the row read once from start to end; `row` is float32, or uint16 holding
    bfloat16 values (half the bytes to read, the same arithmetic)."""
    total = _F(0.0)
    for i in range(row.shape[0]):
        total += weight_value(row[i]) * x[i]
    return total


@njit(cache=True, boundscheck=False, fastmath=_SUMS)
def add_row_products(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out += weight @ x: one dot product per row of `weight` (rows, width) (7-10% faster at
    512 units than adding x[i] times row i of the transpose, which reads and writes `out` once
    per pass)."""
    for j in range(weight.shape[0]):
        out[j] += row_dot(weight[j], x)


@njit(cache=True, boundscheck=False, fastmath=_SUMS, parallel=True)
def add_row_products_split(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """`add_row_products` with the rows shared among numba's threads (`use_threads`): each row's
    sum is the same loop, so the numbers are the same to the bit. One core streams the weights
    at its own bandwidth; two read a 2 x 512's 12.6 MB about twice as fast."""
    for j in prange(weight.shape[0]):
        out[j] += row_dot(weight[j], x)


# Below this many weights a product is not split: waking the other threads costs ~5-10 us,
# more than they save (measured, benchmarks/RESULTS.md: 2 threads, 1024 x 256 is 1.5x faster
# split, 512 x 128 0.9x).
SPLIT_MIN_WEIGHTS = 1 << 18


@njit(inline="always")
def add_products(weight: np.ndarray, x: np.ndarray, out: np.ndarray, split: bool) -> None:
    """out += weight @ x, split among the threads when `split` and the matrix is large."""
    if split and weight.size >= SPLIT_MIN_WEIGHTS:
        add_row_products_split(weight, x, out)
    else:
        add_row_products(weight, x, out)


def use_threads(count: int) -> bool:
    """Let the split products use `count` threads (at most numba's pool); True when that is
    more than one, so that splitting can pay. Starting numba's pool (the first call) sets the
    process's OpenMP thread count, which torch shares, to the pool's size: torch's own count
    (the command's --threads) is put back."""
    torch_threads = torch.get_num_threads()
    count = max(1, min(count, config.NUMBA_NUM_THREADS))
    set_num_threads(count)
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    return count > 1


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
def lstm_advance(symbol: int, model: tuple, split: bool) -> None:
    """Feed `symbol` to every layer; the state in `model` is updated in place.

    `model` is (table, first_weight, upper_weight, bias, h, c, gates, inputs): `table` (vocab,
    4H), the first layer's input projection per symbol; `first_weight` (4H, H), its recurrent
    matrix; `upper_weight` (layers - 1, 4H, 2H), each layer above's input and recurrent
    matrices side by side, which multiply [h below, own h]; `bias` (layers, 4H), both biases;
    h and c (layers, H), the state; `gates` (layers, 4H) and `inputs` (2H), scratch. `split`:
    the large products are shared among the threads (`add_products`)."""
    table, first_weight, upper_weight, bias, h, c, gates, inputs = model
    hidden = h.shape[1]
    for layer in range(h.shape[0]):
        pre = gates[layer]
        pre[:] = bias[layer]
        if layer == 0:
            pre += table[symbol]
            add_products(first_weight, h[0], pre, split)
        else:
            inputs[:hidden] = h[layer - 1]
            inputs[hidden:] = h[layer]
            add_products(upper_weight[layer - 1], inputs, pre, split)
        lstm_cell(pre, h[layer], c[layer])


@njit(cache=True, boundscheck=False, fastmath=_SUMS)
def draw(
    top: np.ndarray, scale: float, head_rows: np.ndarray, extra: np.ndarray, logits: np.ndarray
) -> int:
    """argmax of (top * scale) @ head_rows.T + extra: the next symbol, with the noise and the
    bias at this temperature in `extra` (as generation/streams.py draws); `head_rows` (vocab,
    H) is the output layer's matrix as torch keeps it; `logits` is scratch."""
    logits[:] = 0.0
    add_row_products(head_rows, top, logits)
    scale32 = _F(scale)
    for j in range(logits.shape[0]):
        logits[j] = logits[j] * scale32 + extra[j]
    return np.argmax(logits)


@njit(cache=True, boundscheck=False)
def lstm_sample(
    symbol: int,
    model: tuple,
    scale: float,
    head_rows: np.ndarray,
    extras: np.ndarray,
    logits: np.ndarray,
    drawn: np.ndarray,
    split: bool,
) -> None:
    """One stream's next `len(extras)` symbols into `drawn`: feed `symbol`, draw with row t of
    `extras` (`draw`'s extra), feed that, and so on; the last symbol drawn is not fed. The same
    calls as `lstm_advance` then `draw` once per symbol, without returning to Python between."""
    h = model[4]
    top = h.shape[0] - 1
    for t in range(extras.shape[0]):
        lstm_advance(symbol, model, split)
        symbol = draw(h[top], scale, head_rows, extras[t], logits)
        drawn[t] = symbol

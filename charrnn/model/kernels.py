"""Compiled kernels (numba): a recurrent step of every cell for any number of streams, a draw,
and runs of both for a lone stream.

A step is a few matrix products that stream the weights from memory and ~20 tiny operations
whose dispatch in torch costs more than their arithmetic (model/network.py's `Stepper`). Here the
whole step is one compiled call and the draw (the output layer, the temperature, the noise and
the argmax) another; `sample` does both for a run of characters without coming back to Python.

A seed means one text: every sum of a stream's products is the same loop over one row (`dots8`
for the matrix's rows in whole blocks of eight, `row_dot` for the rest), whether the stream is
alone or one of many rows, split among threads or not, so a stream steps
and draws to the same bits on every path (torch's matrix product picks another kernel, with
another order of summing, from four rows up). The cells are the ones `Stepper` steps (an LSTM's
gates reordered (i, f, o, g) with the candidate's rows doubled, so g = 2 sigmoid(2x) - 1); their
exponentials are `exp32`, a polynomial the compiler vectorises, where `math.exp` is one call per
number. The numbers differ from torch's operations (a GPU, or no numba) by a few 1e-7
(tests/test_model.py compares them).

Imported only where numba is installed (the `fast` extra); loading costs about half a second
once per process."""

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


ROW_BLOCK = 8  # rows of a matrix summed together against one stream's vector (`dots8`)


@njit(inline="always", boundscheck=False, fastmath=_SUMS)
def dots8(weight: np.ndarray, j: int, x: np.ndarray) -> tuple:
    """Rows j..j+7 of `weight` . x in one pass over x: eight sums, each its own chain, read
    with x once (2x the products a second of `row_dot` one row at a time, at 32 rows of 1 x 256;
    measured, benchmarks/RESULTS.md)."""
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = _F(0.0)
    r0, r1, r2, r3 = weight[j], weight[j + 1], weight[j + 2], weight[j + 3]
    r4, r5, r6, r7 = weight[j + 4], weight[j + 5], weight[j + 6], weight[j + 7]
    for i in range(x.shape[0]):
        xi = x[i]
        t0 += weight_value(r0[i]) * xi
        t1 += weight_value(r1[i]) * xi
        t2 += weight_value(r2[i]) * xi
        t3 += weight_value(r3[i]) * xi
        t4 += weight_value(r4[i]) * xi
        t5 += weight_value(r5[i]) * xi
        t6 += weight_value(r6[i]) * xi
        t7 += weight_value(r7[i]) * xi
    return t0, t1, t2, t3, t4, t5, t6, t7


@njit(inline="always", boundscheck=False, fastmath=_SUMS)
def add_block_products(weight: np.ndarray, j: int, x: np.ndarray, out: np.ndarray) -> None:
    """out[:, j:j + 8] += x @ weight[j:j + 8].T, by `dots8` for each row of x."""
    for b in range(x.shape[0]):
        t0, t1, t2, t3, t4, t5, t6, t7 = dots8(weight, j, x[b])
        row = out[b]
        row[j] += t0
        row[j + 1] += t1
        row[j + 2] += t2
        row[j + 3] += t3
        row[j + 4] += t4
        row[j + 5] += t5
        row[j + 6] += t6
        row[j + 7] += t7


@njit(inline="always", boundscheck=False, fastmath=_SUMS)
def add_tail_products(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """The rows after the last whole block of `ROW_BLOCK`, one `row_dot` each. Which rows go
    which way depends on the matrix alone, so a stream's sums never depend on the other rows
    of x."""
    for j in range(weight.shape[0] - weight.shape[0] % ROW_BLOCK, weight.shape[0]):
        row = weight[j]
        for b in range(x.shape[0]):
            out[b, j] += row_dot(row, x[b])


@njit(cache=True, boundscheck=False, fastmath=_SUMS)
def add_row_products(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out += x @ weight.T for x (rows, width), out (rows, outputs), `ROW_BLOCK` rows of
    `weight` at a time, each sum the same loop whatever the number of rows of x, so a stream's
    sums are the same alone and in a batch. A block is read once for every row of x while it
    is in the cache."""
    for block in range(weight.shape[0] // ROW_BLOCK):
        add_block_products(weight, block * ROW_BLOCK, x, out)
    add_tail_products(weight, x, out)


@njit(cache=True, boundscheck=False, fastmath=_SUMS, parallel=True)
def add_row_products_split(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """`add_row_products` with the blocks of `weight`'s rows shared among numba's threads
    (`use_threads`): each sum is the same loop, so the numbers are the same to the bit. One
    core streams the weights at its own bandwidth; two read a 2 x 512's 12.6 MB about twice as
    fast."""
    for block in prange(weight.shape[0] // ROW_BLOCK):
        add_block_products(weight, block * ROW_BLOCK, x, out)
    add_tail_products(weight, x, out)


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


# The cells, as `cell` codes (model/network.py's `Stepper` passes them).
LSTM, GRU, RNN_TANH, RNN_RELU, MINGRU = 0, 1, 2, 3, 4


@njit(inline="always", error_model="numpy", fastmath={"contract"})
def sigmoid32(x: float) -> float:
    """1 / (1 + e**-x) in float32."""
    return _F(1.0) / (_F(1.0) + exp32(-x))


@njit(inline="always", error_model="numpy", fastmath={"contract"})
def tanh32(x: float) -> float:
    """tanh(x) = 1 - 2 / (1 + e**2x) in float32."""
    return _F(1.0) - _F(2.0) / (_F(1.0) + exp32(_F(2.0) * x))


# error_model "numpy": a division by zero gives inf, not an exception to check for, which is
# what lets the loops run eight or sixteen units at a time (10x here).
@njit(cache=True, boundscheck=False, error_model="numpy", fastmath={"contract"})
def lstm_cell(gates: np.ndarray, h: np.ndarray, c: np.ndarray) -> None:
    """c' = f c + i g, h' = o tanh(c') from the pre-activations (i, f, o, 2g) in `gates`."""
    hidden, one, two = h.shape[0], _F(1.0), _F(2.0)  # float32 throughout
    for k in range(hidden):
        input_gate = sigmoid32(gates[k])
        forget = sigmoid32(gates[hidden + k])
        output = sigmoid32(gates[2 * hidden + k])
        half = sigmoid32(gates[3 * hidden + k])
        cell = forget * c[k] - input_gate + two * input_gate * half
        c[k] = cell
        h[k] = output * (one - two / (one + exp32(two * cell)))


@njit(cache=True, boundscheck=False, error_model="numpy", fastmath={"contract"})
def gru_cell(hidden_part: np.ndarray, input_part: np.ndarray, h: np.ndarray) -> None:
    """r, z = sigmoid(hidden + input) of their rows; n = tanh(input_n + r hidden_n);
    h' = n + z (h - n). Each part holds the reset, update and candidate rows, biases added."""
    size = h.shape[0]
    for k in range(size):
        reset = sigmoid32(hidden_part[k] + input_part[k])
        update = sigmoid32(hidden_part[size + k] + input_part[size + k])
        candidate = tanh32(input_part[2 * size + k] + reset * hidden_part[2 * size + k])
        h[k] = candidate + update * (h[k] - candidate)


@njit(cache=True, boundscheck=False, error_model="numpy", fastmath={"contract"})
def simple_cell(cell: int, gates: np.ndarray, h: np.ndarray) -> None:
    """An RNN's h' = tanh(gates) or relu(gates); a minGRU's h' = h + z (c - h) from its
    input part (z, c), the update gate before its sigmoid."""
    size = h.shape[0]
    for k in range(size):
        if cell == RNN_TANH:
            h[k] = tanh32(gates[k])
        elif cell == RNN_RELU:
            h[k] = max(gates[k], _F(0.0))
        else:
            update = sigmoid32(gates[k])
            h[k] = h[k] + update * (gates[size + k] - h[k])


@njit(inline="always")
def fill_rows(out: np.ndarray, row: np.ndarray) -> None:
    """Every row of `out` (rows, width) set to `row`."""
    for b in range(out.shape[0]):
        out[b, :] = row


@njit(cache=True, boundscheck=False)
def advance(cell: int, symbols: np.ndarray, model: tuple, split: bool) -> None:
    """Feed `symbols` (one per row) to every layer; the state in `model` is updated in place.

    `model` is (table, hidden_weight, hidden_bias, input_weight, input_bias, h, c, gates,
    inputs): `table` (vocab, G), the first layer's input projection per symbol; `hidden_weight`
    (layers, G, H), the recurrent matrices; `hidden_bias` (layers, G); `input_weight`
    (layers - 1, G, H) and `input_bias` (layers - 1, G), the layers above the first; h and c
    (layers, rows, H), the state; `gates` and `inputs` (layers, rows, G), scratch. G is the
    gates' width (4H, 3H, H or 2H). An LSTM's and RNN's biases are all in `hidden_bias`, and
    their input part is added to the gates; a GRU keeps the two parts apart (`gru_cell`); a
    minGRU has only the input part. `split`: share the large products among the threads."""
    table, hidden_weight, hidden_bias, input_weight, input_bias, h, c, gates, inputs = model
    together = cell in (LSTM, RNN_TANH, RNN_RELU)
    rows = h.shape[1]
    for layer in range(h.shape[0]):
        pre = gates[layer]
        if cell != MINGRU:
            fill_rows(pre, hidden_bias[layer])
            add_products(hidden_weight[layer], h[layer], pre, split)
        part = pre if together else inputs[layer]
        if layer == 0:
            for b in range(rows):
                if together:
                    part[b] += table[symbols[b]]
                else:
                    part[b] = table[symbols[b]]
        else:
            if not together:
                fill_rows(part, input_bias[layer - 1])
            add_products(input_weight[layer - 1], h[layer - 1], part, split)
        for b in range(rows):
            if cell == LSTM:
                lstm_cell(pre[b], h[layer, b], c[layer, b])
            elif cell == GRU:
                gru_cell(pre[b], part[b], h[layer, b])
            else:
                simple_cell(cell, part[b], h[layer, b])


@njit(cache=True, boundscheck=False, fastmath=_SUMS)
def draw(
    top: np.ndarray, scales: np.ndarray, head_rows: np.ndarray, extras: np.ndarray,
    logits: np.ndarray, drawn: np.ndarray,
) -> None:  # fmt: skip
    """For each row b: logits[b] = (top[b] @ head_rows.T) * scales[b] + extras[b] and
    drawn[b] = its argmax, the next symbol, with the noise and the bias at this temperature in
    `extras` (as generation/streams.py draws); `head_rows` (vocab, H) is the output layer's
    matrix as torch keeps it."""
    logits[:] = 0.0
    add_row_products(head_rows, top, logits)
    for b in range(logits.shape[0]):
        scale = scales[b]
        row = logits[b]
        for j in range(row.shape[0]):
            row[j] = row[j] * scale + extras[b, j]
        drawn[b] = np.argmax(row)


@njit(cache=True, boundscheck=False)
def sample(
    cell: int,
    symbols: np.ndarray,
    model: tuple,
    scales: np.ndarray,
    head_rows: np.ndarray,
    extras: np.ndarray,
    logits: np.ndarray,
    drawn: np.ndarray,
    split: bool,
) -> None:
    """One stream's next `len(extras)` symbols into `drawn`: feed `symbols` (one), draw with
    row t of `extras` (`draw`'s extras), feed that, and so on; the last symbol drawn is not
    fed. The same calls as `advance` then `draw` once per symbol, without returning to Python
    between."""
    h = model[5]
    top = h.shape[0] - 1
    for t in range(extras.shape[0]):
        advance(cell, symbols, model, split)
        draw(h[top], scales, head_rows, extras[t : t + 1], logits, symbols)
        drawn[t] = symbols[0]

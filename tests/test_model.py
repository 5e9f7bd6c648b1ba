"""The network and its hand-written generation step (charrnn.model.network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.model.network import CharRNN, Stepper, detach_state

VOCAB = 11
CELLS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu"), ("mingru", "tanh")]
CELL_IDS = ["lstm", "gru", "rnn-tanh", "rnn-relu", "mingru"]


def make_model(cell: str, nonlinearity: str = "tanh", layers: int = 1, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    config = ModelConfig(cell=cell, nonlinearity=nonlinearity, layers=layers, hidden=24, embed=10)
    return CharRNN(config, VOCAB).eval()


def random_state(model: CharRNN, batch: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    shape = (model.config.layers, batch, model.config.hidden)
    if model.config.cell == "lstm":
        return (torch.randn(shape) * 0.5, torch.randn(shape) * 0.5)
    return torch.randn(shape) * 0.5


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(as_tuple(a), as_tuple(b), strict=True))


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_forward_shapes(cell, nonlinearity, layers):
    model = make_model(cell, nonlinearity, layers)
    ids = torch.randint(0, VOCAB, (3, 7))
    logits, state = model(ids)
    assert logits.shape == (3, 7, VOCAB)
    for part in as_tuple(state):
        assert part.shape == (layers, 3, 24)
    assert isinstance(state, tuple) == (cell == "lstm")
    assert (
        max_diff(model.initial_state(3), tuple(torch.zeros(p.shape) for p in as_tuple(state))) == 0
    )
    # A state passed back in continues the sequence: two halves equal the whole.
    first, middle = model(ids[:, :4])
    second, _ = model(ids[:, 4:], middle)
    assert torch.allclose(torch.cat([first, second], dim=1), logits, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_stepper_equals_the_fused_layers(cell, nonlinearity, layers, batch):
    model = make_model(cell, nonlinearity, layers, seed=layers * 10 + batch)
    steps = 9
    ids = torch.randint(0, VOCAB, (batch, steps))
    start = random_state(model, batch)
    stepper = Stepper(model, start)
    assert max_diff(stepper.state, start) == 0
    with torch.no_grad():
        whole_logits, whole_state = model(ids, start)
        fused_state = start
        for t in range(steps):
            fused_logits, fused_state = model(ids[:, t : t + 1], fused_state)
            stepped_logits = stepper.step(ids[:, t])
            assert stepped_logits.shape == (batch, VOCAB)
            assert (stepped_logits - fused_logits[:, 0]).abs().max().item() < 1e-5
            assert (stepped_logits - whole_logits[:, t]).abs().max().item() < 1e-5
            assert max_diff(stepper.state, fused_state) < 1e-5
            # `top` is the top layer's output, which the head turns into the logits.
            assert torch.equal(
                stepper.top, stepper.state[0][-1] if cell == "lstm" else stepper.state[-1]
            )
    assert max_diff(stepper.state, whole_state) < 1e-5


def test_stepper_leaves_the_state_it_was_given_alone():
    model = make_model("lstm", layers=2)
    start = random_state(model, 2)
    saved = tuple(part.clone() for part in start)
    stepper = Stepper(model, start)
    snapshot = stepper.state
    stepper.step(torch.tensor([1, 2]))
    assert max_diff(start, saved) == 0
    assert max_diff(snapshot, stepper.state) > 0  # `state` is a copy, not a live view


def test_stepper_sees_weights_after_training_changes_them():
    # The stepper copies weights at construction; a fresh one must follow updated weights.
    model = make_model("lstm")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3)
    ids = torch.tensor([1, 2])
    state = model.initial_state(2)
    logits = Stepper(model, state).step(ids)
    with torch.no_grad():
        expected, _ = model(ids[:, None], state)
    assert (logits - expected[:, 0]).abs().max().item() < 1e-5


def test_resize_vocab_keeps_old_rows_and_grows_the_rest():
    model = make_model("gru")
    old_embed = model.embed.weight.detach().clone()
    old_head = model.head.weight.detach().clone()
    old_bias = model.head.bias.detach().clone()
    model.resize_vocab(VOCAB + 4)
    assert model.vocab_size == VOCAB + 4
    assert model.embed.weight.shape == (VOCAB + 4, 10)
    assert model.head.weight.shape == (VOCAB + 4, 24)
    assert torch.equal(model.embed.weight[:VOCAB], old_embed)
    assert torch.equal(model.head.weight[:VOCAB], old_head)
    assert torch.equal(model.head.bias[:VOCAB], old_bias)
    logits, _ = model(torch.tensor([[VOCAB + 3, 0]]))
    assert logits.shape == (1, 2, VOCAB + 4)
    # Growing is the only direction: a smaller size changes nothing.
    model.resize_vocab(3)
    assert model.vocab_size == VOCAB + 4


def test_dropout_is_used_only_in_training_mode():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(layers=2, hidden=16, embed=8, dropout=0.5), VOCAB)
    ids = torch.randint(0, VOCAB, (2, 5))
    model.eval()
    assert torch.equal(model(ids)[0], model(ids)[0])
    model.train()
    assert not torch.equal(model(ids)[0], model(ids)[0])


def test_detach_state_cuts_the_graph_and_keeps_values():
    h = torch.randn(2, 4, 24, requires_grad=True)
    state = (h * 2, h * 3)
    detached = detach_state(state)
    assert all(not part.requires_grad for part in detached)
    assert all(torch.equal(a, b) for a, b in zip(detached, state, strict=True))


@pytest.mark.parametrize("bfloat16", [False, True], ids=["float32", "bfloat16-weights"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize(
    ("cell", "nonlinearity"),
    [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu"), ("mingru", "tanh")],
)
def test_compiled_kernels_step_and_draw_as_the_torch_stepper(cell, nonlinearity, layers, bfloat16):
    pytest.importorskip("numba")
    torch.manual_seed(layers)
    config = ModelConfig(cell=cell, nonlinearity=nonlinearity, layers=layers, hidden=30, embed=10)
    model = CharRNN(config, VOCAB).eval()
    if bfloat16:  # as `export --dtype bfloat16` leaves them: the kernels then read 16 bits
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.to(torch.bfloat16).float())
    start = random_state(model, 3)
    plain, compiled = Stepper(model, start), Stepper(model, start)
    plain.compiled = None  # torch's operations, as on a GPU or without numba
    assert compiled.compiled is not None
    assert compiled._kernel_weights.bfloat16 == bfloat16
    assert (compiled._kernel_weights.head.dtype == np.uint16) == bfloat16
    ids = torch.randint(0, VOCAB, (40, 3))
    with torch.no_grad():
        for t in range(40):
            expected = plain.step(ids[t])
            assert (compiled.step(ids[t]) - expected).abs().max().item() < 1e-5
        assert max_diff(compiled.state, plain.state) < 1e-5
        for scale in (1.0, 0.5, 2.0):
            extras = torch.randn(3, VOCAB) * 3
            logits = torch.addmm(extras, compiled.top * scale, compiled.head_weight)
            scales = np.full(3, scale, dtype=np.float32)
            drawn, kernel_logits = compiled.compiled.draw(scales, extras)
            assert torch.equal(drawn, logits.argmax(dim=-1))
            assert (kernel_logits - logits).abs().max().item() < 1e-5


@pytest.mark.parametrize("bfloat16", [False, True], ids=["float32", "bfloat16-weights"])
def test_split_products_on_two_threads_give_the_same_text_to_the_bit(bfloat16):
    """A lone 2 x 256 stream on two threads shares each large product's rows between them: the
    text and the state are those of one thread, to the bit."""
    pytest.importorskip("numba")
    from charrnn.model import kernels

    threads = torch.get_num_threads()
    if not kernels.use_threads(2):
        pytest.skip("numba has one thread here")
    assert torch.get_num_threads() == threads  # numba's pool leaves torch's count alone
    torch.manual_seed(5)
    model = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=256, embed=16), VOCAB).eval()
    if bfloat16:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.to(torch.bfloat16).float())
    start = random_state(model, 1)
    extras = torch.randn(300, VOCAB) * 2
    texts, states = [], []
    try:
        for count in (1, 2):
            torch.set_num_threads(1)  # the stepper's own tables, made by torch, alike
            stepper = Stepper(model, start)
            torch.set_num_threads(count)
            assert stepper.compiled._split() == (count == 2)
            with torch.no_grad():
                texts.append(stepper.compiled.sample(3, np.float32([0.8]), extras))
            states.append(stepper.state)
    finally:
        torch.set_num_threads(threads)
        kernels.use_threads(threads)
    assert texts[0] == texts[1] and len(set(texts[0])) > 3
    assert all(torch.equal(a, b) for a, b in zip(states[0], states[1], strict=True))
    # The kernel itself: rows shared or not, every sum the same (float32 and bfloat16 rows).
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((1024, 512), dtype=np.float32)
    if bfloat16:
        weight = (weight.view(np.uint32) >> 16).astype(np.uint16)
    x = rng.standard_normal((3, 512), dtype=np.float32)
    one, two = np.zeros((3, 1024), np.float32), np.zeros((3, 1024), np.float32)
    kernels.add_row_products(weight, x, one)
    kernels.use_threads(2)
    kernels.add_row_products_split(weight, x, two)
    kernels.use_threads(threads)
    assert np.array_equal(one, two)


def test_the_kernels_exp_is_within_two_ulp_of_the_true_one():
    pytest.importorskip("numba")
    from numba import njit

    from charrnn.model.kernels import exp32

    @njit
    def each(x, out):
        for i in range(x.shape[0]):
            out[i] = exp32(x[i])

    x = np.linspace(-87.0, 88.0, 1_000_001, dtype=np.float32)
    got = np.empty_like(x)
    each(x, got)
    true = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - true) / true) < 2 * 2.0**-23


def test_compiled_kernels_serve_every_cell_and_any_rows_on_the_cpu():
    pytest.importorskip("numba")
    for cell in ("lstm", "gru", "rnn", "mingru"):
        model = make_model(cell)
        stepper = Stepper(model, model.initial_state(1))
        assert stepper.compiled is not None
        stepper.append_rows(model.initial_state(2))  # streams join: still compiled
        assert stepper.compiled is not None and stepper.rows == 3

"""The minGRU cell (charrnn.model.network.MinGRU): its equations, gradient, training, resume,
generation, inspection and export."""

from __future__ import annotations

import json

import torch
from test_cli import invoke
from test_robustness import assert_same, stop_after

from charrnn.commands import resume_command, train_command
from charrnn.config import ModelConfig, recurrent_parameters
from charrnn.model.checkpoint import load_checkpoint, load_model
from charrnn.model.network import CharRNN, MinGRU, linear_recurrence
from charrnn.training.plan import TrainHooks


def reference(layer: MinGRU, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """The paper's equations, one step at a time, written out plainly."""
    hidden, outputs = layer.hidden_size, []
    for k in range(layer.num_layers):
        weight, bias = getattr(layer, f"weight_ih_l{k}"), getattr(layer, f"bias_ih_l{k}")
        h, outputs = h0[k], []
        for t in range(x.shape[1]):
            z = torch.sigmoid(x[:, t] @ weight[:hidden].t() + bias[:hidden])
            candidate = x[:, t] @ weight[hidden:].t() + bias[hidden:]
            h = (1 - z) * h + z * candidate
            outputs.append(h)
        x = torch.stack(outputs, dim=1)
    return x


def test_the_window_at_once_equals_the_equations_step_by_step():
    torch.manual_seed(0)
    layer = MinGRU(10, 24, num_layers=3)
    x, h0 = torch.randn(4, 37, 10), torch.randn(3, 4, 24)
    with torch.no_grad():
        outputs, last = layer(x, h0)
        expected = reference(layer, x, h0)
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(last[-1], expected[:, -1], rtol=0, atol=1e-5)
    config = ModelConfig(cell="mingru", layers=3, hidden=24, embed=10)
    assert sum(p.numel() for p in layer.parameters()) == recurrent_parameters(config)


def test_the_hand_written_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(6, 2, 3, dtype=torch.double, generator=generator).requires_grad_()
    b = torch.randn(6, 2, 3, dtype=torch.double, generator=generator).requires_grad_()
    h0 = torch.randn(2, 3, dtype=torch.double, generator=generator).requires_grad_()
    assert torch.autograd.gradcheck(linear_recurrence, (a, b, h0))
    layer = MinGRU(3, 4, num_layers=2).double()
    x = torch.randn(2, 5, 3, dtype=torch.double, generator=generator).requires_grad_()
    state = torch.randn(2, 2, 4, dtype=torch.double, generator=generator).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, s: layer(x, s)[0], (x, state))


def test_bf16_autocast_keeps_the_recurrence_in_fp32():
    torch.manual_seed(2)
    model = CharRNN(ModelConfig(cell="mingru", layers=2, hidden=32, embed=8), 11)
    ids = torch.randint(0, 11, (3, 20))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = model(ids)
    assert state.dtype == torch.float32
    with torch.no_grad():
        exact, _ = model(ids)
    assert (logits.float() - exact).abs().max() < 0.1  # bf16 products, not a different model


def test_a_mingru_run_learns_resumes_bit_for_bit_and_exports(write_corpus, tmp_path, tiny_config):
    corpus = write_corpus()
    config = tiny_config(cell="mingru", layers=2, hidden=32, dropout=0.1, max_steps=40, lr=0.02)
    straight = train_command([corpus], config, out=tmp_path / "straight")
    train_command(
        [corpus], config, out=tmp_path / "resumed", hooks=TrainHooks(should_stop=stop_after(20))
    )
    resumed = resume_command(tmp_path / "resumed", {})
    assert resumed.progress.step == straight.progress.step == 40
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert_same(a.model_state, b.model_state)
    assert_same(a.resume, b.resume)
    lines = (tmp_path / "straight" / "metrics.jsonl").read_text("utf-8").splitlines()
    losses = [json.loads(line)["train_loss"] for line in lines if "train_loss" in line]
    assert losses[-1] < losses[0] - 0.5  # it learns the repetitive text
    # Sampled by the fast stepper, inspected with its update gate, exported.
    sampled = invoke(
        "sample", "--checkpoint", tmp_path / "straight", "--length", "50", "--seed", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr
    assert len(sampled.stdout) >= 50
    (tmp_path / "look.txt").write_text("the cat sat on the mat\n" * 3, "utf-8")
    inspected = invoke(
        "inspect", "--checkpoint", tmp_path / "straight", "look.txt", "--json", cwd=tmp_path
    )
    assert inspected.returncode == 0, inspected.stderr
    gates = json.loads(inspected.stdout)["gates"]
    assert {row["gate"] for row in gates} == {"update"}
    exported = tmp_path / "model.pt"
    result = invoke(
        "export", "--checkpoint", tmp_path / "straight", "-o", exported, "--dtype", "float16",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model, _ = load_model(exported)
    assert model.config.cell == "mingru"
    original, _ = load_model(tmp_path / "straight" / "best.pt")
    ids = torch.randint(0, original.vocab_size, (1, 30))
    with torch.no_grad():
        difference = (model.float()(ids)[0] - original(ids)[0]).abs().max()
    assert difference < 0.05

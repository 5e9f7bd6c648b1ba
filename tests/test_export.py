"""Inference-only exports: float16/bfloat16 copies and int8 weights."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_cli import invoke

from charrnn.commands import eval_command, sample_command, train_command
from charrnn.config import SampleConfig
from charrnn.generation.sampling import collect, generate
from charrnn.model.checkpoint import load_checkpoint, load_model
from charrnn.model.quantize import dequantize_state, quantize_rows, quantize_state


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_config, repetitive_text) -> Path:
    """A 32-unit LSTM trained 40 steps on ~6 KB of verse."""
    root = tmp_path_factory.mktemp("export")
    (root / "corpus.txt").write_text(repetitive_text(6000), "utf-8")
    config = tiny_config(hidden=32, embed=16, max_steps=40, eval_every=40, lr=0.02, seed=3)
    train_command([root / "corpus.txt"], config, out=root / "run", cache_dir=root / ".cache")
    return root / "run"


def test_int8_rows_round_to_within_half_a_step_and_zero_rows_stay_zero():
    torch.manual_seed(0)
    weight = torch.randn(6, 50) * torch.tensor([1e-4, 0.1, 1.0, 10.0, 3.0, 0.0])[:, None]
    values, scales = quantize_rows(weight)
    assert values.dtype == torch.int8 and scales.shape == (6,)
    assert int(values.abs().max()) == 127  # each nonzero row uses the whole range
    error = (values.float() * scales[:, None] - weight).abs()
    assert bool((error <= scales[:, None] / 2 + 1e-7).all())  # per row, not per tensor
    assert bool((values[5] == 0).all())
    state = {"w": weight, "b": torch.ones(6), "step": torch.tensor(3)}
    packed = quantize_state(state, torch.float16)
    assert packed["w"].dtype == torch.int8 and packed["b"].dtype == torch.float16
    restored = dequantize_state(packed)
    assert set(restored) == {"w", "b", "step"} and restored["w"].dtype == torch.float32
    assert torch.equal(restored["step"], torch.tensor(3))


@pytest.mark.parametrize(
    ("flags", "max_ratio", "loss_tolerance"),
    [
        (["--quantize", "int8"], 0.5, 0.02),
        (["--dtype", "float16"], 0.62, 1e-3),
        (["--dtype", "bfloat16"], 0.62, 0.02),
        (["--quantize", "int8", "--dtype", "bfloat16"], 0.5, 0.03),
    ],
    ids=["int8", "float16", "bfloat16", "int8-bfloat16"],
)
def test_an_export_is_smaller_and_scores_and_samples_like_the_original(
    run, tmp_path, flags, max_ratio, loss_tolerance
):
    out = tmp_path / "model.pt"
    result = invoke("export", "--checkpoint", run, "-o", out, *flags, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["output_bytes"] == out.stat().st_size
    assert out.stat().st_size < max_ratio * (run / "best.pt").stat().st_size
    payload = torch.load(out, weights_only=True)
    assert payload["resume"] == {}  # no optimizer, random-number or hidden state
    assert payload["format_version"] == (2 if "int8" in flags else 1)
    exported, original = load_checkpoint(out), load_checkpoint(run / "best.pt")
    assert exported.config == original.config and exported.vocab == original.vocab
    assert exported.progress == original.progress
    for name, tensor in exported.model_state.items():
        assert tensor.dtype == original.model_state[name].dtype or "int8" not in flags
    # The export scores the training run's validation split like the original does.
    before = eval_command(run / "best.pt", [], device_name="cpu", threads=1)
    after = eval_command(out, [], device_name="cpu", threads=1)
    assert after.chars == before.chars
    assert abs(after.loss - before.loss) < loss_tolerance
    assert after.loss != before.loss  # the weights really were rounded
    config = SampleConfig(length=40, seed=5)
    text = collect(sample_command(out, "the ", config, "cpu", threads=1), 1)[0]
    assert text.startswith("the ") and len(text) == 44


def test_info_and_init_from_read_an_int8_export(run, tmp_path, tiny_config):
    out = tmp_path / "small.pt"
    assert invoke("export", "--checkpoint", run, "-o", out, "--quantize", "int8",
                  cwd=tmp_path).returncode == 0  # fmt: skip
    info = invoke("info", "--checkpoint", out, "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    details = json.loads(info.stdout)
    assert details["export"] == {"dtype": "float32", "quantize": "int8"}
    assert details["step"] == 40
    table = invoke("info", "--checkpoint", out, cwd=tmp_path).stdout
    assert "int8 matrices, float32 vectors (inference only)" in table
    model, _ = load_model(out)
    reference, _ = load_model(run / "best.pt")
    difference = max(
        float((a - b).abs().max())
        for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    assert 0 < difference < 0.05
    tuned = train_command(
        [run.parent / "corpus.txt"], tiny_config(max_steps=2, eval_every=2), out=tmp_path / "ft",
        cache_dir=tmp_path / ".cache", init_from=out,
    )  # fmt: skip
    assert tuned.progress.step == 2 and tuned.config.model.hidden == 32


def test_a_bfloat16_export_samples_from_16_bit_weights_the_same_text_alone_and_batched(
    run, tmp_path
):
    pytest.importorskip("numba")
    from charrnn.model.network import Stepper

    out = tmp_path / "half.pt"
    assert invoke("export", "--checkpoint", run, "-o", out, "--dtype", "bfloat16",
                  cwd=tmp_path).returncode == 0  # fmt: skip
    model, checkpoint = load_model(out)
    stepper = Stepper(model, model.initial_state(1))
    assert stepper.compiled is not None and stepper._kernel_weights.bfloat16
    config = SampleConfig(length=300, seed=4, temperature=1.2)
    [one] = collect(generate(model, checkpoint.vocab, "the ", config), 1)
    many = collect(generate(model, checkpoint.vocab, "the ", replace(config, num_samples=3)), 3)
    assert one == many[0]


@pytest.mark.parametrize(
    ("flags", "dtypes", "pt_flags"),
    [
        ([], {"float16"}, ["--dtype", "float16"]),  # the default: float16 from float32
        # int8 matrices with float32 row scales, float16 vectors
        (
            ["--quantize", "int8"],
            {"int8", "float32", "float16"},
            ["--quantize", "int8", "--dtype", "float16"],
        ),
        (["--dtype", "float32"], {"float32"}, []),  # full precision on request
    ],
)
def test_a_page_stores_compact_weights_the_size_of_the_matching_export(
    run, tmp_path, flags, dtypes, pt_flags
):
    """A page of a float32 checkpoint holds float16 weights unless told otherwise (int8 with
    float16 vectors on request): its size is the matching `.pt` export's and a fixed page."""
    page, exported = tmp_path / "m.html", tmp_path / "m.pt"
    result = invoke("export", "--checkpoint", run, "-o", page, "--format", "html", *flags,
                    "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert invoke("export", "--checkpoint", run, "-o", exported, *pt_flags,
                  cwd=tmp_path).returncode == 0  # fmt: skip
    text = page.read_bytes().decode("latin-1")  # the JSON is ASCII; the weights any byte
    described = json.loads(text.split('<script type="application/json" id="model">')[1]
                           .split("</script>")[0])  # fmt: skip
    assert {tensor["dtype"] for tensor in described["tensors"]} == dtypes
    assert json.loads(result.stdout)["dtype"] == ("float32" if "float32" in flags else "float16")
    fixed = 30_000  # the script and the layout
    assert page.stat().st_size < 1.03 * exported.stat().st_size + fixed
    assert page.stat().st_size > 0.97 * exported.stat().st_size

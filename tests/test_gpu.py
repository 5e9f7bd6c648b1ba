"""The CUDA path: cuDNN layers, bf16 autocast, pinned transfers (skipped without a GPU)."""

from __future__ import annotations

import math

import pytest
import torch

from charrnn.commands import eval_command, resume_command, sample_command, train_command
from charrnn.config import SampleConfig
from charrnn.generation.sampling import collect
from charrnn.model.checkpoint import load_checkpoint, save_checkpoint
from charrnn.model.network import Stepper
from charrnn.system.device import autocast_dtype, select_device
from charrnn.training.plan import TrainHooks

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_auto_device_is_the_cpu_without_an_accelerator():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        pytest.skip("an MPS device is present")
    assert select_device("auto") == torch.device("cpu")
    assert autocast_dtype("auto", torch.device("cpu")) is None


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_training_on_cuda_learns_and_saves_cpu_loadable_checkpoints(
    write_corpus, tmp_path, tiny_config, precision
):
    config = tiny_config(device="cuda", precision=precision, max_steps=60, lr=0.02)
    outcome = train_command([write_corpus()], config, out=tmp_path / "run")
    assert outcome.progress.val_loss < math.log(outcome.corpus.vocab.size) - 0.5
    checkpoint = load_checkpoint(tmp_path / "run")  # mapped to the CPU
    assert all(t.device.type == "cpu" for t in checkpoint.model_state.values())
    result = eval_command(tmp_path / "run", [], device_name="cuda")
    assert abs(result.loss - outcome.progress.best_val_loss) < 1e-3


@needs_cuda
def test_cuda_sampling_is_seeded_and_stepper_matches_cudnn(tmp_path, write_corpus, tiny_config):
    train_command([write_corpus()], tiny_config(device="cuda"), out=tmp_path / "run")
    config = SampleConfig(length=40, seed=3)
    first = collect(sample_command(tmp_path / "run", "the ", config, "cuda"), 1)
    assert first == collect(sample_command(tmp_path / "run", "the ", config, "cuda"), 1)
    model = load_checkpoint(tmp_path / "run").build_model("cuda")
    ids = torch.randint(0, model.vocab_size, (2, 7), device="cuda")
    with torch.inference_mode():
        fused, _ = model(ids)
        stepper = Stepper(model, model.initial_state(2))
        for t in range(7):
            logits = stepper.step(ids[:, t])
            assert (logits - fused[:, t]).abs().max().item() < 1e-4


@needs_cuda
def test_previews_on_cuda_draw_on_the_gpu_and_leave_the_run_alone(
    write_corpus, tmp_path, tiny_config
):
    config = tiny_config(device="cuda", precision="bf16", preview_chars=30, max_steps=20)
    previews: list[tuple[int, str]] = []
    outcome = train_command(
        [write_corpus()],
        config,
        out=tmp_path / "run",
        hooks=TrainHooks(on_preview=lambda *p: previews.append(p)),
    )
    assert [step for step, _ in previews] == [10, 20]
    assert all(len(text) == 30 for _, text in previews)
    assert math.isfinite(outcome.progress.best_val_loss)


@needs_cuda
def test_accuracy_and_dynamic_evaluation_on_cuda_match_the_cpu(tmp_path, write_corpus, tiny_config):
    train_command([write_corpus()], tiny_config(max_steps=30), out=tmp_path / "run")
    on_gpu = eval_command(tmp_path / "run", [], device_name="cuda", dynamic=True)
    on_cpu = eval_command(tmp_path / "run", [], device_name="cpu", dynamic=True)
    assert on_gpu.metrics.accuracy == pytest.approx(on_cpu.metrics.accuracy, abs=0.01)
    assert on_gpu.dynamic.loss == pytest.approx(on_cpu.dynamic.loss, abs=1e-3)


@needs_cuda
def test_fp16_on_cuda_resumes_from_the_scale_it_had_reached(write_corpus, tmp_path, tiny_config):
    config = tiny_config(device="cuda", precision="fp16", max_steps=8, eval_every=4)
    corpus = write_corpus()
    stopped = train_command(
        [corpus], config, out=tmp_path / "run", hooks=TrainHooks(should_stop=lambda: True)
    )
    saved = load_checkpoint(tmp_path / "run" / "last.pt").resume["scaler"]
    assert saved and saved["scale"] > 0 and stopped.progress.step >= 1
    # A scale the run could not have started from: the resumed run must go on from it.
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    checkpoint.resume["scaler"]["scale"] = 512.0
    save_checkpoint(checkpoint, tmp_path / "run" / "last.pt")
    resume_command(tmp_path / "run", {})
    scale = load_checkpoint(tmp_path / "run" / "last.pt").resume["scaler"]["scale"]
    assert scale <= 512.0  # growth needs 2,000 clean steps; an overflow halves it

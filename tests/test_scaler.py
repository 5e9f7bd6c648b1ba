"""fp16 training's gradient scaler: its state is part of a resumable checkpoint, and the steps it
skips for an overflow are not the non-finite steps that stop a run. fp16 autocast of a GRU and
`torch.amp.GradScaler("cpu")` run on a CPU (oneDNN has no fp16 LSTM without AVX512-FP16), so
this is tested for real here; the resume on CUDA is in tests/test_gpu.py."""

from __future__ import annotations

import pytest
import torch

from charrnn.commands import resume_command, train_command
from charrnn.model.checkpoint import load_checkpoint
from charrnn.model.network import autocast_failure
from charrnn.training.trainer import MAX_BAD_STEPS, Trainer

HUGE = 2.0**100  # loss x this overflows float16 gradients at once; each overflow halves it


def needs_cpu_fp16(tiny_config) -> None:
    config = tiny_config(precision="fp16", cell="gru").model
    failure = autocast_failure(config, torch.float16, torch.device("cpu"))
    if failure is not None:
        pytest.skip(f"this CPU cannot train in fp16: {failure}")


def test_the_scale_is_saved_restored_and_overflows_are_not_bad_steps(
    write_corpus, tmp_path, tiny_config, monkeypatch
):
    needs_cpu_fp16(tiny_config)
    real_step = Trainer.train_step

    def step_from_a_huge_scale(self, inputs, targets, lr):
        if self.progress.step == 0:
            self.scaler.load_state_dict({**self.scaler.state_dict(), "scale": HUGE})
        return real_step(self, inputs, targets, lr)

    steps = MAX_BAD_STEPS + 3  # more overflows in a row than non-finite steps may be
    config = tiny_config(precision="fp16", cell="gru", max_steps=steps, eval_every=steps)
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", step_from_a_huge_scale)
        outcome = train_command([write_corpus()], config, out=tmp_path / "run")
    assert outcome.progress.step == steps and outcome.progress.skipped_steps == steps
    saved = load_checkpoint(tmp_path / "run" / "last.pt").resume["scaler"]
    assert saved["scale"] == HUGE / 2**steps

    # The resumed run starts from the saved scale, not from 65536: it still overflows.
    resume_command(tmp_path / "run", {"max_steps": steps + 2})
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last.resume["scaler"]["scale"] == HUGE / 2 ** (steps + 2)
    assert last.progress["skipped_steps"] == steps + 2


def test_an_fp32_run_saves_no_scaler_state(write_corpus, tmp_path, tiny_config):
    train_command([write_corpus()], tiny_config(max_steps=2, eval_every=2), out=tmp_path / "r")
    assert load_checkpoint(tmp_path / "r" / "last.pt").resume["scaler"] == {}

"""Distillation: a student trained on a teacher's softened predictions."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_cli import assert_one_error_line, invoke
from test_robustness import assert_same, metrics, stop_after, without_timing

from charrnn.commands import distill_command, resume_command, train_command
from charrnn.config import DistillConfig
from charrnn.errors import CheckpointError
from charrnn.model.checkpoint import load_checkpoint
from charrnn.training.distill import distillation_loss
from charrnn.training.plan import TrainHooks

STUDENT = {"hidden": 8, "embed": 4, "max_steps": 24, "eval_every": 8, "log_every": 4, "seed": 5}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_config, repetitive_text) -> Path:
    """A 32-unit LSTM trained 30 steps on 1.2 KB of verse (16 steps an epoch: runs cross one)."""
    root = tmp_path_factory.mktemp("teacher")
    (root / "corpus.txt").write_text(repetitive_text(1200), "utf-8")
    config = tiny_config(hidden=32, embed=16, max_steps=30, eval_every=30, lr=0.02)
    train_command([root / "corpus.txt"], config, out=root / "run", cache_dir=root / ".cache")
    return root / "run"


def test_the_loss_mixes_softened_kl_and_cross_entropy_by_alpha():
    torch.manual_seed(0)
    student, teacher, targets = torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.randint(5, (2, 3))
    hard = F.cross_entropy(student.reshape(-1, 5), targets.reshape(-1))
    p = torch.softmax(teacher.reshape(-1, 5) / 2.0, dim=-1)  # by hand: sum p log(p / q), per char
    q = torch.softmax(student.reshape(-1, 5) / 2.0, dim=-1)
    kl = float((p * (p / q).log()).sum(dim=-1).mean())
    mixed = distillation_loss(student, teacher, targets, DistillConfig(2.0, 0.25))
    assert math.isclose(float(mixed), 0.25 * 4.0 * kl + 0.75 * float(hard), rel_tol=1e-5)
    only_hard = distillation_loss(student, teacher, targets, DistillConfig(2.0, 0.0))
    assert math.isclose(float(only_hard), float(hard), rel_tol=1e-6)
    same = distillation_loss(teacher, teacher, targets, DistillConfig(3.0, 1.0))
    assert abs(float(same)) < 1e-6  # a student that predicts as the teacher has nothing to learn


def test_alpha_zero_is_plain_training_and_alpha_one_half_is_not(teacher, tmp_path, tiny_config):
    corpus = teacher.parent / "corpus.txt"
    config = tiny_config(**STUDENT)
    plain = train_command([corpus], config, out=tmp_path / "plain")
    alone = distill_command([corpus], teacher, config, DistillConfig(2.0, 0.0), out=tmp_path / "a0")
    mixed = distill_command([corpus], teacher, config, DistillConfig(2.0, 0.5), out=tmp_path / "a5")
    a, b, c = (load_checkpoint(tmp_path / name / "last.pt") for name in ("plain", "a0", "a5"))
    assert_same(a.model_state, b.model_state)  # the hook leaves cross-entropy training as it was
    assert not torch.equal(a.model_state["head.weight"], c.model_state["head.weight"])
    assert plain.progress.step == alone.progress.step == mixed.progress.step == 24
    assert c.objective["kind"] == "distill" and c.objective["distill_alpha"] == 0.5
    assert c.objective["teacher"] == str((teacher / "best.pt").resolve())
    assert c.vocab == load_checkpoint(teacher / "best.pt").vocab
    assert c.config.model.hidden == 8 and c.resume["objective"]["teacher_hidden"] is not None
    assert a.objective == {} and a.resume["objective"] == {}  # plain training: nothing extra


def test_a_stopped_and_resumed_distillation_equals_an_uninterrupted_one(
    teacher, tmp_path, tiny_config
):
    corpus, config, mix = teacher.parent / "corpus.txt", tiny_config(**STUDENT), DistillConfig()
    distill_command([corpus], teacher, config, mix, out=tmp_path / "straight")
    stopped = distill_command(
        [corpus],
        teacher,
        config,
        mix,
        out=tmp_path / "resumed",
        hooks=TrainHooks(should_stop=stop_after(12)),
    )
    assert stopped.progress.step == 12
    halfway = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert halfway.resume["objective"]["teacher_hidden"] is not None  # mid-epoch: it matters
    resumed = resume_command(tmp_path / "resumed", {})
    assert resumed.progress.step == 24
    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "straight" / name)
        b = load_checkpoint(tmp_path / "resumed" / name)
        assert_same(a.model_state, b.model_state, name)
        assert_same(a.resume, b.resume, name)  # the teacher's hidden state too
    records = without_timing(metrics(tmp_path / "resumed"))
    assert records == without_timing(metrics(tmp_path / "straight"))


def test_resuming_refuses_a_teacher_that_changed(teacher, tmp_path, tiny_config):
    own = tmp_path / "teacher"
    shutil.copytree(teacher, own)
    corpus = teacher.parent / "corpus.txt"
    distill_command(
        [corpus], own, tiny_config(**STUDENT), DistillConfig(), out=tmp_path / "run",
        hooks=TrainHooks(should_stop=stop_after(4)),
    )  # fmt: skip
    train_command([corpus], tiny_config(max_steps=2, eval_every=2), out=tmp_path / "other")
    shutil.copy(tmp_path / "other" / "best.pt", own / "best.pt")
    with pytest.raises(CheckpointError, match="changed since this run started"):
        resume_command(tmp_path / "run", {})
    (own / "best.pt").unlink()
    with pytest.raises(CheckpointError, match="the teacher of this run is gone"):
        resume_command(tmp_path / "run", {})


def test_distill_on_the_command_line(teacher, tmp_path):
    corpus = teacher.parent / "corpus.txt"
    flags = ["--hidden", "8", "--embed", "4", "--batch-size", "4", "--seq-len", "16",
             "--max-steps", "4", "--eval-every", "4", "--device", "cpu", "--quiet"]  # fmt: skip
    result = invoke("distill", corpus, "--teacher", teacher, "--out", "s", "--distill-alpha",
                    "0.8", "--distill-temperature", "3", *flags, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    saved = load_checkpoint(tmp_path / "s" / "best.pt")
    assert (saved.objective["distill_alpha"], saved.objective["distill_temperature"]) == (0.8, 3)
    assert saved.config.model.hidden == 8 and saved.progress["step"] == 4
    info = invoke("info", "--checkpoint", tmp_path / "s", "--json", cwd=tmp_path)
    assert '"kind": "distill"' in info.stdout
    table = invoke("info", "--checkpoint", tmp_path / "s", cwd=tmp_path).stdout
    assert "(temperature 3, alpha 0.8)" in table
    (tmp_path / "other.txt").write_text("ZZZ€ the quick fox\n" * 20, "utf-8")
    unseen = invoke("distill", "other.txt", "--teacher", teacher, "--out", "u", *flags,
                    cwd=tmp_path)  # fmt: skip
    line = assert_one_error_line(unseen, 1)
    assert "the corpus has 2 symbol(s) the teacher never saw: 'Z' (U+005A), '€'" in line
    bad = invoke("distill", corpus, "--teacher", teacher, "--distill-alpha", "1.5", *flags,
                 cwd=tmp_path)  # fmt: skip
    assert "distill_alpha must be in [0, 1], got 1.5" in assert_one_error_line(bad, 2)
    wrong_kind = invoke("distill", corpus, "--teacher", teacher, "--bytes", "--out", "b", *flags,
                        cwd=tmp_path)  # fmt: skip
    assert "the teacher models characters; distill with --chars" in assert_one_error_line(
        wrong_kind, 2
    )
    assert not (tmp_path / "u").exists() and not (tmp_path / "b").exists()

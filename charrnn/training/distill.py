"""Knowledge distillation: a student learns from a trained teacher's softened predictions.

The loss of each window mixes two terms (Hinton et al., 2015): the KL divergence from the
teacher's next-character distribution to the student's, both softened by a temperature T and
scaled by T**2 so its gradients keep their size as T changes, weighted by alpha; and the usual
cross-entropy on the true next character, weighted by 1 - alpha. The teacher reads the same
streams as the student and carries its own hidden state from window to window, so it predicts as
well as it can; that state goes into last.pt, so a resumed distillation is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from charrnn.config import DistillConfig, validate_distill_config
from charrnn.errors import CheckpointError
from charrnn.model.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint_path
from charrnn.model.network import CharRNN, State, detach_state, state_from_parts, state_parts
from charrnn.system.digest import file_sha256
from charrnn.training.trainer import Objective

KIND = "distill"


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    config: DistillConfig,
) -> torch.Tensor:
    """alpha T^2 KL(teacher_T || student_T) + (1 - alpha) cross-entropy, mean per character."""
    vocab = student_logits.shape[-1]
    student = student_logits.reshape(-1, vocab).float()
    teacher = teacher_logits.reshape(-1, vocab).float()
    temperature, alpha = config.distill_temperature, config.distill_alpha
    hard = F.cross_entropy(student, targets.reshape(-1))
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


class DistillObjective(Objective):
    """The training loss of a student of `teacher` (a frozen model in eval mode)."""

    def __init__(self, teacher: CharRNN, config: DistillConfig, record: dict[str, Any]) -> None:
        self.teacher, self.config, self._record = teacher.eval(), config, record
        self.teacher.requires_grad_(False)
        self.state: State | None = None

    @property
    def record(self) -> dict[str, Any]:
        return self._record

    def loss(
        self, inputs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits, state = self.teacher(inputs, self.state)
        self.state = detach_state(state)
        return distillation_loss(logits, teacher_logits, targets, self.config)

    def reset(self) -> None:
        self.state = None

    def resume_state(self) -> dict[str, Any]:
        if self.state is None:
            return {"teacher_hidden": None}
        return {"teacher_hidden": [part.detach().cpu() for part in state_parts(self.state)]}

    def restore(self, saved: dict[str, Any]) -> None:
        parts = saved.get("teacher_hidden")
        if not parts:
            self.state = None
            return
        device = next(self.teacher.parameters()).device
        self.state = state_from_parts([part.to(device) for part in parts])


def load_teacher(path: Path) -> tuple[Path, Checkpoint]:
    """The teacher's checkpoint file (a run directory means its best.pt) and its contents."""
    resolved = resolve_checkpoint_path(Path(path))
    return resolved, load_checkpoint(resolved)


def new_objective(
    teacher_path: Path, teacher: Checkpoint, config: DistillConfig, device: torch.device
) -> DistillObjective:
    """The objective of a new distillation run from `teacher` (read from `teacher_path`)."""
    validate_distill_config(config)
    record = {
        "kind": KIND,
        "teacher": str(teacher_path.resolve()),
        "teacher_sha256": file_sha256(teacher_path)[0],
        "distill_temperature": config.distill_temperature,
        "distill_alpha": config.distill_alpha,
    }
    return DistillObjective(_teacher_model(teacher_path, teacher, device), config, record)


def resumed_objective(record: dict[str, Any], device: torch.device) -> DistillObjective:
    """The objective a saved distillation run continues with: the same teacher file and mix."""
    teacher_path = Path(record["teacher"])
    if not teacher_path.is_file():
        raise CheckpointError(
            f"the teacher of this run is gone: {teacher_path}; resuming needs the same file"
        )
    if file_sha256(teacher_path)[0] != record.get("teacher_sha256"):
        raise CheckpointError(
            f"the teacher {teacher_path} changed since this run started; resuming needs the "
            "same file"
        )
    config = DistillConfig(record["distill_temperature"], record["distill_alpha"])
    teacher = load_checkpoint(teacher_path)
    return DistillObjective(_teacher_model(teacher_path, teacher, device), config, record)


def _teacher_model(path: Path, teacher: Checkpoint, device: torch.device) -> CharRNN:
    try:
        return teacher.build_model(device)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: weights do not match its configuration ({exc})") from None

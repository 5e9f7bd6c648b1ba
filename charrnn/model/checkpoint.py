"""One self-describing checkpoint file: config, vocabulary, weights and what resuming needs.

Files are written to a temporary name, flushed, fsynced and renamed, so a crash at any instant
leaves either the old file or the new one. They are read with ``torch.load(weights_only=True)``,
which refuses any pickle that would construct arbitrary objects or run code.
"""

from __future__ import annotations

import pickle
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from charrnn.config import RunConfig, count_parameters
from charrnn.errors import CheckpointError, WriteError
from charrnn.model.network import CharRNN
from charrnn.model.quantize import INT8, dequantize_state
from charrnn.run_dir import checkpoint_in
from charrnn.system.atomic import atomic_write
from charrnn.text.corpus import Vocab

FORMAT_NAME = "charrnn-checkpoint"
# 2 added int8 weights (an `export` section with quantize "int8"). Files without them are still
# written as 1, so an older charrnn reads every checkpoint it could use.
FORMAT_VERSION = 2
PLAIN_FORMAT_VERSION = 1
# Models that ship inside the package (charrnn/model/starter/), by the name --checkpoint takes;
# benchmarks/RESULTS.md has the command that made each one.
BUILT_IN_MODELS = {"shakespeare": "shakespeare.pt"}
STARTER_DIR = "starter"


@dataclass
class Checkpoint:
    """What a checkpoint file holds. `progress` counts steps, characters, time and best loss."""

    config: RunConfig
    vocab: Vocab
    model_state: dict[str, torch.Tensor]
    progress: dict[str, Any] = field(default_factory=dict)
    resume: dict[str, Any] = field(default_factory=dict)  # optimizer, RNG and hidden state
    corpus: dict[str, Any] = field(default_factory=dict)  # sources and split, for `eval`
    export: dict[str, Any] = field(default_factory=dict)  # an inference-only file: dtype, quantize
    objective: dict[str, Any] = field(default_factory=dict)  # not plain cross-entropy: distill's

    @property
    def quantized(self) -> bool:
        """Whether `model_state` holds int8 matrices with scales (as written by `export`)."""
        return self.export.get("quantize") == INT8

    def to_payload(self) -> dict[str, Any]:
        payload = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION if self.quantized else PLAIN_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "vocab": self.vocab.to_dict(),
            "model": self.model_state,
            "progress": self.progress,
            "resume": self.resume,
            "corpus": self.corpus,
        }
        if self.export:
            payload["export"] = self.export
        if self.objective:
            payload["objective"] = self.objective
        return payload

    @property
    def parameters(self) -> int:
        """How many weights and biases the model has (int8 or not, as when it was trained)."""
        return count_parameters(self.config.model, self.vocab.size)

    def build_model(self, device: torch.device | str = "cpu") -> CharRNN:
        """The network with these weights, in eval mode, on `device`."""
        model = CharRNN(self.config.model, self.vocab.size)
        model.load_state_dict(self.model_state)
        return model.to(device).eval()


def atomic_save(payload: Any, path: Path) -> None:
    """`torch.save` to `path` atomically; a failed write leaves the previous file unchanged."""
    try:
        atomic_write(path, lambda handle: torch.save(payload, handle))
    except WriteError as exc:
        raise CheckpointError(
            f"cannot save {path}: {exc.reason}; the previous checkpoint is unchanged"
        ) from None


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write `checkpoint` to `path` atomically."""
    atomic_save(checkpoint.to_payload(), path)


def built_in_model(name: Path | str) -> Path | None:
    """The packaged file of a built-in model's name (`shakespeare`), None for any other name."""
    file_name = BUILT_IN_MODELS.get(str(name))
    if file_name is None:
        return None
    return Path(str(resources.files("charrnn.model").joinpath(STARTER_DIR, file_name)))


def is_built_in(path: Path | str) -> bool:
    """Whether `path` names a built-in model (a real file or directory of that name wins)."""
    return not Path(path).exists() and built_in_model(path) is not None


def resolve_checkpoint_path(path: Path) -> Path:
    """A checkpoint file, a run directory's best.pt (else last.pt), or a built-in model."""
    path = Path(path)
    if is_built_in(path):
        return built_in_model(path)  # type: ignore[return-value]
    return checkpoint_in(path)


# What torch.load raises on files that are not checkpoints (text, garbage, cut-off pickles).
_UNREADABLE = (
    zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError, IndexError, KeyError,
    struct.error,
)  # fmt: skip


def _read_payload(path: Path, map_location: str | torch.device) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # garbage warns about "pickle protocol N"
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler names a class or function it refused as a GLOBAL.
        if "GLOBAL" not in str(exc):
            raise CheckpointError(f"{path}: not a readable checkpoint (not a torch file)") from None
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain data "
            "(loading such a file could run code)"
        ) from None
    except _UNREADABLE as exc:
        if isinstance(exc, OSError) and exc.filename:  # the file itself could not be read
            reason = exc.strerror or type(exc).__name__
        elif isinstance(exc, zipfile.BadZipFile | RuntimeError | ValueError) and str(exc):
            reason = str(exc).splitlines()[0]
        else:  # the unpickler's words for garbled bytes ("pop from empty list") mean nothing here
            reason = "not a torch file, or cut short"
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason[:200]})") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and check a checkpoint file (or a run directory's best one)."""
    path = resolve_checkpoint_path(Path(path))
    payload = _read_payload(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a charrnn checkpoint")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this charrnn reads "
            f"({FORMAT_VERSION}); upgrade charrnn"
        )
    try:
        checkpoint = Checkpoint(
            config=RunConfig.from_dict(payload["config"]),
            vocab=Vocab.from_dict(payload["vocab"]),
            model_state=payload["model"],
            progress=payload.get("progress", {}),
            resume=payload.get("resume", {}),
            corpus=payload.get("corpus", {}),
            export=payload.get("export", {}),
            objective=payload.get("objective", {}),
        )
        if checkpoint.quantized:  # every reader (sample, eval, info, --init-from) gets float32
            checkpoint.model_state = dequantize_state(checkpoint.model_state)
        return checkpoint
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint ({exc})") from None


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[CharRNN, Checkpoint]:
    """The model and checkpoint at `path`, weights on `device`."""
    checkpoint = load_checkpoint(path)
    try:
        model = checkpoint.build_model(device)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: weights do not match its configuration ({exc})") from None
    return model, checkpoint

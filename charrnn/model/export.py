"""`charrnn export`: an inference-only copy of a checkpoint, in a smaller dtype or int8.

The file is a normal checkpoint (configuration, vocabulary, weights, progress, corpus) without
the optimizer, random-number or hidden state, so `sample`, `eval`, `info` and `--init-from` read
it through `checkpoint.load_checkpoint` like any other. Weights are turned back into float32 as
they load (see `charrnn.model.quantize` for why).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn.errors import UsageError
from charrnn.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from charrnn.model.quantize import DTYPES, INT8, cast_state, quantize_state
from charrnn.run_dir import resolve_checkpoint_path

QUANTIZE_CHOICES = ("none", INT8)


@dataclass(frozen=True)
class ExportResult:
    """What was written: the file, its size against the source's, and its format."""

    source: Path
    output: Path
    source_bytes: int
    output_bytes: int
    dtype: str
    quantize: str | None
    parameters: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "source_bytes": self.source_bytes,
            "output_bytes": self.output_bytes,
            "size_ratio": self.output_bytes / self.source_bytes,
            "dtype": self.dtype,
            "quantize": self.quantize,
            "parameters": self.parameters,
        }


def export_checkpoint(checkpoint: Checkpoint, dtype: str, quantize: str | None) -> Checkpoint:
    """The inference-only checkpoint: weights in `dtype` (matrices int8 with `quantize`)."""
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype '{dtype}'; choose from {', '.join(DTYPES)}")
    if quantize not in (None, INT8):
        raise UsageError(f"unknown quantization '{quantize}'; choose int8 or none")
    torch_dtype = DTYPES[dtype]
    if quantize == INT8:
        state = quantize_state(checkpoint.model_state, torch_dtype)
    else:
        state = cast_state(checkpoint.model_state, torch_dtype)
    return Checkpoint(
        config=checkpoint.config,
        vocab=checkpoint.vocab,
        model_state=state,
        progress=checkpoint.progress,
        resume={},  # inference only: no optimizer, random-number or hidden state
        corpus=checkpoint.corpus,
        export={"dtype": dtype, "quantize": quantize},
        objective=checkpoint.objective,
    )


def export_command(
    checkpoint_path: Path, output: Path, dtype: str = "float32", quantize: str | None = None
) -> ExportResult:
    """Write the inference-only export of a checkpoint (or a run's best.pt) to `output`."""
    quantize = None if quantize == "none" else quantize
    source = resolve_checkpoint_path(Path(checkpoint_path))
    if output.exists() and output.resolve() == source.resolve():
        raise UsageError(f"export would overwrite its source {source}; choose another -o")
    if output.is_dir():
        raise UsageError(f"-o must name a file, not the directory {output}")
    checkpoint = load_checkpoint(source)
    exported = export_checkpoint(checkpoint, dtype, quantize)
    save_checkpoint(exported, output)
    sizes = source.stat().st_size, output.stat().st_size
    return ExportResult(source, output, *sizes, dtype, quantize, checkpoint.parameters)

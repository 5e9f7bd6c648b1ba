"""`charrnn export`: a model taken anywhere: a checkpoint, a web page or an ONNX graph.

`--format pt` (the default) writes an inference-only copy of a checkpoint, in a smaller dtype or
int8. The file is a normal checkpoint (configuration, vocabulary, weights, progress, corpus) without
the optimizer, random-number or hidden state, so `sample`, `eval`, `info` and `--init-from` read
it through `checkpoint.load_checkpoint` like any other. Weights are turned back into float32 as
they load (see `charrnn.model.quantize` for why). `--format html` writes one web page that runs
the model in a browser (`charrnn.model.web_page`), `--format onnx` a graph for onnxruntime
(`charrnn.model.onnx_graph`); both start from the same inference-only checkpoint, so a page
computes with exactly the weights `sample` reads back from the `.pt` export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn.config import ExportFormat
from charrnn.errors import UsageError, WriteError
from charrnn.model.checkpoint import (
    Checkpoint,
    load_checkpoint,
    resolve_checkpoint_path,
    save_checkpoint,
)
from charrnn.model.quantize import DTYPES, INT8, cast_state, quantize_state
from charrnn.run_dir import BEST_NAME, LAST_NAME

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
    format: str = ExportFormat.PT.value

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
            "format": self.format,
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
    checkpoint_path: Path,
    output: Path,
    dtype: str | None = None,
    quantize: str | None = None,
    format: ExportFormat | str = ExportFormat.PT,
) -> ExportResult:
    """Write a checkpoint (or a run's best.pt, or a built-in model) to `output` in `format`.

    `dtype` and `quantize` None: as the source is stored (float32 for a training checkpoint; an
    export's own, such as the built-in int8 model's), except that a page stores a float32
    source's weights as float16 (`compact_dtype`); `quantize` "none": no int8."""
    export_format = _export_format(format)
    source = resolve_checkpoint_path(Path(checkpoint_path))
    _check_output(Path(output), source)
    checkpoint = load_checkpoint(source)
    if dtype is None:
        dtype = checkpoint.export.get("dtype", "float32")
        dtype = compact_dtype(dtype) if export_format is ExportFormat.HTML else dtype
    if quantize is None:
        quantize = checkpoint.export.get("quantize")
    quantize = None if quantize == "none" else quantize
    exported = export_checkpoint(checkpoint, dtype, quantize)
    if export_format is ExportFormat.PT:
        save_checkpoint(exported, output)
    elif export_format is ExportFormat.HTML:
        from charrnn.model.web_page import write_page

        write_page(exported, model_name(source), output)
    else:
        from charrnn.model.onnx_graph import write_onnx

        write_onnx(exported, output)
    sizes = source.stat().st_size, output.stat().st_size
    parameters = checkpoint.parameters
    return ExportResult(source, output, *sizes, dtype, quantize, parameters, export_format.value)


# A web page is downloaded: float32 weights would make it twice the size for no visible gain
# (float16 keeps ~3 significant digits; the page samples from exactly those values).
PAGE_DTYPE = "float16"


def compact_dtype(source_dtype: str) -> str:
    """The dtype a page stores a source's weights in when no --dtype is given: float16 for a
    float32 source, a 16-bit source's own."""
    return PAGE_DTYPE if source_dtype == "float32" else source_dtype


def _export_format(value: ExportFormat | str) -> ExportFormat:
    """The format named by `value`; a one-line UsageError for any other name."""
    try:
        return ExportFormat(value)
    except ValueError:
        names = ", ".join(f.value for f in ExportFormat)
        raise UsageError(f"unknown export format '{value}'; choose from {names}") from None


def _check_output(output: Path, source: Path) -> None:
    """Refuse, before any work, an output that is the source, a directory or in no directory."""
    if output.exists() and output.resolve() == source.resolve():
        raise UsageError(f"export would overwrite its source {source}; choose another -o")
    if output.is_dir():
        raise UsageError(f"-o must name a file, not the directory {output}")
    if not output.parent.is_dir():
        raise UsageError(f"cannot write {output}: no directory {output.parent}")
    if not os.access(output.parent, os.W_OK):
        raise WriteError(output, f"no permission to write in {output.parent}")


def model_name(source: Path) -> str:
    """A model's name for people: its run directory's name, else its file's stem."""
    if source.name in (BEST_NAME, LAST_NAME):
        return source.parent.resolve().name
    return source.stem

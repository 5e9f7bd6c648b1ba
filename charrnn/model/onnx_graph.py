"""`charrnn export --format onnx`: the network as an ONNX graph, for onnxruntime anywhere.

One graph is both the step graph and the window graph: it takes `ids` (batch, steps) int64 and
the state `h` (layers, batch, hidden) (and `c` for an LSTM), and gives `logits` (batch, steps,
vocab) and the state after the last step (`h_out`, `c_out`). With steps = 1 it is one step of
generation; a longer window reads a whole prime in one call.

Exporter: PyTorch's TorchScript-based one (`dynamo=False`). It writes the recurrent layers as
ONNX's own LSTM / GRU / RNN operators with the window length left free. The dynamo-based exporter
(torch 2.13, with onnxscript) unrolled the layers over the example window, so its graph accepts
only that length (onnxruntime refused a 7-step window from a graph traced with 3), and took about
40 s against 5 s here for a 2-layer model. The vocabulary and the text steps travel in the
graph's metadata (`charrnn`, JSON), so numpy and onnxruntime alone can sample (docs/export.md).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from charrnn.errors import MissingExtraError
from charrnn.model.checkpoint import Checkpoint
from charrnn.model.quantize import dequantize_state
from charrnn.model.web_page import check_cell, training_summary
from charrnn.system.atomic import atomic_write
from charrnn.version import install_hint

ONNX_HINT = f"export --format onnx needs the onnx package: {install_hint('onnx')}"
OPSET = 17
METADATA_KEY = "charrnn"


class WindowGraph(nn.Module):
    """The network with its state as plain tensors in and out, as ONNX wants them."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, ids: Tensor, h: Tensor, c: Tensor | None = None) -> tuple[Tensor, ...]:
        state = h if c is None else (h, c)
        logits, state = self.network(ids, state)
        return (logits, *state) if isinstance(state, tuple) else (logits, state)


def input_names(cell: str) -> list[str]:
    return ["ids", "h", "c"] if cell == "lstm" else ["ids", "h"]


def output_names(cell: str) -> list[str]:
    return ["logits", "h_out", "c_out"] if cell == "lstm" else ["logits", "h_out"]


def graph_metadata(checkpoint: Checkpoint) -> dict[str, Any]:
    """What a sampler needs besides the graph: the vocabulary, the state's shape, text steps."""
    model, data, vocab = checkpoint.config.model, checkpoint.config.data, checkpoint.vocab
    return {
        "cell": model.cell,
        "layers": model.layers,
        "hidden": model.hidden,
        "bytes": vocab.is_bytes,
        "symbols": list(vocab.symbols),
        "unknown": vocab.unknown_id,
        "prep": {"lowercase": data.lowercase, "ascii": data.ascii, "normalize": data.normalize},
        "export": checkpoint.export,
        "summary": training_summary(checkpoint),
    }


def onnx_bytes(checkpoint: Checkpoint) -> bytes:
    """The serialized ONNX model of an inference-only checkpoint, metadata included."""
    try:
        import onnx
    except ImportError:
        raise MissingExtraError(ONNX_HINT) from None
    check_cell(checkpoint, "onnx")
    float_checkpoint = Checkpoint(
        checkpoint.config, checkpoint.vocab, dequantize_state(checkpoint.model_state)
    )
    graph = WindowGraph(float_checkpoint.build_model("cpu")).eval()
    cell, model = checkpoint.config.model.cell, checkpoint.config.model
    state = torch.zeros(model.layers, 1, model.hidden)
    example = (torch.zeros(1, 2, dtype=torch.long), state, state.clone())[: len(input_names(cell))]
    axes = {"ids": {0: "batch", 1: "steps"}, "logits": {0: "batch", 1: "steps"}}
    axes.update({name: {1: "batch"} for name in ("h", "c", "h_out", "c_out")})
    axes = {k: v for k, v in axes.items() if k in input_names(cell) + output_names(cell)}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on RNN batch sizes and its future
        torch.onnx.export(
            graph, example, buffer, dynamo=False, opset_version=OPSET,
            input_names=input_names(cell), output_names=output_names(cell), dynamic_axes=axes,
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(graph_metadata(checkpoint))
    proto.producer_name = "charrnn"
    return proto.SerializeToString()


def write_onnx(checkpoint: Checkpoint, output: Path) -> None:
    """Write the ONNX model to `output` atomically."""
    data = onnx_bytes(checkpoint)
    atomic_write(output, lambda handle: handle.write(data))

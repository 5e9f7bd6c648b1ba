"""`charrnn export --format html`: one web page that runs a model in the browser, offline.

The page is the template in `templates/` (plain HTML and JavaScript, no library, no build step)
with the model filled in: a JSON description (configuration, vocabulary, training summary, where
each tensor lies) and the weights as one block, each tensor in the dtype the export chose
(float32, float16, bfloat16, or int8 with one float32 scale per row). The page turns them into
float32 exactly as `charrnn.model.quantize.dequantize_state` does, so it computes with the same
numbers `sample` and `inspect` read from the `.pt` export.

The block is the bytes themselves, not base64 (a third larger): the page is declared
windows-1252, in which every byte is one character, and the four bytes an HTML parser would
change or end the script at (NUL, CR, "<") or that mark an escape ("=") are written as "=" and
the byte plus 64, as yEnc does. The bytes are first shifted by `SHIFT` so that int8 weights near
zero, the most common, never need an escape: the page is about 1% larger than the weights.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from charrnn.errors import UsageError
from charrnn.model.checkpoint import Checkpoint
from charrnn.system.atomic import atomic_write

PAGE_CELLS = ("lstm", "gru", "rnn")
# The tensor types the page decodes, by torch dtype (little-endian, as every browser's arrays).
_PAGE_DTYPES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int8: "int8",
}
_ALIGN = 4  # a Float32Array view needs its offset in 4-byte steps
_PLACEHOLDER = re.compile(rb"\{\{(TITLE|MODEL_JSON|SCRIPT|WEIGHTS)\}\}")
SHIFT = 150  # int8 values in -40..40 land on 110..190, far from the escaped bytes
_ESCAPED = re.compile(rb"[\x00\x0d<=]")
_SHIFTED = bytes((b + SHIFT) & 0xFF for b in range(256))


def check_cell(checkpoint: Checkpoint, where: str) -> None:
    """Refuse, in one line, a cell that `where` (the page, ONNX) does not implement."""
    cell = checkpoint.config.model.cell
    if cell not in PAGE_CELLS:
        raise UsageError(
            f"export --format {where} supports the cells {', '.join(PAGE_CELLS)}, not '{cell}'"
        )


def pack_tensors(state: dict[str, torch.Tensor]) -> tuple[bytes, list[dict[str, Any]]]:
    """All floating-point and int8 tensors of `state` as one block, and where each one lies."""
    blob, manifest = bytearray(), []
    for name, tensor in state.items():
        if tensor.dtype not in _PAGE_DTYPES:
            continue  # integer bookkeeping, if any: the page has no use for it
        raw = tensor.detach().contiguous().cpu().view(-1)
        data = raw.view(torch.int16).numpy() if tensor.dtype == torch.bfloat16 else raw.numpy()
        manifest.append(
            {
                "name": name,
                "dtype": _PAGE_DTYPES[tensor.dtype],
                "shape": list(tensor.shape),
                "offset": len(blob),
            }
        )
        blob += data.astype(data.dtype.newbyteorder("<")).tobytes()
        blob += bytes(-len(blob) % _ALIGN)
    return bytes(blob), manifest


def training_summary(checkpoint: Checkpoint) -> dict[str, Any]:
    """What the page shows of how the model was made."""
    progress, model = checkpoint.progress, checkpoint.config.model
    return {
        "cell": model.cell,
        "layers": model.layers,
        "hidden": model.hidden,
        "embed": model.embed,
        "steps": progress.get("step"),
        "chars_seen": progress.get("chars_seen"),
        "best_val_loss": progress.get("best_val_loss"),
        "training_seconds": progress.get("elapsed"),
        "corpus": [Path(s).name for s in checkpoint.corpus.get("sources", [])],
    }


def page_model(checkpoint: Checkpoint, name: str, manifest: list[dict[str, Any]]) -> dict:
    """The JSON the page reads: the network's shape, vocabulary, text steps and tensors."""
    model, data = checkpoint.config.model, checkpoint.config.data
    vocab = checkpoint.vocab
    return {
        "name": name,
        "cell": model.cell,
        "nonlinearity": model.nonlinearity,
        "layers": model.layers,
        "hidden": model.hidden,
        "embed": model.embed,
        "parameters": checkpoint.parameters,
        "bytes": vocab.is_bytes,
        "symbols": list(vocab.symbols),
        "unknown": vocab.unknown_id,
        "prep": {
            "lowercase": data.lowercase,
            "ascii": data.ascii,
            "normalize": data.normalize,
        },
        "export": checkpoint.export,
        "summary": training_summary(checkpoint),
        "tensors": manifest,
    }


def _template(name: str) -> str:
    return resources.files("charrnn.model").joinpath("templates", name).read_text("utf-8")


def page_bytes(blob: bytes) -> bytes:
    """`blob` as characters of a windows-1252 script element (see the module's docstring)."""
    return _ESCAPED.sub(lambda m: b"=" + bytes(((m[0][0] + 64) & 0xFF,)), blob.translate(_SHIFTED))


def page_html(checkpoint: Checkpoint, name: str) -> bytes:
    """The whole page for an inference-only checkpoint (as `export_checkpoint` makes it)."""
    check_cell(checkpoint, "html")
    blob, manifest = pack_tensors(checkpoint.model_state)
    described = json.dumps(page_model(checkpoint, name, manifest), ensure_ascii=True)
    ascii_only = {"encoding": "ascii", "errors": "xmlcharrefreplace"}  # é -> &#233;
    parts = {
        b"TITLE": html.escape(f"{name} - charrnn").encode(**ascii_only),
        # "</" may not appear inside a script element; JSON reads "<\/" as "</".
        b"MODEL_JSON": described.replace("</", "<\\/").encode("ascii"),
        b"SCRIPT": _template("page.js").encode("ascii"),
        b"WEIGHTS": page_bytes(blob),
    }
    # One pass: text put in (a name, the weights) is never searched for another placeholder.
    template = _template("page.html").encode("ascii")
    return _PLACEHOLDER.sub(lambda match: parts[match.group(1)], template)


def write_page(checkpoint: Checkpoint, name: str, output: Path) -> None:
    """Write the page to `output` atomically."""
    page = page_html(checkpoint, name)
    atomic_write(output, lambda handle: handle.write(page))

"""charrnn: train, sample and score character-level RNN/LSTM/GRU language models.

The Python API: `charrnn.load(path)` returns a `Model` (`.generate`, `.score`, `.info`) and
`charrnn.train(corpus, **settings)` trains as `charrnn train` does. They are imported on first
use, so `import charrnn` (and the command line's start) does not load torch.

The subpackages, from the bottom up: `system` (atomic files, devices, threads), `text` (reading,
preprocessing, vocabulary, the encoded cache), `model` (the network, checkpoints, exports),
`training` (the loop, its objectives, `--auto`, torchrun), `generation` (sampling, beam search,
interactive sessions) and `analysis` (scoring, metrics, inspection, run history, plots);
`run_dir` names a run directory's files for all of them. Above them `commands` holds one
function per verb, and `cli` and `api` are the two front doors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from charrnn.version import __version__

if TYPE_CHECKING:
    from charrnn.analysis.scoring import TextScore
    from charrnn.api import Model, load, train

__all__ = ["Model", "TextScore", "__version__", "load", "train"]

_LAZY = {
    "Model": "charrnn.api",
    "load": "charrnn.api",
    "train": "charrnn.api",
    "TextScore": "charrnn.analysis.scoring",
}


def __getattr__(name: str) -> Any:
    """`charrnn.load` and the rest of the API, imported when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)

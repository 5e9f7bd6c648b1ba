"""charrnn: train, sample and score character-level RNN/LSTM/GRU language models.

The Python API: `charrnn.load(path)` returns a `Model` (`.generate`, `.score`, `.info`) and
`charrnn.train(corpus, **settings)` trains as `charrnn train` does. They are imported on first
use, so `import charrnn` (and the command line's start) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charrnn.version import __version__

if TYPE_CHECKING:
    from charrnn.api import Model, load, train
    from charrnn.evaluate import TextScore

__all__ = ["Model", "TextScore", "__version__", "load", "train"]

_LAZY = {"Model": "charrnn.api", "load": "charrnn.api", "train": "charrnn.api"}
_LAZY["TextScore"] = "charrnn.evaluate"


def __getattr__(name: str) -> Any:
    """`charrnn.load` and the rest of the API, imported when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)

"""charrnn: train, sample and score character-level RNN/LSTM/GRU language models.

The Python API: `charrnn.load(path)` returns a `Model` (`.generate`, `.score`, `.info`) and
`charrnn.train(corpus, **settings)` trains as `charrnn train` does. They are imported on first
use, so `import charrnn` (and the command line's start) does not load torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from charrnn.version import __version__

if TYPE_CHECKING:
    from charrnn.api import Model, load
    from charrnn.evaluate import TextScore

__all__ = ["Model", "TextScore", "__version__", "load", "train"]

_LAZY = {"Model": "charrnn.api", "load": "charrnn.api", "TextScore": "charrnn.evaluate"}


def __getattr__(name: str) -> Any:
    """`charrnn.load` and the rest of the API, imported when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


class _Package(types.ModuleType):
    """The package, whose `train` is the API's function.

    The training loop is the submodule charrnn/train.py, and importing a submodule sets the
    package attribute of its name; this keeps `charrnn.train` the function all the same. The
    loop stays importable as usual (`from charrnn.train import Trainer`).
    """

    @property
    def train(self) -> Any:
        return importlib.import_module("charrnn.api").train

    @train.setter
    def train(self, submodule: Any) -> None:
        pass  # the import system recording charrnn/train.py: it is in sys.modules already


sys.modules[__name__].__class__ = _Package

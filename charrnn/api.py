"""The Python API, for notebooks and scripts: `charrnn.load` and `charrnn.train`.

It calls the functions the command line calls (`commands.train_or_resume`, `generate`,
`describe_checkpoint`), with the same setting names, so a notebook and `charrnn train` make
the same run from the same settings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from charrnn.analysis.memory import MemoryReport
from charrnn.analysis.scoring import TextScore, score_text
from charrnn.commands import (
    TrainHooks,
    TrainRequest,
    describe_checkpoint,
    memory_of_model,
    train_or_resume,
)
from charrnn.config import DEFAULT_DEVICE, SampleConfig, validate_sample_config
from charrnn.console import ProgressBar
from charrnn.generation.sampling import generate
from charrnn.generation.streams import prime_ids
from charrnn.model.checkpoint import Checkpoint, is_built_in, load_model
from charrnn.model.network import CharRNN
from charrnn.system.device import select_sampling_device
from charrnn.text.preprocess import preprocess_text


class Model:
    """A trained model loaded for use: generate text, score text, and its `info`."""

    def __init__(self, model: CharRNN, checkpoint: Checkpoint, path: Path) -> None:
        self.network, self.checkpoint, self.path = model, checkpoint, path
        self.vocab = checkpoint.vocab

    @property
    def info(self) -> dict[str, Any]:
        """What `charrnn info --json` prints: configuration, vocabulary, size and progress."""
        return describe_checkpoint(self.checkpoint, self.network, is_built_in(self.path))

    def __repr__(self) -> str:
        m = self.checkpoint.config.model
        return f"<charrnn.Model {self.path}: {m.cell} {m.layers}x{m.hidden}>"

    def generate(self, prime: str = "", **sample_options: Any) -> Iterator[str]:
        """Yield the text as it is generated, in chunks: first the prime, then new characters.

        `sample_options` are the `charrnn sample` options (`length`, `temperature`, `top_k`,
        `top_p`, `greedy`, `seed`, `stop`, `unknown`); one sample at a time (`num_samples` 1).
        """
        config = replace(SampleConfig(), **sample_options)
        if config.num_samples != 1:
            raise TypeError("generate yields one sample; call it once per sample")
        validate_sample_config(config)
        prime = preprocess_text(prime, self.checkpoint.config.data)  # as the corpus was read
        prime_ids(self.vocab, prime, config.unknown)  # an unknown character fails here, at once
        return (piece for _, piece in generate(self.network, self.vocab, prime, config))

    def sample(self, prime: str = "", **sample_options: Any) -> str:
        """The whole text `generate` yields, as one string."""
        return "".join(self.generate(prime, **sample_options))

    def score(self, text: str) -> TextScore:
        """Loss (nats/char), bits per character and the loss of every character of `text`."""
        text = preprocess_text(text, self.checkpoint.config.data)  # as the corpus was read
        return score_text(self.network, self.vocab, text)

    def memory(self, text: str | None = None, **sizes: Any) -> MemoryReport:
        """How far back the model remembers, on `text` or (None) the validation split of its
        corpus: the loss seeing only the last k characters and the effective context, the
        gradient's decay with distance and the gates' timescales (docs/memory.md). `sizes`:
        `max_context` (1024), `max_lag` (512), `positions` (512), `gradient_positions` (128),
        `seed` (0)."""
        return memory_of_model(self.network, self.checkpoint, self.path, text, **sizes)


def load(path: str | Path, device: str = DEFAULT_DEVICE) -> Model:
    """The model in a checkpoint file, a run directory (its best.pt), or a built-in model
    (`load("shakespeare")`: the starter model in the package).

    `device`: as for `charrnn sample`, auto means the CPU.
    """
    network, checkpoint = load_model(Path(path), select_sampling_device(device))
    return Model(network, checkpoint, Path(path))


def train(
    corpus: str | Path | Sequence[str | Path] | None = None,
    *,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    preset: str | None = None,
    config: str | Path | None = None,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
    **settings: Any,
) -> Path:
    """Train as `charrnn train` does and return the run directory.

    `corpus`: a path, a glob or a list of them; `settings` are the options of `charrnn train`
    with underscores (`hidden=128`, `max_time="10m"`). `resume=RUN_DIR` continues a run
    (`max_steps=...` extends it). `quiet=False` shows the progress view on stderr.
    """
    specs = [corpus] if isinstance(corpus, str | Path) else list(corpus or [])
    bar = ProgressBar(disable=quiet)
    try:
        request = TrainRequest(
            [str(s) for s in specs],
            settings,
            resume=_path(resume),
            init_from=_path(init_from),
            preset=preset,
            config_file=_path(config),
            out=_path(out),
            cache_dir=_path(cache_dir),
        )
        hooks = TrainHooks(reporter=bar, on_preview=None if quiet else bar.preview)
        outcome = train_or_resume(request, hooks)
    finally:
        bar.close()
    return outcome.run_dir


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)

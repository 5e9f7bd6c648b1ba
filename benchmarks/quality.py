"""quality: validation loss of the default preset after a timed `charrnn train`, against
reference runs from the issue."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Bench, Row, charrnn_args, last_json_line, log, run_child
from benchmarks.corpus import SHAKESPEARE, corpus_text

REFERENCE_HAND_TUNED = 1.504  # 1-layer LSTM tuned by hand, 90 s on this machine (the issue)
REFERENCE_NANOGPT = 1.886  # nanoGPT's CPU recipe, 93 s (the issue)
TARGET = 1.48  # val loss, nats/char


@dataclass(frozen=True)
class Sizes:
    time: str  # charrnn train --max-time
    corpus_chars: int | None  # None: tiny shakespeare itself


FULL = Sizes(time="90s", corpus_chars=None)
QUICK = Sizes(time="3s", corpus_chars=30_000)


def quality_corpus(chars: int | None, folder: Path) -> Path:
    """Tiny shakespeare itself, or (its first `chars`, or when it is missing) a generated text."""
    if chars is None and SHAKESPEARE.is_file():
        return SHAKESPEARE
    path = folder / "corpus.txt"
    path.write_text(corpus_text()[: chars or 1_000_000], encoding="utf-8")
    return path


def measure(bench: Bench) -> None:
    """Rows: validation loss of the default preset after a timed run, against the references."""
    sizes = bench.pick(FULL, QUICK)
    folder = bench.scratch("quality")
    corpus, run_dir = quality_corpus(sizes.corpus_chars, folder), folder / "run"
    log(f"quality: training the default preset for {sizes.time} on {corpus.name}")
    train = run_child(
        charrnn_args("train", str(corpus), "--max-time", sizes.time, "--out", str(run_dir), "-q")
    )
    bench.cache["quality_run"] = run_dir  # the export and distill sections reuse the model
    answer = run_child(charrnn_args("eval", "--checkpoint", str(run_dir), "--json"))
    loss = float(last_json_line(answer.stdout)["loss"])
    judged = not bench.quick and corpus == SHAKESPEARE
    target = f"<= {TARGET}" if judged else "skipped (quick or no corpus)"
    figure = f"val loss, default preset, {sizes.time} on {corpus.name} (nats/char)"
    numbers = {"val_loss": loss, "train_seconds": train.seconds}
    for reference, name, target_text, passed in (
        (
            REFERENCE_HAND_TUNED,
            "1-layer LSTM by hand, 90 s",
            target,
            loss <= TARGET if judged else None,
        ),
        (REFERENCE_NANOGPT, "nanoGPT CPU recipe, 93 s", "", None),
    ):
        bench.add(
            Row(
                "quality",
                figure,
                f"{loss:.3f}",
                f"{reference} ({name})",
                loss / reference,
                target_text,
                passed,
                numbers,
            )
        )

"""Preprocessing text before it meets a vocabulary: control codes, normalisation, case, ASCII.

One pipeline, `preprocess_text`, is applied to the training corpus and, from the checkpoint's
`DataConfig`, to everything that later reaches the model (primes, prime files, eval files), so a
model only ever reads text prepared the way its corpus was. The steps run in a fixed order,
each idempotent, and the whole pipeline too: controls out, the Unicode form, ASCII folding,
lower case, and the Unicode form once more (lowering can leave text outside NFC/NFKC, and
folding before lowering keeps an 'H' that NFKD makes of a symbol from staying upper case).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from charrnn.config import DataConfig

# The symbol rare and unseen characters become under --min-char-count: Unicode's own
# "a character that could not be represented" (a corpus's own U+FFFD joins it).
UNKNOWN_SYMBOL = 0xFFFD

# ANSI/VT escape sequences: CSI (colours, cursor moves), OSC (window titles, links, ended by
# BEL or ESC \) and the two-character escapes. What is left of a broken one goes with the
# control characters.
_ANSI_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x9b[0-?]*[ -/]*[@-~]"  # CSI as one C1 character
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    r"|\x1b[@-Z\\-_]"
)
# Unicode category Cc (C0, DEL, C1) except newline and tab. A regex, not str.translate: on text
# that is not pure ASCII, translate runs about 60x slower (benchmarks/RESULTS.md, textprep).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Longest tail held back while reading in chunks: steps read whole lines, a line longer than
# this is cut (only normalisation across the cut could differ).
MAX_CARRY = 1 << 22


def preprocessing_on(config: DataConfig) -> bool:
    """True when any step changes text (`--min-char-count` works on the vocabulary instead)."""
    return config.lowercase or config.ascii or config.strip_control or config.normalize != "none"


def preprocessing_key(config: DataConfig) -> str:
    """What the text steps and the vocabulary cut depend on, for the corpus cache key;
    empty with every option off, so existing caches keep their keys."""
    if not preprocessing_on(config) and config.min_char_count == 0:
        return ""
    return (
        f"|lower={config.lowercase}|ascii={config.ascii}|normalize={config.normalize}"
        f"|strip={config.strip_control}|min={config.min_char_count}"
    )


def strip_control(text: str) -> str:
    """`text` without ANSI escape sequences and control characters other than newline and tab."""
    if "\x1b" in text or "\x9b" in text:
        text = _ANSI_ESCAPE.sub("", text)
    return _CONTROLS.sub("", text)


def _is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


def fold_ascii(text: str) -> tuple[str, int]:
    """`text` folded to ASCII by Unicode decomposition ('é' -> 'e', 'ﬁ' -> 'fi'), and how many
    characters had no ASCII form and were dropped (combining accents are folded, not counted)."""
    if text.isascii():
        return text, 0
    decomposed = unicodedata.normalize("NFKD", text)
    points = np.frombuffer(decomposed.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    leftovers, counts = np.unique(points[points > 0x7F], return_counts=True)
    marks = np.array([_is_mark(chr(point)) for point in leftovers.tolist()], dtype=bool)
    dropped = int(counts[~marks].sum()) if counts.size else 0
    return decomposed.encode("ascii", "ignore").decode("ascii"), dropped


def preprocess_counted(text: str, config: DataConfig) -> tuple[str, int]:
    """`text` through the configured steps, and how many characters `--ascii` dropped."""
    if config.strip_control:
        text = strip_control(text)
    form = config.normalize.upper()
    if form != "NONE":
        text = unicodedata.normalize(form, text)
    dropped = 0
    if config.ascii:
        text, dropped = fold_ascii(text)
    if config.lowercase:
        text = text.lower()
        if form != "NONE" and not text.isascii():
            text = unicodedata.normalize(form, text)
    return text, dropped


def preprocess_text(text: str, config: DataConfig) -> str:
    """`text` as a model trained with `config` reads it: the one function every reader of text
    (corpus, primes, eval files, inspection, interactive input) calls."""
    if not preprocessing_on(config):
        return text
    return preprocess_counted(text, config)[0]


@dataclass
class PrepTally:
    """What preprocessing removed while a corpus was read."""

    ascii_dropped: int = 0


def preprocess_chunks(
    chunks: Iterable[str], config: DataConfig, tally: PrepTally | None = None
) -> Iterator[str]:
    """`preprocess_text` over a file read in chunks, cut at line ends so that no step sees half
    of an escape sequence or an accented letter; `tally` counts what `--ascii` dropped."""
    if not preprocessing_on(config):
        yield from chunks
        return
    carry = ""
    for chunk in chunks:
        text = carry + chunk
        cut = text.rfind("\n") + 1
        if cut == 0 and len(text) < MAX_CARRY:
            carry = text
            continue
        if cut == 0:
            cut = len(text)
        carry = text[cut:]
        done = _counted(text[:cut], config, tally)
        if done:
            yield done
    if carry:
        done = _counted(carry, config, tally)
        if done:
            yield done


def _counted(text: str, config: DataConfig, tally: PrepTally | None) -> str:
    out, dropped = preprocess_counted(text, config)
    if tally is not None:
        tally.ascii_dropped += dropped
    return out

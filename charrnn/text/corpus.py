"""Corpora to integer arrays: vocabulary, reading, encoding with a cache, splits and batches.

A corpus is encoded once into a compact array (uint8/uint16/uint32 by vocabulary size), written
as a ``.npy`` file keyed by the corpus contents and memory-mapped afterwards, so training starts
fast on any corpus size and never holds the text as Python objects.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import glob
import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from charrnn.config import DataConfig
from charrnn.errors import CorpusError, UsageError, WriteError
from charrnn.system.atomic import atomic_write, atomic_write_text
from charrnn.system.digest import file_sha256
from charrnn.text.preprocess import (
    UNKNOWN_SYMBOL,
    PrepTally,
    preprocess_chunks,
    preprocessing_key,
    preprocessing_on,
)

CACHE_FORMAT = 1
CHUNK_CHARS = 1 << 22  # characters decoded per read; bounds the memory of preprocessing
UNICODE_LIMIT = 0x110000
_SNIFF_BYTES = 8192
_GLOB_CHARS = set("*?[")
BOM = "\ufeff"  # a byte-order mark, as decoded
_BOM_CODECS = {"utf-8-sig", "utf-16", "utf-32"}  # codecs whose decoders drop the mark themselves


@dataclass(frozen=True)
class Vocab:
    """The sorted symbols a model knows: Unicode code points, or byte values with `is_bytes`.

    `unknown`: the symbol that stands for every character outside the vocabulary
    (`--min-char-count`); None, and such characters are errors or dropped.
    """

    symbols: tuple[int, ...]
    is_bytes: bool = False
    unknown: int | None = None

    @property
    def size(self) -> int:
        return len(self.symbols)

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        return id_dtype(self.size)

    def lookup_table(self) -> np.ndarray:
        """Array mapping symbol -> id + 1 (0 marks symbols outside the vocabulary; with an
        `unknown` symbol there are none: they map to its id)."""
        table = np.zeros(256 if self.is_bytes else UNICODE_LIMIT, dtype=np.uint32)
        if self.unknown is not None:
            table[:] = self.unknown_id + 1
        table[np.asarray(self.symbols, dtype=np.int64)] = np.arange(1, self.size + 1)
        return table

    @functools.cached_property
    def _table(self) -> np.ndarray:
        return self.lookup_table()

    def known_ids(self, points: np.ndarray, dtype: Any = np.int64) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the symbols `points` (code points or bytes) the vocabulary knows, and
        which of `points` those are (a bool mask): the one symbol-to-id lookup."""
        plus_one = self._table[np.asarray(points)]
        known = plus_one > 0
        return (plus_one[known] - 1).astype(dtype), known

    def label(self, index: int) -> str:
        """How id `index` is named in a table: `symbol_label`, the unknown symbol as <unk>."""
        symbol = self.symbols[index]
        if self.unknown is not None and symbol == self.unknown:
            return "<unk>"
        return symbol_label(symbol, self.is_bytes)

    def glyph(self, index: int) -> str:
        """How id `index` is shown within text: `symbol_glyph`."""
        return symbol_glyph(self.symbols[index], self.is_bytes)

    @property
    def unknown_id(self) -> int | None:
        """The id of the `unknown` symbol, or None."""
        return None if self.unknown is None else self.symbols.index(self.unknown)

    def encode(self, text: str) -> np.ndarray:
        """Ids of `text`; raises `UsageError` listing symbols the vocabulary lacks."""
        ids, unknown = self.encode_known(text)
        if unknown:
            raise UsageError(f"characters not in the model's vocabulary: {format_symbols(unknown)}")
        return ids

    def encode_known(self, text: str) -> tuple[np.ndarray, list[str]]:
        """Ids of the known symbols of `text`, and the distinct unknown ones (in order seen)."""
        points = symbols_of(text, self.is_bytes)
        ids, known = self.known_ids(points)
        unknown_points = dict.fromkeys(points[~known].tolist())
        return ids, [symbol_label(p, self.is_bytes) for p in unknown_points]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids` (bytes are decoded as UTF-8 with replacement)."""
        symbols = [self.symbols[i] for i in np.asarray(ids).tolist()]
        if self.is_bytes:
            return bytes(symbols).decode("utf-8", errors="replace")
        return "".join(map(chr, symbols))

    def to_dict(self) -> dict:
        plain = {"symbols": list(self.symbols), "is_bytes": self.is_bytes}
        return plain if self.unknown is None else {**plain, "unknown": self.unknown}

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        unknown = data.get("unknown")
        symbols = tuple(int(s) for s in data["symbols"])
        if unknown is not None and int(unknown) not in symbols:
            raise ValueError(f"unknown symbol {unknown} is not in the vocabulary")
        return cls(symbols, bool(data["is_bytes"]), None if unknown is None else int(unknown))

    def remap(self, ids: np.ndarray, target: Vocab) -> np.ndarray:
        """`ids` of this vocabulary as ids of `target`, which must hold all its symbols."""
        mapping, _ = target.known_ids(np.asarray(self.symbols, dtype=np.int64), target.dtype)
        return mapping[np.asarray(ids)]

    def extended_with(self, other: Vocab) -> Vocab:
        """This vocabulary with the symbols of `other` it lacks appended (ids stay stable)."""
        have = set(self.symbols)
        added = tuple(s for s in other.symbols if s not in have)
        return Vocab(self.symbols + added, self.is_bytes, self.unknown)


def id_dtype(vocab_size: int) -> np.dtype:
    """uint8, uint16 or uint32: the smallest that holds `vocab_size` ids."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def symbols_of(text: str | bytes, is_bytes: bool) -> np.ndarray:
    """Code points (or byte values) of `text` as an integer array, without Python loops."""
    if is_bytes:
        raw = text if isinstance(text, bytes) else text.encode("utf-8")
        return np.frombuffer(raw, dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")


def symbol_label(point: int, is_bytes: bool) -> str:
    """A symbol named in a message or a table: the character, or a byte as 0x.."""
    return f"0x{point:02x}" if is_bytes else chr(point)


def symbol_glyph(point: int, is_bytes: bool, printable: bool = False) -> str:
    """A symbol within shown text, one character wide: the character, or for a byte above ASCII
    (a piece of a UTF-8 character) a middle dot; `printable`: any other unprintable one but the
    newline also a middle dot."""
    text = "\u00b7" if is_bytes and point >= 0x80 else chr(point)
    return text if not printable or text == "\n" or text.isprintable() else "\u00b7"


def format_symbols(symbols: Sequence[str], limit: int = 20) -> str:
    """Readable list of symbols, e.g. ``'é' (U+00E9), '\\t' (U+0009)``."""
    shown = [f"{s!r}" if len(s) != 1 else f"{s!r} (U+{ord(s):04X})" for s in list(symbols)[:limit]]
    more = f" and {len(symbols) - limit} more" if len(symbols) > limit else ""
    return ", ".join(shown) + more


# ----------------------------------------------------------------------------- reading files


def _looks_like_text(path: Path) -> bool:
    with path.open("rb") as handle:
        return b"\x00" not in handle.read(_SNIFF_BYTES)


def _directory_files(directory: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if not name.startswith(".") and path.is_file() and _looks_like_text(path):
                found.append(path)
    return sorted(found)


def resolve_corpus_paths(specs: Sequence[str | Path]) -> list[Path]:
    """Files named by `specs`: files as given, directories' text files sorted, globs expanded."""
    if not specs:
        raise UsageError("no corpus given")
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            paths.append(path)
        elif path.is_dir():
            found = _directory_files(path)
            if not found:
                raise UsageError(f"no text files in directory {path}")
            paths.extend(found)
        elif _GLOB_CHARS & set(str(spec)):
            matches = sorted(Path(m) for m in glob.glob(str(spec), recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                raise UsageError(f"no files match {spec}")
            paths.extend(files)
        else:
            raise UsageError(f"corpus not found: {spec}")
    return paths


def _decode_error_offset(path: Path, encoding: str) -> tuple[int, str]:
    """Byte offset and reason of the first undecodable byte of `path`."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    consumed = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return consumed - pending + exc.start, exc.reason
            consumed += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            return consumed - len(decoder.getstate()[0]) + exc.start, exc.reason
    return consumed, "undecodable input"


def _text_codec(encoding: str) -> codecs.CodecInfo:
    """The codec for `encoding`; a `UsageError` for unknown names and non-text codecs."""
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError):  # ValueError: a name with NUL or unencodable characters
        raise UsageError(f"unknown encoding '{encoding}'") from None
    if not getattr(info, "_is_text_encoding", True):  # e.g. base64
        raise UsageError(f"unknown encoding '{encoding}': not a text encoding")
    return info


def _strips_bom(encoding: str) -> bool:
    """True when reading with `encoding` drops a leading U+FEFF itself (the others' decoders
    already consume the byte-order mark: utf-8-sig, utf-16, utf-32)."""
    return _text_codec(encoding).name not in _BOM_CODECS


def starts_with_bom(path: Path, encoding: str) -> bool:
    """True when the text of `path` begins with a byte-order mark that reading drops."""
    if not _strips_bom(encoding):
        return False
    with path.open("rb") as handle:
        head = handle.read(16)
    return _text_codec(encoding).incrementaldecoder("replace").decode(head).startswith(BOM)


def read_text_chunks(path: Path, encoding: str, chunk_bytes: int = CHUNK_CHARS) -> Iterator[str]:
    """Decoded text of `path` in pieces, with CRLF and CR line ends turned into LF and a
    leading byte-order mark dropped (as utf-8-sig does: editors write one, no text has it)."""
    decoder = _text_codec(encoding).incrementaldecoder("strict")
    carry = ""  # a final "\r" waits for the next block: it may be half of a "\r\n"
    at_start = _strips_bom(encoding)
    try:
        with path.open("rb") as handle:
            while True:
                block = handle.read(chunk_bytes)
                decoded = decoder.decode(block, final=not block)
                if at_start and decoded:
                    decoded, at_start = decoded.removeprefix(BOM), False
                text = carry + decoded
                carry = ""
                if block and text.endswith("\r"):
                    text, carry = text[:-1], "\r"
                if "\r" in text:
                    text = text.replace("\r\n", "\n").replace("\r", "\n")
                if text:
                    yield text
                if not block:
                    return
    except UnicodeDecodeError:
        offset, reason = _decode_error_offset(path, encoding)
        raise CorpusError(
            f"{path}: not valid {encoding} at byte {offset} ({reason}); "
            "pass --encoding NAME for another text encoding, or --bytes to model raw bytes"
        ) from None
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_byte_chunks(path: Path, chunk_bytes: int = CHUNK_CHARS) -> Iterator[bytes]:
    """Raw bytes of `path` in pieces."""
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(chunk_bytes):
                yield chunk
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None


def corpus_symbol_chunks(
    paths: Sequence[Path], config: DataConfig, tally: PrepTally | None = None
) -> Iterator[np.ndarray]:
    """Symbol arrays of all files in order, preprocessed as `config` says (`tally` counts what
    that dropped); a newline joins text files that lack a final one."""
    newline = np.array([ord("\n")], dtype=np.uint32)
    for index, path in enumerate(paths):
        last = None
        if config.bytes:
            for block in read_byte_chunks(path):
                yield symbols_of(block, True)
            continue
        for chunk in preprocess_chunks(read_text_chunks(path, config.encoding), config, tally):
            last = chunk[-1]
            yield symbols_of(chunk, False)
        if index + 1 < len(paths) and last is not None and last != "\n":
            yield newline


# ----------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class SourceFile:
    """One corpus file as it was read: its path, size in bytes, SHA-256 and leading BOM."""

    path: str
    size: int
    sha256: str
    bom: bool = False  # a byte-order mark that reading dropped

    def to_dict(self) -> dict:
        return {"path": self.path, "bytes": self.size, "sha256": self.sha256}


def source_file(path: Path, config: DataConfig) -> SourceFile:
    """Size and SHA-256 of `path`, and whether reading it under `config` drops a BOM."""
    try:
        sha256, size = file_sha256(path)
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None
    bom = not config.bytes and size > 0 and starts_with_bom(path, config.encoding)
    return SourceFile(str(path), size, sha256, bom)


@dataclass(frozen=True)
class Corpus:
    """An encoded corpus: its vocabulary and ids (memory-mapped from the cache)."""

    vocab: Vocab
    ids: np.ndarray
    cache_path: Path
    sources: tuple[str, ...]
    cached: bool  # True when the cache already held it
    key: str = ""  # the cache key: names the encoded copy in the cache
    files: tuple[SourceFile, ...] = ()  # the files as read (empty when only the copy was read)
    prep: PrepStats = field(default_factory=lambda: PrepStats(0))

    @property
    def n_chars(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class PrepStats:
    """What preprocessing did to a corpus: the vocabulary before `--min-char-count` cut it,
    the characters that became the unknown symbol, and those `--ascii` dropped."""

    vocab_before: int
    unknown_chars: int = 0
    ascii_dropped: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrepStats:
        return cls(**{f.name: int(data[f.name]) for f in dataclasses.fields(cls)})


def prep_report(corpus: Corpus) -> dict[str, Any]:
    """The vocabulary before and after preprocessing and the share of text now unknown."""
    return {
        "vocab_before": corpus.prep.vocab_before or corpus.vocab.size,
        "vocab_after": corpus.vocab.size,
        "unknown_chars": corpus.prep.unknown_chars,
        "unknown_share": corpus.prep.unknown_chars / corpus.n_chars if corpus.n_chars else 0.0,
        "ascii_dropped": corpus.prep.ascii_dropped,
    }


def corpus_key(files: Sequence[SourceFile], config: DataConfig) -> str:
    """Hex digest of the files' contents, their order and how they are decoded."""
    digest = hashlib.sha256(f"charrnn-corpus-{CACHE_FORMAT}".encode())
    digest.update(f"{config.encoding}|{config.bytes}|{len(files)}".encode())
    digest.update(preprocessing_key(config).encode())  # empty with every option off
    for file in files:
        digest.update(bytes.fromhex(file.sha256))
        if file.bom:  # the text without it differs from what caches before the BOM rule hold
            digest.update(b"|bom-dropped")
    return digest.hexdigest()


def _count_symbols(
    paths: Sequence[Path], config: DataConfig, tally: PrepTally | None = None
) -> np.ndarray:
    counts = np.zeros(256 if config.bytes else UNICODE_LIMIT, dtype=np.int64)
    for chunk in corpus_symbol_chunks(paths, config, tally):
        if chunk.shape[0]:
            chunk_counts = np.bincount(chunk)  # only as long as the chunk's largest symbol
            counts[: chunk_counts.shape[0]] += chunk_counts
    return counts


def _encode_to_file(
    paths: Sequence[Path], config: DataConfig, vocab: Vocab, n_symbols: int, target: Path
) -> None:
    """Write the ids as a .npy file chunk by chunk (plain writes: no pages held in memory)."""
    table = (vocab.lookup_table() - 1).astype(vocab.dtype, copy=False)
    header = {
        "descr": np.lib.format.dtype_to_descr(vocab.dtype),
        "fortran_order": False,
        "shape": (n_symbols,),
    }

    def write(handle: IO[bytes]) -> None:
        np.lib.format.write_array_header_1_0(handle, header)
        written = 0
        for chunk in corpus_symbol_chunks(paths, config):
            handle.write(table[chunk].tobytes())
            written += chunk.shape[0]
        if written != n_symbols:  # a file changed between the two passes
            raise CorpusError("the corpus changed while it was being read; run again")

    atomic_write(target, write)


def _load_cached(npy: Path, meta: Path) -> tuple[Vocab, np.ndarray, PrepStats] | None:
    if not (npy.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text("utf-8"))
        ids = np.load(npy, mmap_mode="r")
        if info.get("format") != CACHE_FORMAT or ids.shape[0] != info["n_chars"]:
            return None
        vocab = Vocab.from_dict(info["vocab"])
        prep = PrepStats.from_dict(info["prep"]) if "prep" in info else PrepStats(vocab.size)
        return vocab, ids, prep
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cache_files(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"corpus-{key}.npy", cache_dir / f"corpus-{key}.json"


def load_cached_corpus(key: str, cache_dir: Path, sources: Sequence[str]) -> Corpus | None:
    """The encoded corpus cached under `key` in `cache_dir`, or None when it is not there."""
    npy, meta = _cache_files(cache_dir, key)
    hit = _load_cached(npy, meta)
    if hit is None:
        return None
    vocab, ids, prep = hit
    return Corpus(vocab, ids, npy, tuple(sources), cached=True, key=key, prep=prep)


def check_preprocessing(config: DataConfig) -> None:
    """Raise `UsageError` for preprocessing asked of a byte-level corpus."""
    if config.bytes and (preprocessing_on(config) or config.min_char_count):
        raise UsageError(
            "--lowercase, --ascii, --normalize, --strip-control and --min-char-count work on "
            "characters; drop them or --bytes"
        )


def build_vocab(counts: np.ndarray, config: DataConfig) -> tuple[Vocab, PrepStats]:
    """The vocabulary of symbol `counts`: all that occur, or with `min_char_count` those seen
    that often plus the unknown symbol that stands for the rest."""
    present = counts > 0
    before = int(present.sum())
    if not config.min_char_count:
        return Vocab(tuple(np.flatnonzero(present).tolist()), config.bytes), PrepStats(before)
    kept = counts >= config.min_char_count
    if not kept.any():
        raise CorpusError(
            f"--min-char-count {config.min_char_count} keeps no character of the corpus "
            f"(the most frequent occurs {int(counts.max()):,} times)"
        )
    kept[UNKNOWN_SYMBOL] = True
    unknown_chars = int(counts[~kept].sum() + counts[UNKNOWN_SYMBOL])
    vocab = Vocab(tuple(np.flatnonzero(kept).tolist()), False, UNKNOWN_SYMBOL)
    return vocab, PrepStats(before, unknown_chars)


def prepare_corpus(specs: Sequence[str | Path], config: DataConfig, cache_dir: Path) -> Corpus:
    """Read, build the vocabulary, encode and cache a corpus; reuse the cache when it matches."""
    check_preprocessing(config)
    paths = resolve_corpus_paths(specs)
    files = tuple(source_file(p, config) for p in paths)
    key = corpus_key(files, config)[:20]
    npy, meta = _cache_files(cache_dir, key)
    sources = [str(p) for p in paths]
    hit = load_cached_corpus(key, cache_dir, sources)
    if hit is not None:
        return dataclasses.replace(hit, files=files)
    tally = PrepTally()
    counts = _count_symbols(paths, config, tally)
    n_symbols = int(counts.sum())
    if n_symbols == 0:
        raise CorpusError(f"the corpus is empty: {', '.join(sources)}")
    vocab, prep = build_vocab(counts, config)
    prep = dataclasses.replace(prep, ascii_dropped=tally.ascii_dropped)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _encode_to_file(paths, config, vocab, n_symbols, npy)
        info = {
            "format": CACHE_FORMAT,
            "n_chars": n_symbols,
            "vocab": vocab.to_dict(),
            "sources": sources,
            "config": dataclasses.asdict(config),
            "prep": prep.to_dict(),
        }
        atomic_write_text(meta, json.dumps(info))
    except OSError as exc:  # creating the cache directory
        raise CorpusError(f"cannot write the corpus cache in {cache_dir}: {exc}") from None
    except WriteError as exc:
        npy.unlink(missing_ok=True)  # without its description the array is never read: free it
        raise CorpusError(f"cannot write the corpus cache in {cache_dir}: {exc.reason}") from None
    ids = np.load(npy, mmap_mode="r")
    return Corpus(vocab, ids, npy, tuple(sources), cached=False, key=key, files=files, prep=prep)


def encode_text_file(
    path: Path, vocab: Vocab, encoding: str, data_config: DataConfig | None = None
) -> tuple[np.ndarray, int]:
    """Ids of a file under an existing vocabulary, preprocessed as `data_config` (the model's)
    says, and how many symbols it lacked (dropped; none where the vocabulary has `unknown`)."""
    base = data_config or DataConfig()
    config = dataclasses.replace(base, encoding=encoding, bytes=vocab.is_bytes)
    pieces, unknown = [], 0
    for chunk in corpus_symbol_chunks([path], config):
        ids, _ = vocab.known_ids(chunk, vocab.dtype)
        unknown += int(chunk.shape[0] - ids.shape[0])
        pieces.append(ids)
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=vocab.dtype)
    return ids, unknown


# ----------------------------------------------------------------------------- splits and batches


def split_train_val(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """First (1 - val_frac) for training, the rest for validation (the nanoGPT split)."""
    n_train = int(ids.shape[0] * (1.0 - val_frac))
    train, val = ids[:n_train], ids[n_train:]
    if train.shape[0] < 2:
        raise CorpusError(
            f"val_frac {val_frac} leaves {train.shape[0]} training characters; "
            "use a longer corpus or a smaller --val-frac"
        )
    if val.shape[0] < 2:
        raise CorpusError(
            f"val_frac {val_frac} leaves {val.shape[0]} validation characters (need 2); "
            "use a longer corpus or a larger --val-frac"
        )
    return train, val


def fit_batch_shape(n_train: int, batch_size: int, seq_len: int) -> tuple[int, int, str | None]:
    """Batch size and window that fit `n_train` characters, and a warning when they shrank."""
    usable = n_train - 1  # the last character is only ever a target
    if batch_size * seq_len <= usable:
        return batch_size, seq_len, None
    fitted_batch = max(1, usable // seq_len)
    fitted_len = min(seq_len, usable // fitted_batch)
    warning = (
        f"the training text ({n_train} characters) is shorter than one batch of "
        f"{batch_size} x {seq_len}; using batch_size {fitted_batch} and seq_len {fitted_len}"
    )
    return fitted_batch, fitted_len, warning


class StreamBatches:
    """B contiguous streams over the training ids, read in windows of T (truncated BPTT).

    Step k of an epoch reads columns [k*T, (k+1)*T) of every stream, so the hidden state of
    stream b carries over from one window to the next. Positions are a function of the global
    step alone, which makes resuming exact.

    `part` (index, count) keeps only that contiguous share of the B streams, for one rank of a
    data-parallel job: the streams are laid out as for the whole batch, so the ranks together
    read exactly what one process with batch B reads.
    """

    def __init__(
        self, ids: np.ndarray, batch_size: int, seq_len: int, part: tuple[int, int] = (0, 1)
    ) -> None:
        self.batch_size, self.seq_len = batch_size, seq_len
        self.stream_len = (ids.shape[0] - 1) // batch_size
        if self.stream_len < seq_len:
            raise CorpusError(f"{ids.shape[0]} characters cannot fill {batch_size} x {seq_len}")
        index, count = part
        share = batch_size // count
        self.rows = slice(index * share, (index + 1) * share)  # the streams this share reads
        span = batch_size * self.stream_len
        self.inputs = ids[:span].reshape(batch_size, self.stream_len)[self.rows]
        self.targets = ids[1 : span + 1].reshape(batch_size, self.stream_len)[self.rows]
        self.steps_per_epoch = self.stream_len // seq_len

    @property
    def chars_per_step(self) -> int:
        """Characters one step trains on, over all B streams (every share of them)."""
        return self.batch_size * self.seq_len

    def starts_epoch(self, step: int) -> bool:
        """True when `step` is the first window of an epoch (the hidden state resets there)."""
        return step % self.steps_per_epoch == 0

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (B, T) as int64 for global optimiser step `step`."""
        start = (step % self.steps_per_epoch) * self.seq_len
        window = slice(start, start + self.seq_len)
        return (
            self.inputs[:, window].astype(np.int64),
            self.targets[:, window].astype(np.int64),
        )


IGNORE_INDEX = -100


def eval_windows(
    ids: np.ndarray, streams: int, width: int, part: tuple[int, int] = (0, 1)
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Inputs and targets (S, <= width), window by window, scoring every next-character
    prediction of `ids` exactly once.

    The predictions are cut into S contiguous streams of equal length (the state carries from
    one window to the next within a stream); the last stream is padded with targets of
    IGNORE_INDEX. Windows are cut from `ids` as they are needed, so a memory-mapped validation
    split larger than memory is never loaded whole. `part` (index, count) yields only that
    contiguous share of the S streams (none, when S < count leaves it empty): the shares of one
    data-parallel evaluation together score every prediction once, as S streams would.
    """
    predictions = ids.shape[0] - 1
    if predictions < 1:
        return
    count = min(streams, predictions)
    length = math.ceil(predictions / count)
    index, parts = part
    mine = range(count * index // parts, count * (index + 1) // parts)
    if not mine:
        return
    for start in range(0, length, width):
        stop = min(start + width, length)
        inputs = np.zeros((len(mine), stop - start), dtype=np.int64)
        targets = np.full((len(mine), stop - start), IGNORE_INDEX, dtype=np.int64)
        for row, stream in enumerate(mine):
            first = stream * length + start
            last = min(stream * length + stop, predictions)
            if last > first:
                inputs[row, : last - first] = ids[first:last]
                targets[row, : last - first] = ids[first + 1 : last + 1]
        yield inputs, targets

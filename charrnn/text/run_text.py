"""The exact text a run trains on: how its checkpoints record it and how resume and eval find it.

A checkpoint records the key of the encoded corpus in the cache, the cache directory and each
source file's size and SHA-256. `--resume` and `eval` read the cached copy under that key,
whatever happened to the source files since, so a corpus edited (or deleted) under a run cannot
move text between its training and validation splits. Only when the copy is gone are the files
read again, and only when they are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charrnn.config import DataConfig
from charrnn.errors import CorpusError
from charrnn.text.corpus import Corpus, load_cached_corpus, prep_report, prepare_corpus, source_file


def corpus_record(corpus: Corpus, n_train: int, n_val: int) -> dict[str, Any]:
    """What a checkpoint says about its corpus: sources, cache key and directory, files, split."""
    return {
        "sources": [str(Path(s).resolve()) for s in corpus.sources],
        "key": corpus.key,
        "cache_dir": str(corpus.cache_path.parent.resolve()),
        "files": [{**f.to_dict(), "path": str(Path(f.path).resolve())} for f in corpus.files],
        "n_chars": corpus.n_chars,
        "n_train": n_train,
        "n_val": n_val,
        "prep": prep_report(corpus),
    }


def cache_dirs(
    record: dict[str, Any], beside_run: Path, given: Path | None = None
) -> tuple[list[Path], Path]:
    """Where to look for a run's cached corpus, in order, and where to write it anew.

    A `given` directory (--cache-dir) comes first and takes a new copy; then the directory the run
    recorded, then the default beside the run directory (the runs tree may have moved). Without
    `given`, a new copy goes to the recorded directory while it exists, else beside the run.
    """
    recorded = Path(record["cache_dir"]) if record.get("cache_dir") else None
    search = {d.resolve(): d for d in (beside_run, recorded, given) if d is not None}
    unique = list(reversed(search.values()))  # the first of each directory, in order
    if given is not None:
        return unique, given
    return unique, recorded if recorded is not None and recorded.is_dir() else beside_run


def _bytes(count: int) -> str:
    return f"{count:,} byte" + ("" if count == 1 else "s")


def source_changes(record: dict[str, Any], config: DataConfig) -> list[str]:
    """What differs between the recorded source files and those on disk now ([] for none)."""
    changes = []
    for saved in record.get("files", []):
        path = Path(saved["path"])
        if not path.is_file():
            changes.append(f"{path} is gone")
            continue
        try:
            now = source_file(path, config)
        except CorpusError:  # unreadable now: the cached copy may still serve
            changes.append(f"{path} cannot be read")
            continue
        if now.size != saved["bytes"]:
            changes.append(f"{path}: {_bytes(saved['bytes'])}, now {now.size:,}")
        elif now.sha256 != saved["sha256"]:
            changes.append(f"{path}: edited (same size)")
    return changes


def run_corpus(
    record: dict[str, Any],
    config: DataConfig,
    search: Sequence[Path],
    write_dir: Path,
    hint: str,
) -> tuple[Corpus, list[str]]:
    """The corpus a run was trained on, and warnings: its cached copy by key, else its source
    files when they are unchanged (cached anew in `write_dir`).

    `hint` ends the error raised when the copy is gone and the files changed: how to go on.
    A record without a key (a checkpoint from before keys) reads its source files as they are.
    """
    sources = record.get("sources") or []
    key = record.get("key")
    if not key:
        return prepare_corpus(sources, config, write_dir), []
    changes = source_changes(record, config)
    for directory in search:
        copy = load_cached_corpus(key, directory, sources)
        if copy is not None:
            return copy, [_changed_note(changes, key)] if changes else []
    if changes:
        looked = " or ".join(str(d) for d in search)
        raise CorpusError(
            f"the corpus changed since the run started ({'; '.join(changes)}) and its cached "
            f"copy (key {key}) is not in {looked}; {hint}"
        )
    corpus = prepare_corpus(sources, config, write_dir)
    if corpus.key != key and corpus.n_chars != record.get("n_chars"):
        # The same bytes under another key: a newer charrnn reads them as another text.
        raise CorpusError(
            f"the corpus files are unchanged, but this charrnn reads them as {corpus.n_chars:,} "
            f"characters, not the run's {record.get('n_chars'):,}; {hint}"
        )
    return corpus, []


def _changed_note(changes: list[str], key: str) -> str:
    return (
        f"the corpus changed since the run started ({'; '.join(changes)}); "
        f"using the text the run started with (cached copy, key {key})"
    )

"""The SHA-256 of a file, read in blocks: how a corpus file or a teacher is recognised later."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK_BYTES = 1 << 22


def file_sha256(path: Path) -> tuple[str, int]:
    """The hex SHA-256 of `path`'s bytes and how many there were (an `OSError` if unreadable)."""
    digest, size = hashlib.sha256(), 0
    with Path(path).open("rb") as handle:
        while block := handle.read(BLOCK_BYTES):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size

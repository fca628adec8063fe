"""Small file helpers: hashing, and output folders that appear whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from pretrainkit.errors import DataError
from pretrainkit.fileio import atomic_directory


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, marker: str) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir` that becomes `out_dir` when the block succeeds.

    On any error the temporary folder is removed, so a failed run leaves nothing behind. An
    existing `out_dir` is replaced only when it is empty or holds `marker` (i.e. it is an earlier
    output of the same kind); anything else is refused rather than deleted.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not _replaceable(out_dir, marker):
        raise DataError(
            f"output folder exists and is not an earlier output (no {marker}); "
            "refusing to overwrite it",
            out_dir,
        )
    with atomic_directory(out_dir) as tmp:
        yield tmp


def _replaceable(out_dir: Path, marker: str) -> bool:
    if not out_dir.is_dir():
        return False
    return (out_dir / marker).is_file() or not any(out_dir.iterdir())

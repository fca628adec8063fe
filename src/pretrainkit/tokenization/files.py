"""Small file helpers: hashing, and output folders that appear whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from pretrainkit.errors import DataError


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
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out_dir.exists():
            # Swap in two renames so a crash in between still leaves one complete folder.
            old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replaceable(out_dir: Path, marker: str) -> bool:
    if not out_dir.is_dir():
        return False
    return (out_dir / marker).is_file() or not any(out_dir.iterdir())

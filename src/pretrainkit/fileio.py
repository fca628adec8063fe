"""Output folders that appear whole or not at all, shared by models, shards, tokenizers and
checkpoints."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def fsync_tree(directory: Path) -> None:
    """Flush every file of ``directory`` (and the folder itself) to disk."""
    # Data must be on disk before a rename publishes it, or a power cut could leave a
    # complete-looking folder with empty files.
    for path in [*directory.rglob("*"), directory]:
        if path.is_file() or path == directory:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` at once.

    On an exception the temporary folder is removed and ``target`` is left as it was. The
    temporary name starts with ``.tmp-`` so that leftovers of a killed process are easy to find.

    Args:
        target: the folder to create or replace.
        fsync: flush the files to disk before the rename (checkpoints).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if fsync:
            fsync_tree(tmp)
        old = None
        if target.exists():
            # os.replace cannot overwrite a non-empty folder: move the old one aside first, so a
            # crash in between still leaves one complete folder.
            old = target.parent / f".old-{target.name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_utf8(path: str | os.PathLike) -> str:
    """A whole text file; a DataError naming the file when it is missing or not UTF-8."""
    from pretrainkit.errors import DataError

    try:
        return Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 (byte offset {err.start})", path) from None

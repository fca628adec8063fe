"""Files on disk (DESIGN.md §7): outputs appear whole or not at all, nothing the user made is
replaced without ``overwrite``, OS errors name the path, paths read from files stay inside
their folder, and safetensors files are checked before they are trusted.

Every command writes through ``atomic_directory`` or ``atomic_file``. Their temporaries are
``.tmp-<name>-<pid>`` (and ``.old-<name>-<pid>`` for a folder being replaced) beside the
target; the next write to the same target removes those of processes that no longer run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pretrainkit.errors import CheckpointError, DataError, OutputError, OutputExistsError

if TYPE_CHECKING:
    import torch

_TEMP_NAME = re.compile(r"^\.(tmp|old)-(?P<name>.+)-(?P<pid>\d+)$")


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


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the ``.tmp-``/``.old-`` leftovers of ``target`` whose process is gone.

    A ``.old-`` folder is a complete earlier output that a killed process had moved aside; when
    the target itself is missing it is put back instead of removed. Returns what was removed.
    """
    target = Path(target)
    parent = target.parent
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for child in parent.iterdir():
        match = _TEMP_NAME.match(child.name)
        if not match or match["name"] != target.name or _pid_alive(int(match["pid"])):
            continue
        if child.name.startswith(".old-") and not os.path.lexists(target):
            os.replace(child, target)
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        removed.append(child)
    return removed


def check_output(target: str | os.PathLike, overwrite: bool, folder: bool) -> bool:
    """Refuse an output path that would replace what this command did not create.

    An existing empty folder is fine for a folder output. Otherwise an existing path is an
    ``OutputExistsError`` naming it and the way on, unless ``overwrite``; a file where a folder
    is expected (or the reverse) is an error even then. Returns whether ``target`` exists.
    """
    target = Path(target)
    if not os.path.lexists(target):
        return False
    if folder and not target.is_dir():
        raise OutputError(f"{target}: exists and is not a folder; give a folder path for --out")
    if not folder and target.is_dir():
        raise OutputError(f"{target}: is a folder; give a file path for --out")
    if folder and not any(target.iterdir()):
        return True
    if not overwrite:
        kind = "folder" if folder else "file"
        raise OutputExistsError(
            f"{target}: the output {kind} exists and was not made by this command; pass "
            f"--overwrite to replace it, or choose another path"
        )
    return True


def describe_os_error(error: BaseException, path: str | os.PathLike | None = None) -> str:
    """One line for an OS-level failure: the path, then the cause in words."""
    number = getattr(error, "errno", None)
    cause = getattr(error, "strerror", None) or str(error)
    if number is None:
        # Rust libraries (safetensors, tokenizers) report "... (os error 27)" in their text.
        found = re.search(r"os error (\d+)", cause)
        number = int(found.group(1)) if found else None
        cause = os.strerror(number) if number is not None else cause
    if number is not None and number in errno.errorcode:
        cause = f"{cause} ({errno.errorcode[number]})"
    elif isinstance(error, OSError) and "written" in cause:
        cause = f"short write, {cause}: is the disk full?"  # numpy's tofile on a full disk
    where = path if path is not None else getattr(error, "filename", None)
    return f"{where}: {cause}" if where is not None else cause


def _output_error(target: Path, error: BaseException) -> OutputError:
    failure = OutputError(f"cannot write {describe_os_error(error, target)}")
    failure.target, failure.cause = target, error  # type: ignore[attr-defined]
    return failure


def _write_failure(error: BaseException, target: Path, tmp: Path) -> BaseException:
    """The error to raise for a failure inside an output block: OS errors (and the libraries'
    wrappers of them) name the user's target, other errors pass through unchanged."""
    inner = getattr(error, "target", None)
    if isinstance(error, OutputError) and inner is not None and str(inner).startswith(str(tmp)):
        return _output_error(target, error.cause)  # type: ignore[attr-defined]
    if isinstance(error, OSError):
        filename = getattr(error, "filename", None)
        # An error reading an input inside the block keeps its own path.
        if filename is not None and not str(filename).startswith(str(tmp)):
            return error
        return _output_error(target, error)
    text = str(error)
    # safetensors, tokenizers and torch.save wrap the OS error in their own exception types.
    if re.search(r"os error \d+", text) or "PytorchStreamWriter" in text:
        return _output_error(target, error)
    return error


@contextlib.contextmanager
def atomic_directory(
    target: str | os.PathLike, fsync: bool = False, overwrite: bool = False
) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it becomes ``target`` at once.

    On an exception (Ctrl-C included) the temporary folder is removed and ``target`` is left as
    it was. An existing non-empty ``target`` is refused unless ``overwrite`` (see
    ``check_output``); an OS error while writing becomes an ``OutputError`` naming ``target``.

    Args:
        target: the folder to create (or replace, with ``overwrite``).
        fsync: flush the files to disk before the rename (checkpoints).
        overwrite: replace an existing folder the user asked to replace.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        exists = check_output(target, overwrite, folder=True)
        tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as error:
        raise _output_error(target, error) from None
    try:
        yield tmp
        if fsync:
            fsync_tree(tmp)
        old = None
        if exists and any(target.iterdir()):
            # os.replace cannot overwrite a non-empty folder: move the old one aside first, so a
            # crash in between still leaves one complete folder (put back by the next write).
            old = target.parent / f".old-{target.name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        replacement = _write_failure(error, target, tmp)
        if replacement is error:
            raise
        raise replacement from None


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed to ``target``.

    The same rules as ``atomic_directory``: an existing file is refused unless ``overwrite``,
    a failure removes the temporary file and leaves ``target`` as it was, OS errors name it.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        check_output(target, overwrite, folder=False)
    except OSError as error:
        raise _output_error(target, error) from None
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        replacement = _write_failure(error, target, tmp)
        if replacement is error:
            raise
        raise replacement from None


def write_text_file(target: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """``text`` as UTF-8 into ``target``, atomically (see ``atomic_file``)."""
    with atomic_file(target, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def open_input(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """``path`` opened for reading bytes; missing, a folder or unreadable is one DataError
    naming it (``what`` says what was expected: "file", "corpus file", ...)."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise DataError(f"{what} not found", path) from None
    except IsADirectoryError:
        raise DataError(f"is a folder, expected a {what}", path) from None
    except OSError as error:
        raise DataError(f"{what} cannot be read: {error.strerror or error}", path) from None


def read_input(path: str | os.PathLike, what: str = "file") -> bytes:
    """The bytes of an input file, with ``open_input``'s errors."""
    with open_input(path, what) as f:
        return f.read()


def read_utf8(path: str | os.PathLike) -> str:
    """A whole text file; a DataError naming the file when it is missing or not UTF-8."""
    try:
        return read_input(path).decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 (byte offset {err.start})", path) from None


def inside(folder: str | os.PathLike, relative: str, source: str | os.PathLike) -> Path:
    """``folder / relative`` for a path written in the file ``source``; a CheckpointError when
    it would leave ``folder`` (absolute, ``..``, a drive), since a folder received from someone
    else must not make us read elsewhere. Links the user placed in the folder are not judged."""
    folder = Path(folder)
    text = str(relative)
    candidate = Path(os.path.normpath(folder / text))
    base = Path(os.path.normpath(folder))
    if (
        not text
        or os.path.isabs(text)
        or "\x00" in text
        or (candidate != base and base not in candidate.parents)
    ):
        raise CheckpointError(
            f"{source}: the path {text!r} written there points outside its folder {folder}; "
            "refusing to read it"
        )
    return candidate


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a CheckpointError naming the file when it is missing,
    truncated, not safetensors at all or has an impossible header."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read: {describe_os_error(error)}") from None
    except Exception as error:  # SafetensorError, and what a damaged header makes torch raise
        raise CheckpointError(
            f"{path}: not a valid safetensors file (truncated or damaged?): {error}"
        ) from None


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in a file a run or a model folder holds; a CheckpointError naming the
    file when it cannot be read, is not UTF-8 JSON or holds something else than an object."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise CheckpointError(f"cannot read {describe_os_error(error, path)}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data

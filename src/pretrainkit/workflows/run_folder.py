"""The run folder of pretrain / finetune: made by the run, kept by --resume, replaced only with
--overwrite, and gone again when a fresh run fails before its first checkpoint."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from pretrainkit.distributed import is_main_process
from pretrainkit.errors import OutputError, OutputExistsError
from pretrainkit.fileio import describe_os_error, remove_stale_temporaries

log = logging.getLogger(__name__)


def _has_checkpoint(out: Path) -> bool:
    from pretrainkit.training.checkpoint import list_checkpoints

    return bool(list_checkpoints(out))


@contextlib.contextmanager
def run_folder(
    out: str | os.PathLike,
    resume: bool,
    overwrite: bool,
    resumable: Callable[[Path], bool] = _has_checkpoint,
) -> Iterator[Path]:
    """Yield the run folder ``out``, ready to be written.

    - A missing or empty folder is the run's own; on failure it is removed again unless it
      holds a checkpoint to ``--resume`` from (``resumable``: what counts as one).
    - An existing non-empty folder is continued with ``resume``, replaced with ``overwrite``
      (the old one is kept aside until the new run ends, and put back if it fails), and an
      ``OutputExistsError`` otherwise.
    - An OS error without a path (a write to metrics.jsonl on a full disk) names the folder.
    """
    out = Path(out)
    main = is_main_process()
    if os.path.lexists(out) and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; --out needs a run folder path")
    existed = out.is_dir() and any(out.iterdir())
    # Only the main process judges: the others may look after it has begun writing the run.
    if existed and not resume and not overwrite and main:
        raise OutputExistsError(
            f"{out}: the run folder exists; pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out"
        )
    aside = None
    try:
        if main:
            remove_stale_temporaries(out)
            if existed and overwrite and not resume:
                aside = out.parent / f".old-{out.name}-{os.getpid()}"
                os.replace(out, aside)
                existed = False
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot write {describe_os_error(error, out)}") from None
    try:
        yield out
    except BaseException as error:
        if main and not existed:
            if resumable(out) and aside is None:
                log.warning("%s keeps its checkpoints: --resume continues from the latest", out)
            else:
                shutil.rmtree(out, ignore_errors=True)
                if aside is not None:
                    os.replace(aside, out)
                    aside = None
        if isinstance(error, OSError) and getattr(error, "filename", None) is None:
            raise OutputError(f"cannot write into {describe_os_error(error, out)}") from None
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)

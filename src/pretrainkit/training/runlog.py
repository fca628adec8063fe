"""The run's metrics: one JSON record per line in ``metrics.jsonl``, mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TextIO

from pretrainkit.errors import DataError
from pretrainkit.fileio import atomic_file

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` file.

    The last line may be cut short by a killed process and is then skipped; any other line
    that is not a JSON record with an integer ``step`` is a DataError naming the file and line.
    """
    try:
        lines = Path(path).read_bytes().split(b"\n")
    except OSError as error:
        raise DataError(f"cannot read: {error.strerror or error}", path) from None
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            if number == len(lines):  # cut short while being written
                continue
            cause = "not UTF-8" if isinstance(error, UnicodeDecodeError) else "not JSON"
            raise DataError(
                f"{cause}; expected one JSON metrics record a line", path, number
            ) from None
        if not isinstance(record, dict) or not _is_step(record.get("step")):
            raise DataError('expected a JSON object with an integer "step"', path, number)
        records.append(record)
    return records


def _is_step(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; a non-finite value is written as null rather than invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Appends metric records to ``run_dir/metrics.jsonl`` and TensorBoard (``run_dir/tb``).

    Args:
        run_dir: The run folder.
        keep_until: None starts a new log (the file is emptied). An integer keeps the records
            with ``step <= keep_until`` (resume from that checkpoint) and hides later
            TensorBoard events.
        enabled: False on non-main processes: nothing is written.
        tensorboard: Also write TensorBoard event files.
    """

    def __init__(
        self,
        run_dir: Path,
        keep_until: int | None = None,
        enabled: bool = True,
        tensorboard: bool = True,
    ):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self._file: TextIO | None = None
        self._writer: Any = None
        self._tensorboard: tuple[Path, int] | None = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_until is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r["step"] <= keep_until]
        # Rewrite then rename, so a crash here cannot lose the records being kept.
        with atomic_file(self.path, overwrite=True) as tmp:  # the run's own log
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self._file = self.path.open("a", encoding="utf-8")
        # TensorBoard hides events at or after purge_step: everything of an earlier run in this
        # folder (fresh start), or what a killed run wrote past its checkpoint. The writer is
        # made at the first record: importing it costs 0.1-0.6 s that would delay step 1.
        self._tensorboard = (Path(run_dir) / "tb", 0 if keep_until is None else keep_until + 1)
        if not tensorboard:
            self._tensorboard = None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (must have an integer ``step``); flushed at once."""
        if self._file is None:
            return
        record = {key: _clean(value) for key, value in record.items()}
        # One write call per line: a process killed mid-write leaves at most one broken line.
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is None and self._tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter  # slow import; only when used

            folder, purge = self._tensorboard
            self._writer = SummaryWriter(str(folder), purge_step=purge)
        if self._writer is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    tag = key if "/" in key else f"train/{key}"
                    self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        """Flush and close the files."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

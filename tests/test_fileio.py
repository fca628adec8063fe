"""The file rules every command shares (pretrainkit.fileio): outputs whole or not at all, nothing
replaced without overwrite, leftovers of dead processes cleaned, paths kept inside folders."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import require
from safetensors.torch import save_file

from pretrainkit.errors import CheckpointError, DataError, OutputError, OutputExistsError
from pretrainkit.fileio import (
    atomic_directory,
    atomic_file,
    inside,
    read_safetensors,
    remove_stale_temporaries,
    write_text_file,
)
from pretrainkit.training.progress import ProgressBar
from pretrainkit.training.runlog import read_metrics


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_atomic_directory_refuses_what_it_did_not_create(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match=r"out: the output folder exists.*--overwrite"):
        with atomic_directory(target) as tmp:
            (tmp / "new.txt").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "mine.txt").read_text() == "keep"


def test_atomic_directory_fills_an_empty_folder_and_overwrite_replaces(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "half.txt").write_text("half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]


def test_os_errors_inside_name_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(
        OutputError, match=r"cannot write \S+/out: No space left on device \(ENOSPC\)"
    ):
        with atomic_directory(target) as tmp:
            raise OSError(28, os.strerror(28), str(tmp / "x"))
    # An error about an input read inside the block keeps that input's path.
    with pytest.raises(FileNotFoundError):
        with atomic_directory(target):
            (tmp_path / "missing-input").read_text()
    # A library's wrapped OS error (as safetensors and tokenizers raise it) is recognised.
    with pytest.raises(OutputError, match=r"out\.txt: File too large \(EFBIG\)"):
        with atomic_file(tmp_path / "out.txt"):
            raise RuntimeError("I/O error: File too large (os error 27)")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_atomic_file_rules(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    write_text_file(target, "one")
    with pytest.raises(OutputExistsError, match=r"f\.txt: the output file exists"):
        write_text_file(target, "two")
    write_text_file(target, "two", overwrite=True)
    assert target.read_text() == "two"
    with pytest.raises(OutputError, match=r"is a folder"):
        write_text_file(tmp_path, "x", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_stale_temporaries_are_removed_and_an_orphaned_old_folder_is_put_back(
    tmp_path: Path,
) -> None:
    dead = _dead_pid()
    (tmp_path / f".tmp-out-{dead}").mkdir()
    (tmp_path / f".tmp-other-{dead}").mkdir()  # another target's: not ours to judge here
    (tmp_path / f".tmp-out-{os.getpid()}").mkdir()  # a live process's (this one)
    old = tmp_path / f".old-out-{dead}"
    old.mkdir()
    (old / "model.safetensors").write_text("complete earlier output")
    removed = remove_stale_temporaries(tmp_path / "out")
    assert [p.name for p in removed] == [f".tmp-out-{dead}"]
    assert (tmp_path / "out" / "model.safetensors").read_text() == "complete earlier output"
    assert (tmp_path / f".tmp-other-{dead}").exists()
    assert (tmp_path / f".tmp-out-{os.getpid()}").exists()


@pytest.mark.parametrize(
    "relative,ok",
    [
        ("x.safetensors", True),
        ("sub/x.safetensors", True),
        ("sub/../x.safetensors", True),
        ("../outside/x.safetensors", False),
        ("sub/../../x", False),
        ("/etc/passwd", False),
        ("", False),
    ],
)
def test_paths_written_in_files_stay_inside(tmp_path: Path, relative: str, ok: bool) -> None:
    source = tmp_path / "index.json"
    if ok:
        assert inside(tmp_path, relative, source) == Path(os.path.normpath(tmp_path / relative))
    else:
        with pytest.raises(CheckpointError, match=r"index\.json: the path .* outside its folder"):
            inside(tmp_path, relative, source)


def test_read_safetensors_names_the_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(path))
    assert torch.equal(read_safetensors(path)["w"], torch.arange(64, dtype=torch.float32))
    good = path.read_bytes()
    damaged = {
        "truncated": good[: len(good) // 2],
        "random": os.urandom(512),
        "absurd-header": struct.pack("<Q", 10**15) + good[8:],
        "empty": b"",
    }
    for data in damaged.values():
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=r"model\.safetensors: not a valid safetensors"):
            read_safetensors(path)
    with pytest.raises(CheckpointError, match=r"nope\.safetensors: weights file not found"):
        read_safetensors(tmp_path / "nope.safetensors")


def test_onnx_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    onnx = require("onnx")
    from onnx import TensorProto, helper

    from pretrainkit.samp.onnx_backend import check_external_data

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../secret.bin"
    node = helper.make_node("Identity", ["w"], ["y"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([node], "g", [], [out], [weight]))
    path = tmp_path / "encoder.onnx"
    onnx.save(model, str(path))
    with pytest.raises(CheckpointError, match=r"encoder\.onnx: the path '\.\./\.\./secret\.bin'"):
        check_external_data(path)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"encoder\.onnx: not a readable ONNX model"):
        check_external_data(path)


def test_metrics_reader_names_the_bad_line_but_tolerates_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}]
    path.write_bytes(b'{"step": 1}\n[1, 2]\n{"step": 3}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:2: expected a JSON object"):
        read_metrics(path)
    path.write_bytes(b'{"step": 1}\n\xff\n{"step": 3}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:2: not UTF-8"):
        read_metrics(path)


def test_progress_outside_a_terminal_logs_lines(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    bar = ProgressBar(100, terminal=False, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="pretrainkit.progress"):
        for step in range(1, 101):
            now[0] += 0.5  # 0.5 s a step: 30 s pass every 60 steps, a tenth every 10
            bar.update(step, 1.0 / step, 1e-4, 1000.0)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split()[1] for line in lines] == [f"{s}/100" for s in range(10, 101, 10)]
    assert lines[0].endswith("elapsed 0:00:05  eta 0:00:45")
    assert "loss 0.1000" in lines[0] and "1,000 tok/s" in lines[0]
    slow = ProgressBar(1000, terminal=False, clock=lambda: now[0])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pretrainkit.progress"):
        for step in range(1, 5):
            now[0] += 31.0  # slower than 30 s a step: every step gets a line
            slow.update(step, 1.0, 1e-4, 10.0)
    assert len(caplog.records) == 4

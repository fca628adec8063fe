"""Options of the issue-13 pieces that used to be accepted and ignored: ``preprocess --objective
masked_patch`` honours ``--workers`` and ``--skip-bad-lines``; ``image_classification`` refuses
``seq_length``; text2text and the speech tasks refuse the options of a mode that is off."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
from pathlib import Path

import pytest
from helpers import invoke, write_corpus

# isort: off
import task_samples  # noqa: F401 - first: it imports every task sample (no import cycle)
from sample_image_classification import TINY_VIT, write_bars
# isort: on

import pretrainkit
from pretrainkit.errors import ConfigError, DataError

OPTIONS = {"image_size": 8, "channels": 1, "patch_size": 2}


def _tokenizer(tmp_path: Path) -> None:
    from pretrainkit.tokenization import train_tokenizer

    train_tokenizer([write_corpus(tmp_path / "text.txt", 10)], "wordpiece", 120, tmp_path / "tok")


def _preprocess(tmp_path: Path, name: str, **kwargs) -> tuple[dict, list[str]]:
    from pretrainkit.data.preprocessing import preprocess

    lines: list[str] = []
    manifest = preprocess([tmp_path / "images.tsv"], tmp_path / "tok", "masked_patch", 17,
                          tmp_path / name, log=lines.append, objective_options=OPTIONS,
                          **kwargs)  # fmt: skip
    return manifest, lines


def test_workers_decode_the_images_and_the_shards_do_not_depend_on_them(tmp_path: Path) -> None:
    _tokenizer(tmp_path)
    write_bars(tmp_path / "images.tsv", 300, 0)  # two chunks of images
    one, _ = _preprocess(tmp_path, "one")
    two, _ = _preprocess(tmp_path, "two", workers=2)
    assert one["counts"]["documents"] == two["counts"]["documents"] == 300
    assert one["content_hash"] == two["content_hash"]
    assert (tmp_path / "one/tokens.bin").read_bytes() == (tmp_path / "two/tokens.bin").read_bytes()
    # The images are decoded by helper processes, which end with the last chunk.
    from pretrainkit.data.image_workers import decode_image_chunks
    from pretrainkit.data.images import read_image_tsv

    data = read_image_tsv(tmp_path / "images.tsv")
    chunks = [(0, [(str(data.images[r]), data.lines[r])]) for r in range(3)]
    decoded = decode_image_chunks(chunks, [data.path], 8, 1, workers=2)
    index, pixels, failures = next(decoded)
    assert len(multiprocessing.active_children()) == 2
    assert (index, pixels.shape, failures) == (0, (1, 64), [])
    assert len(list(decoded)) == 2 and not multiprocessing.active_children()


def _with_bad_rows(tmp_path: Path) -> None:
    write_bars(tmp_path / "images.tsv", 6, 0)
    (tmp_path / "images_images/2.png").write_bytes(b"\x89PNG broken")  # header unreadable
    rows = (tmp_path / "images.tsv").read_text().splitlines()
    rows[4] = "vertical\timages_images/missing.png"  # row 3 (line 5)
    (tmp_path / "images.tsv").write_text("\n".join([*rows, "a\tb\tc"]) + "\n")  # line 8


@pytest.mark.parametrize("workers", [1, 2])
def test_skip_bad_lines_leaves_out_bad_images_counted_and_logged(tmp_path, workers) -> None:
    _tokenizer(tmp_path)
    _with_bad_rows(tmp_path)
    with pytest.raises(DataError, match=r"images.tsv:4: image .*2.png: not an image"):
        _preprocess(tmp_path, "strict", workers=workers)
    assert not (tmp_path / "strict").exists()
    manifest, log = _preprocess(tmp_path, "skip", workers=workers, skip_bad_lines=True)
    assert manifest["counts"]["documents"] == 4 and manifest["counts"]["skipped_lines"] == 3
    warning = next(line for line in log if line.startswith("warning:"))
    assert "skipped 3 bad rows" in warning and "line 4: image" in warning
    assert "line 5: image" in warning and "no such file" in warning
    assert "line 8: expected 2 tab-separated fields" in warning


def test_cli_preprocess_passes_workers_and_skip_bad_lines_to_images(tmp_path, capsys) -> None:
    _tokenizer(tmp_path)
    _with_bad_rows(tmp_path)
    args = ["preprocess", "--corpus", tmp_path / "images.tsv", "--tokenizer", tmp_path / "tok",
            "--objective", "masked_patch", "--seq-length", "17", "--image-size", "8",
            "--channels", "1", "--patch-size", "2", "--workers", "2"]  # fmt: skip
    code, _, err = invoke(capsys, *args, "--out", tmp_path / "strict")
    assert code != 0 and "Traceback" not in err and "images.tsv:4: image" in err
    code, out, err = invoke(capsys, *args, "--out", tmp_path / "shards", "--skip-bad-lines")
    assert code == 0, err
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["counts"]["skipped_lines"] == 3 and "skipped 3 bad rows" in out + err


def test_pretrain_refuses_an_image_size_or_channels_other_than_the_stored_ones(tmp_path) -> None:
    from pretrainkit.data import Shards, pretraining_stream

    _tokenizer(tmp_path)
    write_bars(tmp_path / "images.tsv", 4, 0)
    _preprocess(tmp_path, "shards")
    shards = Shards.open(tmp_path / "shards")
    for options in ({"channels": 3}, {"image_size": 16, "patch_size": 4}):
        with pytest.raises(ConfigError, match="image_size and channels are fixed by preprocess"):
            pretraining_stream(shards, options=options)
    stream = pretraining_stream(shards, seq_length=5, options={"patch_size": 4})
    assert next(stream)["patch_mask"].sum() == 2  # half of the 4 patches of 4x4 pixels


def test_an_image_that_passes_the_header_check_but_cannot_be_decoded(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    _tokenizer(tmp_path)
    write_bars(tmp_path / "images.tsv", 4, 0)
    image = tmp_path / "images_images/1.png"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)
    Image.fromarray(noise).save(image)
    image.write_bytes(image.read_bytes()[:2000])  # a valid header, truncated pixel data
    with pytest.raises(DataError, match=r"images.tsv:3: image .*cannot be decoded"):
        _preprocess(tmp_path, "strict")
    manifest, log = _preprocess(tmp_path, "skip", skip_bad_lines=True)
    assert manifest["counts"]["documents"] == 3 and manifest["counts"]["skipped_lines"] == 1
    assert any("skipped 1 bad rows (line 3: image" in line for line in log)


def test_image_task_refuses_seq_length(tmp_path: Path, capsys) -> None:
    from pretrainkit.tasks import build_task

    with pytest.raises(ConfigError, match="seq_length .64. does not apply to image_classif"):
        build_task("image_classification", {"seq_length": 64})
    task = build_task("image_classification")
    with pytest.raises(ConfigError, match="drop --seq-length"):  # evaluate/predict --seq-length
        dataclasses.replace(task.options, seq_length=32)
    folder = pretrainkit.build_model("vit-base", TINY_VIT).save(tmp_path / "vit")
    write_bars(tmp_path / "train.tsv", 8, 0)
    code, _, err = invoke(
        capsys, "finetune", "--task", "image_classification", "--model", folder, "--train",
        tmp_path / "train.tsv", "--out", tmp_path / "run", "--steps", "1", "--seq-length", "64",
    )  # fmt: skip
    assert code != 0 and "Traceback" not in err and "does not apply" in err
    assert not (tmp_path / "run").exists()


def test_image_folders_that_recorded_the_unused_seq_length_still_load(tmp_path: Path) -> None:
    from pretrainkit.tasks.base import task_from_record

    record = {"name": "image_classification", "labels": ["a", "b"],
              "options": {"seq_length": 128, "image_size": 8, "channels": 1}}  # fmt: skip
    task = task_from_record(json.loads(json.dumps(record)), "task.json")
    assert task.options.seq_length is None and task.options.image_size == 8
    assert "seq_length" not in {k for k, v in task.record()["options"].items() if v is not None}


@pytest.mark.parametrize(
    ("task", "options", "message"),
    [
        ("text2text", {"num_beams": 8}, r"num_beams \(8\) applies to beam decoding only"),
        ("text2text", {"keyword_separator": ";"}, "used by the keyword_f1 metric only"),
        ("speech_classification", {"freq_mask_width": 10}, "applies to SpecAugment only"),
        ("speech2text", {"time_mask_width": 5}, "time_mask_width applies to SpecAugment only"),
    ],
)
def test_options_of_a_mode_that_is_off_are_refused(task, options, message) -> None:
    from pretrainkit.tasks import build_task

    with pytest.raises(ConfigError, match=message):
        build_task(task, options)


def test_options_of_a_mode_that_is_on_are_taken() -> None:
    from pretrainkit.tasks import build_task

    beam = build_task("text2text", {"decoding": "beam", "num_beams": 8})
    keywords = build_task("text2text", {"metric": "keyword_f1", "keyword_separator": ";"})
    speech = build_task("speech2text", {"spec_augment": True, "time_mask_width": 5})
    assert beam.options.num_beams == 8 and keywords.options.keyword_separator == ";"
    assert speech.options.time_mask_width == 5
    # Defaults, as every task.json before these checks recorded them, still load.
    assert build_task("text2text", {"num_beams": 4, "keyword_separator": "_"}).options

"""The cross_encoder task: one ``[CLS] a [SEP] b [SEP]`` sequence per pair, cut fairly; the
multi-label head over the perspectives; the command line; the real MPTS dev file. The reader
and metrics it shares with siamese are tested in test_task_siamese.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import data_dir
from samp_helpers import TINY, VOCAB
from task_samples import SAMPLES
from test_task_siamese import base, cli_round_trip  # noqa: F401 - the fixture is used by name

import pretrainkit
from pretrainkit.tasks import build_task
from pretrainkit.tasks.cross_encoder import pair_inputs
from pretrainkit.tokenization import Tokenizer, load_tokenizer

write_perspective_pairs = SAMPLES["cross_encoder"].write


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    return load_tokenizer(vocab)


@pytest.mark.parametrize(
    ("a", "b", "kept"),
    [(3, 2, (3, 2)), (20, 2, (9, 2)), (2, 20, (2, 9)), (20, 20, (5, 6)), (20, 8, (6, 5))],
)
def test_the_longer_text_is_cut_first(
    tokenizer: Tokenizer, a: int, b: int, kept: tuple[int, int]
) -> None:
    first, second = list(range(10, 10 + a)), list(range(40, 40 + b))
    inputs = pair_inputs(tokenizer, first, second, 14)  # room for 11 tokens
    ids = inputs["input_ids"].tolist()
    assert len(ids) == sum(kept) + 3 and ids[0] == tokenizer.token_to_id("[CLS]")
    assert ids[1 : 1 + kept[0]] == first[: kept[0]]
    assert ids[2 + kept[0] : 2 + sum(kept)] == second[: kept[1]]
    assert inputs["token_type_ids"].tolist() == [0] * (kept[0] + 2) + [1] * (kept[1] + 1)


def test_training_batches_stack_the_labels(tokenizer: Tokenizer, tmp_path: Path) -> None:
    write_perspective_pairs(tmp_path / "d.tsv", 6, 0)
    task = build_task("cross_encoder", {"seq_length": 16})
    data = task.read(tmp_path / "d.tsv")
    task.fit_labels(data)
    stream = task.stream(data, tokenizer, 0, 0, 1)
    batch = task.collate([next(stream) for _ in range(4)], tokenizer.pad_id)
    assert batch["input_ids"].shape[0] == 4 and batch["labels"].shape == (4, 2)
    assert task.target().name == "multi_label"
    assert task.target().options["labels"] == ["animal", "mood"]


def test_cli_finetune_evaluate_predict(capsys, base: Path, tmp_path: Path) -> None:  # noqa: F811
    # The pipeline only: that a cross-encoder learns the sample is the conformance test's.
    scored = cli_round_trip(capsys, "cross_encoder", base, tmp_path, 20)
    assert scored["task"] == "cross_encoder" and scored["rows"] == 32


def test_mpts_dev_reads_and_runs(tokenizer: Tokenizer) -> None:
    path = data_dir("mpts/dev.tsv") / "mpts" / "dev.tsv"
    task = build_task("cross_encoder", {"seq_length": 32})
    data = task.read(path)
    task.fit_labels(data)
    sub = task.subset(data, list(range(5)))
    torch.manual_seed(0)
    model = pretrainkit.build_model(
        "bert-tiny", {**TINY, "targets": [dataclasses.asdict(task.target())]}
    )
    (batch,) = task.batches(sub, tokenizer, 8)
    assert batch["input_ids"].shape == (5, 32)  # long plots: cut to seq_length
    with torch.no_grad():
        outputs = task.row_outputs(model(**batch).logits, batch)
    assert len(outputs) == 5 and outputs[0].shape == (27,)
    metrics = task.metrics(outputs, task.gold(sub))
    assert set(task.metric_names) <= set(metrics) and "f1_Drama" in metrics
    assert np.isfinite(metrics["weighted_f1"])

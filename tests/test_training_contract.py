"""The training contract (pretrainkit.training.contract): Model implements it, a recipe that
wraps a model can too, and anything else is refused before the loop starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import write_classification
from samp_helpers import TINY, VOCAB
from torch import nn

import pretrainkit
from pretrainkit.errors import ConfigError
from pretrainkit.tasks.tsv import ClassificationStream, read_classification_tsv
from pretrainkit.tokenization import load_tokenizer
from pretrainkit.training import TrainConfig, Trainer
from pretrainkit.training.contract import TrainableModel, check_trainable


class HeadOnly(nn.Module):
    """A recipe in miniature: the body stays frozen, only the head trains."""

    def __init__(self, model: pretrainkit.Model):
        super().__init__()
        self.model = model

    def forward(self, **batch):
        return self.model(**batch)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return self.model.targets.parameters()

    def save(self, directory, state_dict=None, overwrite=False) -> Path:
        return self.model.save(directory, state_dict=state_dict, overwrite=overwrite)

    def load_weights(self, directory) -> None:
        self.model.load_weights(directory)


def test_model_fulfils_the_contract() -> None:
    model = pretrainkit.build_model("bert-tiny", TINY)
    assert isinstance(model, TrainableModel)
    check_trainable(model)
    assert sum(1 for _ in model.trainable_parameters()) == sum(1 for _ in model.parameters())


def test_something_else_is_refused_naming_what_it_lacks() -> None:
    with pytest.raises(ConfigError, match=r"Linear cannot be trained here: it lacks save, "
                       r"load_weights, trainable_parameters"):  # fmt: skip
        check_trainable(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="cannot be trained here"):
        Trainer(nn.Linear(2, 2), iter([]), TrainConfig(steps=1), "unused")  # type: ignore[arg-type]


def test_a_recipe_trains_only_what_it_names(tmp_path: Path) -> None:
    from pretrainkit.data import BatchIterator

    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    targets = [{"name": "classification", "options": {"labels": ["0", "1"]}}]
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": targets})
    model.tokenizer = load_tokenizer(tmp_path / "vocab.txt")
    write_classification(tmp_path / "train.tsv", 64, seed=0)
    data = read_classification_tsv(tmp_path / "train.tsv")
    stream = ClassificationStream(data, model.tokenizer, ["0", "1"], 32)
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("targets.")}
    head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("targets.")}
    config = TrainConfig(steps=5, lr=1e-2, precision="fp32", progress=False, weight_decay=0.0)
    Trainer(HeadOnly(model), BatchIterator(stream, 8, 0), config, tmp_path / "run").fit()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in body.items())  # frozen: bit for bit
    assert any(not torch.equal(after[k], v) for k, v in head.items())
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()

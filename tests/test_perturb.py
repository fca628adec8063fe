"""Training on perturbed inputs (pretrainkit.perturb): FGM / PGD on the word table,
Embedding-Push (gradient, centroid), Attention-Pull and Robust targets, through `finetune`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import cli, read_metrics, text_batch
from samp_helpers import tiny_classifier

from pretrainkit.errors import ConfigError, DataError
from pretrainkit.folders import load
from pretrainkit.perturb.centroids import read_language_text, token_counts
from pretrainkit.perturb.module import Perturbed
from pretrainkit.perturb.options import PerturbOptions
from pretrainkit.tasks import build_task


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("perturb")
    model, files = tiny_classifier(root, steps=30)
    model.task_record = build_task("classification", {"pooling": "mean"}, ["0", "1"]).record()
    model.save(root / "model")
    return root, files


def batch_of(model, texts: list[str], labels: list[int]) -> dict[str, torch.Tensor]:
    return {**text_batch(model, texts), "labels": torch.tensor(labels)}


TEXTS = ["the cat was good and it was fine .", "it was bad .", "the dog was"]


def perturbation(model, options: PerturbOptions, counts=None) -> tuple[Perturbed, torch.Tensor]:
    wrapper = Perturbed(model, options, counts).train()
    model.eval()  # dropout off: the same loss twice
    batch = batch_of(model, TEXTS, [1, 0, 1])
    loss = model(**batch).loss
    return wrapper, wrapper._perturbation(batch, loss)


def loss_with(wrapper: Perturbed, delta: torch.Tensor) -> float:
    wrapper._delta = delta
    try:
        with torch.no_grad():
            return float(wrapper.model(**batch_of(wrapper.model, TEXTS, [1, 0, 1])).loss)
    finally:
        wrapper._delta = None


def test_options_are_checked():
    with pytest.raises(ConfigError, match="bound must be positive"):
        PerturbOptions(adversarial="fgm", epsilon=0.0)
    with pytest.raises(ConfigError, match="compare a perturbed input with the clean one"):
        PerturbOptions(attention_pull=1.0)
    with pytest.raises(ConfigError, match="choose one"):
        PerturbOptions(adversarial="fgm", embedding_push="gradient")
    with pytest.raises(ConfigError, match="needs --centroid-text"):
        PerturbOptions(embedding_push="centroid")
    with pytest.raises(ConfigError, match="pull_layers"):
        PerturbOptions(embedding_push="gradient", pull_layers="0")


def test_embedding_push_moves_every_example_by_epsilon_uphill(classifier):
    model = load(classifier[0] / "model")
    wrapper, delta = perturbation(model, PerturbOptions(embedding_push="gradient", epsilon=0.5))
    mask = batch_of(model, TEXTS, [1, 0, 1])["attention_mask"]
    norms = delta.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 0.5), atol=1e-5)
    assert delta[mask == 0].abs().max() == 0  # padding untouched
    clean = loss_with(wrapper, torch.zeros_like(delta))
    random = torch.randn_like(delta) * mask[..., None]
    random = 0.5 * random / random.flatten(1).norm(dim=1)[:, None, None]
    assert loss_with(wrapper, delta) > loss_with(wrapper, random)
    assert loss_with(wrapper, delta) > clean


def test_fgm_and_pgd_move_the_table_within_epsilon(classifier):
    model = load(classifier[0] / "model")
    ids = batch_of(model, TEXTS, [1, 0, 1])["input_ids"]
    for kind in ("fgm", "pgd"):
        wrapper, delta = perturbation(model, PerturbOptions(adversarial=kind, epsilon=0.4))
        rows = {}
        for token, vector in zip(ids.flatten().tolist(), delta.reshape(-1, delta.shape[-1])):
            if token != 0:
                rows[token] = vector  # the table row each token reads
        table_norm = torch.stack(list(rows.values())).norm()
        if kind == "fgm":
            assert table_norm.item() == pytest.approx(0.4, rel=1e-4)
        else:
            assert table_norm.item() <= 0.4 + 1e-5
        assert loss_with(wrapper, delta) > loss_with(wrapper, torch.zeros_like(delta))


def test_centroid_push_heads_toward_another_language(classifier, tmp_path):
    model = load(classifier[0] / "model")
    (tmp_path / "text.tsv").write_text(
        "en\tthe cat was good .\nen\tit was bad .\nxx\tthe dog the dog the dog\n"
    )
    languages, counts = token_counts(
        tmp_path / "text.tsv", model.tokenizer, model.config.vocab_size
    )
    assert languages == ["en", "xx"]
    options = PerturbOptions(
        embedding_push="centroid", epsilon=0.3, centroid_text=str(tmp_path / "text.tsv")
    )
    _, delta = perturbation(model, options, counts)
    norms = delta.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 0.3), atol=1e-5)
    table = model.embedding.word_weight.detach()
    centroids = (counts @ table) / counts.sum(1, keepdim=True)
    direction = torch.nn.functional.normalize(centroids[1] - centroids[0], dim=0)
    cosine = torch.nn.functional.cosine_similarity(delta[0, 0], direction, dim=0)
    assert cosine.item() == pytest.approx(1.0, abs=1e-5)


def test_centroid_text_errors(tmp_path):
    (tmp_path / "a.tsv").write_text("de\tein Satz\n")
    with pytest.raises(DataError, match="no English"):
        read_language_text(tmp_path / "a.tsv")
    (tmp_path / "b.tsv").write_text("en\ta sentence\n")
    with pytest.raises(DataError, match="at least one other language"):
        read_language_text(tmp_path / "b.tsv")
    (tmp_path / "c.tsv").write_text("en\ta sentence\nde ein Satz\n")
    with pytest.raises(DataError, match=r"c.tsv:2: expected language<TAB>sentence"):
        read_language_text(tmp_path / "c.tsv")


@pytest.mark.parametrize(
    "flags",
    [
        ["--adversarial", "fgm"],
        ["--embedding-push", "gradient", "--attention-pull", "1", "--robust-targets", "1"],
    ],
)
def test_finetune_with_perturbations_learns_and_saves_the_plain_model(classifier, tmp_path, flags):
    root, files = classifier
    out = tmp_path / "run"
    cli(
        "finetune", "--model", root / "model", "--train", files["train"], "--dev",
        files["select"], "--out", out, "--steps", "40", "--batch-size", "16", "--lr", "3e-3",
        "--precision", "fp32", "--no-progress", "--epsilon", "0.5", *flags,
    )  # fmt: skip
    records = [r for r in read_metrics(out) if "loss" in r]
    assert "perturbed_loss" in records[0]
    if "--robust-targets" in flags:
        assert {"robust_kl", "attention_pull"} <= set(records[0])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    dev = [json.loads(line) for line in lines if "dev/accuracy" in line][-1]
    assert dev["dev/accuracy"] >= 0.8  # select has 1 row in 8 flipped
    run = json.loads((out / "run.json").read_text())
    assert run["perturb"]["epsilon"] == 0.5
    model = load(out)
    assert set(model.state_dict()) == set(load(root / "model").state_dict())


def test_perturbed_training_resumes_exactly(classifier, tmp_path: Path):
    root, files = classifier
    common = [
        "finetune", "--model", root / "model", "--train", files["train"], "--batch-size", "8",
        "--lr", "3e-3", "--precision", "fp32", "--no-progress", "--scheduler", "constant",
        "--warmup", "0", "--log-every", "1", "--save-every", "3", "--embedding-push",
        "gradient", "--robust-targets", "1",
    ]  # fmt: skip
    cli(*common, "--out", tmp_path / "full", "--steps", "6")
    cli(*common, "--out", tmp_path / "cut", "--steps", "3")
    cli(*common, "--out", tmp_path / "cut", "--steps", "6", "--resume")
    first = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "full") if "loss" in r}
    second = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "cut") if "loss" in r}
    assert first[6] == pytest.approx(second[6], abs=1e-6)

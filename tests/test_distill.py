"""Distillation in the one training loop (pretrainkit.distill): the teacher–student model's
contract, the loss components, student initialisation, the recipes and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import cli, invoke, read_metrics, text_batch, torchrun
from samp_helpers import TINY, VOCAB, tiny_classifier

import pretrainkit
from pretrainkit.distill import Distiller, StudentOptions, make_student
from pretrainkit.distill.losses import (
    AttentionMaps,
    HiddenStates,
    InfoNCE,
    SentenceMSE,
    SoftLabels,
    parse_layer_map,
    uniform_layer_map,
)
from pretrainkit.distill.states import run_states
from pretrainkit.errors import ConfigError
from pretrainkit.folders import load
from pretrainkit.layers.attention import record_attention
from pretrainkit.tasks import build_task
from pretrainkit.tokenization import load_tokenizer
from pretrainkit.training import TrainConfig
from pretrainkit.workflows.distill import distill


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A 2-layer classifier trained on the cue-word task, saved with its task record."""
    root = tmp_path_factory.mktemp("teacher")
    model, files = tiny_classifier(root, steps=60)
    model.task_record = build_task("classification", {"pooling": "mean"}, ["0", "1"]).record()
    model.save(root / "teacher")
    return root / "teacher", files


def config(steps: int = 12, **extra) -> TrainConfig:
    values = {"steps": steps, "lr": 3e-3, "precision": "fp32", "progress": False}
    return TrainConfig(**{**values, **extra})


TEXTS = ["the cat was good .", "it was bad and the dog was", "the"]


# -- the teacher-student model ---------------------------------------------------------------


def test_task_distillation_trains_only_the_student_and_saves_it_alone(teacher_dir, tmp_path):
    teacher_path, files = teacher_dir
    before = load(teacher_path).state_dict()
    result = distill(
        teacher_path,
        teacher_path,
        "task",
        [str(files["train"])],
        tmp_path / "run",
        config(steps=30, eval_every=0),
        dev=str(files["select"]),
        batch_size=16,
        student_options={"student_layers": 1},
        recipe_options={"attention_weight": 1.0, "embedding_weight": 1.0},
    )
    records = read_metrics(tmp_path / "run")
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]  # the weighted distillation loss falls
    assert {"distill_soft", "distill_hidden", "distill_attention", "distill_embedding"} <= set(
        records[0]
    )
    assert result["last_eval"]["accuracy"] >= 0.8  # select has 1 row in 8 flipped
    student = load(tmp_path / "run")
    assert (
        student.config.encoder.num_layers == 1 and student.task_record["name"] == "classification"
    )
    assert set(student.state_dict()) == set(pretrainkit.build_model(student.config).state_dict())
    # The teacher folder is untouched and never written into the run.
    assert all(torch.equal(before[k], v) for k, v in load(teacher_path).state_dict().items())
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["recipe_options"]["attention_weight"] == 1.0
    assert run["student_options"]["student_layers"] == 1
    assert run["student_parameters"] < run["teacher_parameters"]


def test_teacher_stays_frozen_and_in_eval_mode(teacher_dir):
    teacher = load(teacher_dir[0])
    student = make_student(teacher, StudentOptions(student_layers=1))
    losses = {"hidden": (1.0, HiddenStates([(1, 2)], 64, 64))}
    model = Distiller(teacher, student, losses).train()
    assert not teacher.training and student.training
    assert all(not p.requires_grad for p in teacher.parameters())
    trained = {id(p) for p in model.trainable_parameters()}
    assert trained == {id(p) for p in student.parameters()}
    out = model(**text_batch(teacher, TEXTS))
    out.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert out.metrics["distill_hidden"] > 0


def test_projection_is_checkpointed_beside_the_student_and_resumes_exactly(teacher_dir, tmp_path):
    teacher_path, files = teacher_dir
    narrow = {**TINY, "hidden_size": 32, "encoder.num_layers": 1, "encoder.ffn_size": 64}
    pretrainkit.build_model("bert-tiny", narrow).config.save(tmp_path / "student.yaml")
    common = {
        "recipe": "task",
        "data": [str(files["train"])],
        "batch_size": 8,
        "recipe_options": {"layer_map": "1:2"},
    }
    steady = {"scheduler": "constant", "warmup": 0, "save_every": 3, "log_every": 1}
    full = distill(
        teacher_path, tmp_path / "student.yaml", out=tmp_path / "full",
        train=config(steps=6, **steady), **common,
    )  # fmt: skip
    assert (Path(full["model_dir"]) / "distill.safetensors").is_file()  # the projection 32→64
    distill(
        teacher_path, tmp_path / "student.yaml", out=tmp_path / "cut",
        train=config(steps=3, **steady), **common,
    )  # fmt: skip
    distill(
        teacher_path, tmp_path / "student.yaml", out=tmp_path / "cut",
        train=config(steps=6, **steady), resume=True, **common,
    )  # fmt: skip
    first = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "full") if "loss" in r}
    second = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "cut") if "loss" in r}
    assert first[6] == pytest.approx(second[6], abs=1e-6)
    a, b = load(tmp_path / "full"), load(tmp_path / "cut")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# -- losses ----------------------------------------------------------------------------------


def test_losses_vanish_when_the_student_is_the_teacher(teacher_dir):
    teacher = load(teacher_dir[0]).eval()
    batch = text_batch(teacher, TEXTS)
    states = run_states(teacher, batch, attentions=True, targets={})
    assert SoftLabels(2.0)(states, states, batch).item() == pytest.approx(0.0, abs=1e-6)
    assert HiddenStates([(1, 1), (2, 2)], 64, 64)(states, states, batch).item() == 0.0
    for kind in ("kl", "mse"):
        maps = AttentionMaps([(1, 1), (2, 2)], kind)(states, states, batch)
        assert maps.item() == pytest.approx(0.0, abs=1e-6)
    vectors = states.sentence("mean")
    assert SentenceMSE()([vectors], vectors).item() == 0.0


def test_soft_labels_match_the_kl_formula():
    from pretrainkit.distill.states import States
    from pretrainkit.model import ModelOutput

    torch.manual_seed(0)
    s_logits, t_logits = torch.randn(4, 3), torch.randn(4, 3)

    def states(logits):
        return States(None, [torch.zeros(4, 1, 2)], [], ModelOutput(None, logits, torch.zeros(1)))

    value = SoftLabels(2.0)(states(s_logits), states(t_logits), {})
    p = torch.softmax(t_logits / 2, -1)
    expected = (p * (p.log() - torch.log_softmax(s_logits / 2, -1))).sum(-1).mean() * 4
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_attention_recording_equals_the_fused_kernel(teacher_dir):
    teacher = load(teacher_dir[0]).eval()
    batch = text_batch(teacher, TEXTS)
    reference = teacher(**batch).logits
    with record_attention(teacher.encoder) as maps:
        recorded = teacher(**batch).logits
    assert torch.allclose(reference, recorded, atol=1e-5)
    assert len(maps) == 2 and maps[0].shape == (
        3,
        2,
        batch["input_ids"].shape[1],
        maps[0].shape[-1],
    )
    rows = maps[0].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    padded = batch["attention_mask"][2] == 0  # the one-word row attends to no padding
    assert maps[0][2][..., padded].abs().max() == 0


def test_infonce_prefers_the_matching_row():
    torch.manual_seed(0)
    target = torch.randn(6, 8)
    aligned = InfoNCE(0.05)([target + 0.01 * torch.randn(6, 8)], target)
    shuffled = InfoNCE(0.05)([target[torch.randperm(6)]], target)
    assert aligned.item() < 0.01 < shuffled.item()


def test_layer_maps():
    assert uniform_layer_map(3, 6) == [(1, 2), (2, 4), (3, 6)]
    assert parse_layer_map("1:2,0:0", 2, 4) == [(1, 2), (0, 0)]
    with pytest.raises(
        ConfigError, match="teacher layer 7 is out of range.*0 .embedding output. to 6"
    ):
        parse_layer_map("1:7", 2, 6)
    with pytest.raises(ConfigError, match="student layer 3 is out of range"):
        parse_layer_map("3:1", 2, 6)
    with pytest.raises(ConfigError, match="student:teacher pairs"):
        parse_layer_map("1-2", 2, 6)


# -- students --------------------------------------------------------------------------------


def _deep_teacher(tmp_path: Path, layers: int = 4) -> pretrainkit.Model:
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "encoder.num_layers": layers})
    model.tokenizer = load_tokenizer(tmp_path / "vocab.txt")
    return model


def test_student_layers_bottom_and_uniform(tmp_path):
    teacher = _deep_teacher(tmp_path)
    bottom = make_student(teacher, StudentOptions(student_layers=2))
    uniform = make_student(teacher, StudentOptions(student_layers=2, layer_selection="uniform"))
    for student, picked in ((bottom, [0, 1]), (uniform, [1, 3])):
        for j, i in enumerate(picked):
            ours, theirs = student.encoder.layers[j].state_dict(), teacher.encoder.layers[i]
            assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.items())
    batch = text_batch(teacher, TEXTS)
    # The bottom-2 student computes exactly the teacher's second layer.
    teacher.eval(), bottom.eval()
    expected = teacher.layer_outputs(**batch)[1]
    assert torch.allclose(bottom.layer_outputs(**batch)[-1], expected, atol=1e-6)


def test_parameter_recurrence_applies_each_group_in_a_row(tmp_path):
    teacher = _deep_teacher(tmp_path)
    student = make_student(teacher, StudentOptions(student_layers=4, layer_groups=2)).eval()
    assert len(student.encoder.layers) == 2 and student.config.encoder.layer_groups == 2
    first, second = teacher.encoder.layers[0].eval(), teacher.encoder.layers[2].eval()
    batch = text_batch(teacher, TEXTS)
    x = student.embedding(batch["input_ids"])
    mask = batch["attention_mask"].bool()[:, None, None, :]
    for block in (first, first, second, second):
        x = block(x, mask)
    assert torch.allclose(student.encoder_states(**batch), x, atol=1e-5)
    halves = sum(p.numel() for p in student.encoder.parameters())
    assert halves * 2 == sum(p.numel() for p in teacher.encoder.parameters())
    with pytest.raises(ConfigError, match="layer_groups: 3 must divide"):
        make_student(teacher, StudentOptions(student_layers=4, layer_groups=3))
    # A student made from a recurrent folder (a later stage) keeps the recurrence as it is.
    again = make_student(student, StudentOptions()).eval()
    assert again.config.encoder.layer_groups == 2 and len(again.encoder.layers) == 2
    assert torch.equal(again.encoder_states(**batch), student.encoder_states(**batch))


def test_factorised_embedding_starts_from_the_tables_top_directions(tmp_path):
    teacher = _deep_teacher(tmp_path)
    student = make_student(teacher, StudentOptions(factorized_size=16))
    table = teacher.embedding.word_weight.detach()
    up = student.embedding.project.weight.detach()  # [h, F]
    rebuilt = student.embedding.word_weight.detach() @ up.T  # [vocab, h]
    centred = table - table.mean(0)
    singular = torch.linalg.svdvals(centred)
    # Projecting onto the top-16 directions loses what the other singular values carry.
    residual = (table - rebuilt - (table - rebuilt).mean(0)).pow(2).sum()
    assert residual.item() == pytest.approx(singular[16:].pow(2).sum().item(), rel=1e-3)
    assert sum(p.numel() for p in student.embedding.parameters()) < sum(
        p.numel() for p in teacher.embedding.parameters()
    )
    with pytest.raises(ConfigError, match="smaller than the hidden size"):
        make_student(teacher, StudentOptions(factorized_size=64))


def test_new_vocabulary_and_frozen_word_table(tmp_path, teacher_dir):
    teacher = _deep_teacher(tmp_path)
    (tmp_path / "other.txt").write_text("\n".join([*VOCAB[:5], "ein", "zwei", "drei"]) + "\n")
    student = make_student(
        teacher,
        StudentOptions(student_tokenizer=str(tmp_path / "other.txt"), freeze_word_embeddings=True),
    )
    assert student.config.vocab_size == 8 and student.tokenizer.vocab_size == 8
    assert not student.embedding.word_weight.requires_grad
    assert torch.equal(
        student.encoder.layers[0].attention.query.weight,
        teacher.encoder.layers[0].attention.query.weight,
    )
    # A task recipe compares token by token: a student with another vocabulary is refused.
    teacher_path, files = teacher_dir
    with pytest.raises(ConfigError, match="need the same tokenizer"):
        distill(
            teacher_path, teacher_path, "task", [str(files["train"])], tmp_path / "run",
            config(steps=2), batch_size=8,
            student_options={"student_tokenizer": str(tmp_path / "other.txt")},
        )  # fmt: skip
    assert not (tmp_path / "run").exists()


# -- the sentence recipe ---------------------------------------------------------------------


def test_sentence_recipe_aligns_a_student_with_another_vocabulary(teacher_dir, tmp_path):
    teacher_path, _ = teacher_dir
    teacher = load(teacher_path)
    teacher.encode_defaults = {"pooling": "mean", "normalize": True}
    teacher.task_record = None
    teacher.save(tmp_path / "encoder")
    # "Translations": the same words in capitals, a vocabulary with both spellings.
    words = VOCAB[5:]
    both = [*VOCAB[:5], *words, *(w.upper() for w in words if w != ".")]
    (tmp_path / "both.txt").write_text("\n".join(both) + "\n")
    lines, sts = [], []
    rng = torch.Generator().manual_seed(0)
    for _ in range(64):
        picked = [words[int(i)] for i in torch.randint(len(words), (5,), generator=rng)]
        text = " ".join(picked)
        lines.append(f"{text}\t{text.upper()}")
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n")
    for i in range(0, 40, 2):
        a, b = lines[i].split("\t")[0], lines[i + 1].split("\t")[0]
        sts.append(f'"{a}","{b}",{(i % 5) + 0.5}')
    (tmp_path / "sts.csv").write_text("\n".join(sts) + "\n")
    options = {"student_tokenizer": str(tmp_path / "both.txt"), "factorized_size": 16}
    sources = [line.split("\t")[0] for line in lines]
    capitals = [line.split("\t")[1] for line in lines]
    goal = torch.from_numpy(teacher.encode(sources))
    torch.manual_seed(42)  # the run's seed: the same student before training
    untrained = make_student(teacher, StudentOptions(**options))
    before = (torch.from_numpy(untrained.encode(sources)) * goal).sum(-1).mean()
    result = distill(
        tmp_path / "encoder", tmp_path / "encoder", "sentence", [str(tmp_path / "pairs.tsv")],
        tmp_path / "run", config(steps=60, lr=3e-4), dev=str(tmp_path / "sts.csv"),
        batch_size=16, student_options=options,
    )  # fmt: skip
    assert {"spearman", "pearson"} <= set(result["last_eval"])
    student = load(tmp_path / "run")
    assert student.encode_defaults == {"pooling": "mean", "normalize": True}
    assert student.config.embedding.factorized_size == 16
    assert student.tokenizer.vocab_size == len(both)
    after = (torch.from_numpy(student.encode(sources)) * goal).sum(-1).mean()
    # Mean cosine to the teacher's vector of the same sentence, in the student's vocabulary
    # (0.68 -> 0.88 on two CPUs; the kernels' rounding moves the last digits).
    assert after > before + 0.15, (before, after)
    # The translations went through the student too (a second view in every batch).
    translated = torch.from_numpy(student.encode(capitals))
    assert not torch.allclose(translated, torch.from_numpy(untrained.encode(capitals)))


def test_parallel_file_with_a_missing_side_names_the_line(teacher_dir, tmp_path):
    teacher_path, _ = teacher_dir
    (tmp_path / "pairs.tsv").write_text("the cat\tTHE CAT\nthe dog\n")
    with pytest.raises(pretrainkit.errors.DataError, match=r"pairs.tsv:2: .*missing side"):
        distill(
            teacher_path, teacher_path, "sentence", [str(tmp_path / "pairs.tsv")],
            tmp_path / "run", config(steps=2), batch_size=2,
        )  # fmt: skip


# -- the command -----------------------------------------------------------------------------


def test_distill_command(teacher_dir, tmp_path, capsys):
    teacher_path, files = teacher_dir
    cli(
        "distill", "--teacher", teacher_path, "--student", teacher_path, "--student-layers", "1",
        "--recipe", "task", "--data", files["train"], "--dev", files["select"],
        "--out", tmp_path / "run", "--steps", "4", "--batch-size", "8", "--precision", "fp32",
        "--no-progress", "--temperature", "3", "--layer-map", "1:2",
    )  # fmt: skip
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["recipe_options"]["temperature"] == 3.0
    assert run["recipe_options"]["layer_map"] == "1:2"
    code, _, err = invoke(
        capsys, "distill", "--teacher", teacher_path, "--student", teacher_path, "--recipe",
        "task", "--data", files["train"], "--out", tmp_path / "other", "--steps", "2",
        "--infonce-weight", "1",
    )  # fmt: skip
    assert code == 2 and "--infonce-weight does not apply to 'recipe task'" in err
    assert not (tmp_path / "other").exists()


def test_bad_layer_map_fails_before_writing(teacher_dir, tmp_path):
    teacher_path, files = teacher_dir
    with pytest.raises(ConfigError, match="teacher layer 9 is out of range"):
        distill(
            teacher_path, teacher_path, "task", [str(files["train"])], tmp_path / "run",
            config(steps=2), batch_size=8, recipe_options={"layer_map": "1:9"},
        )  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_layer_groups_are_checked_in_the_config():
    from pretrainkit.config import EncoderConfig

    assert EncoderConfig(num_layers=6, layer_groups=3).layer_groups == 3
    with pytest.raises(ConfigError, match="layer_groups: 4 must divide num_layers"):
        EncoderConfig(num_layers=6, layer_groups=4)
    with pytest.raises(ConfigError, match="contradicts share_layers"):
        EncoderConfig(num_layers=6, layer_groups=2, share_layers=True)


# -- the layerwise recipe (LightMBERT) -------------------------------------------------------


def test_layerwise_recipe_on_shards_with_a_frozen_word_table(tmp_path):
    from helpers import write_corpus

    from pretrainkit.data import preprocess

    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    write_corpus(tmp_path / "corpus.txt", documents=40, seed=0)
    preprocess([tmp_path / "corpus.txt"], tmp_path / "vocab.txt", "mlm", 32, tmp_path / "shards",
               log=lambda _: None)  # fmt: skip
    torch.manual_seed(0)
    teacher = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    teacher.tokenizer = load_tokenizer(tmp_path / "vocab.txt")
    teacher.save(tmp_path / "teacher")
    result = distill(
        tmp_path / "teacher", tmp_path / "teacher", "layerwise", [str(tmp_path / "shards")],
        tmp_path / "run", config(steps=60, lr=3e-3), dev=str(tmp_path / "shards"),
        batch_size=8, student_options={"student_layers": 1, "freeze_word_embeddings": True},
        recipe_options={"hard_weight": 0.5},
    )  # fmt: skip
    records = [r for r in read_metrics(tmp_path / "run") if "distill_hidden" in r]
    for name in ("distill_hidden", "distill_attention"):
        assert records[-1][name] < 0.7 * records[0][name], name
    assert "mlm_loss" in records[0]  # the student's own MLM loss counts with hard_weight
    assert {"loss", "distill_hidden", "distill_attention"} <= set(result["last_eval"])
    student = load(tmp_path / "run")
    assert student.config.encoder.num_layers == 1
    assert torch.equal(student.embedding.word_weight, teacher.embedding.word_weight)
    # Layer 1 of the student maps to the teacher's last layer (auto: round(1 * 2 / 1) = 2).
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["objective"] == "mlm" and run["trained_parameters"] < run["student_parameters"]


def test_distill_runs_under_ddp_on_two_processes(teacher_dir, tmp_path):
    teacher_path, files = teacher_dir
    torchrun(
        2, "distill", "--teacher", str(teacher_path), "--student", str(teacher_path),
        "--student-layers", "1", "--recipe", "task", "--data", str(files["train"]),
        "--out", str(tmp_path / "run"), "--steps", "12", "--global-batch-size", "16",
        "--lr", "3e-3", "--log-every", "1", "--precision", "fp32", "--no-progress",
        "--strategy", "ddp",
        log=tmp_path / "log.txt",
    )  # fmt: skip
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(losses) == 12 and sum(losses[-3:]) < 0.7 * sum(losses[:3])
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["world_size"] == 2 and run["global_batch_size"] == 16
    assert load(tmp_path / "run").config.encoder.num_layers == 1


def test_crops_are_labelled_by_the_teacher_alone(teacher_dir, tmp_path):
    from pretrainkit.distill.recipes import TeacherOnlyRows, with_crops
    from pretrainkit.tasks.tsv import ClassificationStream, read_classification_tsv

    teacher_path, files = teacher_dir
    data = read_classification_tsv(files["train"])
    crops = with_crops("classification", data, 2, seed=0)
    extra = crops.texts_a[len(data) :]
    assert len(extra) == 2 * sum(len(t.split()) >= 4 for t in data.texts_a)
    for i, text in enumerate(extra[:20]):
        parent = data.texts_a[
            [j for j, t in enumerate(data.texts_a) if len(t.split()) >= 4][i // 2]
        ]
        assert text in parent and len(parent.split()) / 2 <= len(text.split()) < len(parent.split())
    stream = TeacherOnlyRows(
        ClassificationStream(crops, load(teacher_path).tokenizer, ["0", "1"], 32), len(data)
    )
    labels = [int(next(stream)["labels"]) for _ in range(len(crops))]  # one epoch
    assert labels.count(-100) == len(extra) and set(labels) - {-100} <= {0, 1}
    result = distill(
        teacher_path, teacher_path, "task", [str(files["train"])], tmp_path / "run",
        config(steps=20), batch_size=16, student_options={"student_layers": 1},
        recipe_options={"crops": 2},
    )  # fmt: skip
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["crop_rows"] == len(extra) and run["rows"] == len(data)
    assert result["steps"] == 20
    with pytest.raises(ConfigError, match="crops: supported for single-text classification"):
        with_crops("regression", data, 1, 0)


def test_a_batch_of_crops_only_has_a_zero_gold_loss(teacher_dir):
    teacher = load(teacher_dir[0]).eval()
    batch = text_batch(teacher, TEXTS)
    out = teacher(**batch, labels=torch.full((3,), -100))
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    mixed = teacher(**batch, labels=torch.tensor([-100, 1, 0]))
    alone = teacher(**{k: v[1:] for k, v in batch.items()}, labels=torch.tensor([1, 0]))
    assert mixed.loss.item() == pytest.approx(alone.loss.item(), rel=1e-4)


def test_distill_with_lora_trains_and_saves_only_the_adapters(teacher_dir, tmp_path, capsys):
    # `distill --peft lora`: the student as made is the PEFT base (RUN/student-base); only the
    # LoRA tensors and the head train; the run's model is a PEFT folder that loads on that base,
    # merges into a plain student, and resumes exactly.
    from safetensors.torch import load_file

    from pretrainkit.peft.folder import merge_folder

    teacher_path, files = teacher_dir
    argv = [
        "distill", "--teacher", teacher_path, "--student", teacher_path, "--student-layers", "1",
        "--recipe", "task", "--data", files["train"], "--dev", files["select"],
        "--batch-size", "16", "--precision", "fp32", "--no-progress", "--lr", "1e-2",
        "--peft", "lora", "--lora-rank", "4", "--lora-targets", "query,value,up",
        "--scheduler", "constant", "--save-every", "20",
    ]  # fmt: skip
    cli(*argv, "--out", tmp_path / "run", "--steps", "40")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["peft"]["method"] == "lora" and run["peft"]["options"]["lora_rank"] == 4
    assert run["trained_parameters"] < 0.2 * run["student_parameters"]
    saved = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert saved and all("lora_" in k or k.startswith("targets.") for k in saved)
    base = load(tmp_path / "run" / "student-base")
    trained = load(tmp_path / "run")  # the PEFT folder on its base
    assert trained.config.encoder.num_layers == 1
    frozen = "encoder.layers.0.attention.query.weight"
    assert torch.equal(trained.state_dict()[frozen], base.state_dict()[frozen])
    score = pretrainkit.workflows.finetune.evaluate(tmp_path / "run", files["select"])
    assert score["accuracy"] >= 0.8
    merged = merge_folder(tmp_path / "run", tmp_path / "merged")
    again = pretrainkit.workflows.finetune.evaluate(merged, files["select"])
    assert again["accuracy"] == score["accuracy"]
    # Stopped at step 20 and resumed: the same adapters as the uninterrupted run.
    cli(*argv, "--out", tmp_path / "short", "--steps", "20")
    cli(*argv, "--out", tmp_path / "short", "--steps", "40", "--resume")
    resumed = load_file(tmp_path / "short" / "model" / "model.safetensors")
    assert all(torch.equal(resumed[k], saved[k]) for k in saved)
    code, _, err = invoke(
        capsys, *argv, "--out", tmp_path / "bad", "--steps", "2", "--lora-rank", "0"
    )
    assert code != 0 and "lora_rank" in err and not (tmp_path / "bad").exists()

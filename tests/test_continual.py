"""Parameter-efficient continual learning (pretrainkit.continual, `pretrainkit continual`).

A tiny random BERT (2 layers, hidden 64) is the base; two tasks share it: the cue-word task of
tests/helpers.py ("sentiment") and a second one on the same sentences whose label is the first
adjective ("size": big/small vs the rest). Runs are shared by module fixtures.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from helpers import PAIRS, VERBS, cli, invoke, write_classification
from safetensors.torch import load_file
from samp_helpers import TINY, VOCAB

import pretrainkit
from pretrainkit.continual.deltas import (
    apply_delta,
    body_state,
    lowrank_merged,
    read_delta,
    state_sha256,
)
from pretrainkit.continual.module import ContinualModel, attach_slots, fold_slots
from pretrainkit.continual.options import ContinualOptions, parse_budget
from pretrainkit.continual.selection import (
    Group,
    backbone_fraction,
    backbone_size,
    body_parameters,
    choose,
    parameter_groups,
    top_layer_groups,
)
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.tokenization import load_tokenizer
from pretrainkit.workflows import continual as workflow
from pretrainkit.workflows.finetune import evaluate

CLASSIFIER = [{"name": "classification", "options": {"labels": ["0", "1"], "pooling": "mean"}}]
SMALL = {"big", "small"}


def write_size_task(path: Path, rows: int, seed: int) -> None:
    """Label 1 when the sentence's first adjective is big or small (a second task on the same
    words as the cue-word task)."""
    rng = random.Random(seed)
    lines = ["label\ttext_a"]
    for _ in range(rows):
        (a, n), (b, m) = rng.choice(PAIRS), rng.choice(PAIRS)
        lines.append(f"{int(a in SMALL)}\tthe {a} {n} {rng.choice(VERBS)} the {b} {m} .")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def task_file(path: Path, name: str, data: str, steps: int = 60) -> Path:
    path.write_text(
        f"name: {name}\ntask: classification\ntrain: {data}-train.tsv\ndev: {data}-dev.tsv\n"
        f"steps: {steps}\nlr: 0.005\nwarmup: 5\nbatch_size: 16\nprecision: fp32\n"
        "progress: false\noptions: {seq_length: 32, pooling: mean}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("continual")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    base = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    base.tokenizer = load_tokenizer(root / "vocab.txt")
    base.save(root / "base")
    write_classification(root / "sentiment-train.tsv", 320, seed=1)
    write_classification(root / "sentiment-dev.tsv", 96, seed=2)
    write_size_task(root / "size-train.tsv", 320, seed=3)
    write_size_task(root / "size-dev.tsv", 96, seed=4)
    return {
        "root": root,
        "base": root / "base",
        "tasks": [
            task_file(root / "a.yaml", "sentiment", "sentiment"),
            task_file(root / "b.yaml", "size", "size", steps=120),
        ],
    }


def run(setup, out: str, *options: object) -> dict:
    root = setup["root"]
    cli(
        "continual",
        "--model",
        setup["base"],
        "--tasks",
        *setup["tasks"],
        "--out",
        root / out,
        *options,
    )
    return json.loads((root / out / "continual.json").read_text())


@pytest.fixture(scope="module")
def method(setup) -> dict:
    return run(setup, "method", "--budget", "30%", "--reg-weight", "10")


@pytest.fixture(scope="module")
def full(setup) -> dict:
    return run(setup, "full", "--budget", "100%", "--regularizer", "none")


def test_each_task_is_learned_and_every_task_reported_after_every_step(method) -> None:
    steps = method["steps"]
    assert [s["task"] for s in steps] == ["sentiment", "size"]
    assert list(steps[0]["metrics"]) == ["sentiment"]
    assert list(steps[1]["metrics"]) == ["sentiment", "size"]
    summary = method["summary"]
    assert summary["matrix"]["sentiment"][0] >= 0.85, summary
    assert summary["new_task"]["size"] >= 0.85, summary
    assert set(summary["forgetting"]) == {"sentiment"}


def test_only_the_chosen_groups_change_and_the_budget_holds(setup, method) -> None:
    base = load_file(setup["base"] / "model.safetensors")
    for step in method["steps"]:
        assert step["trainable_body"] <= 0.30 * step["body_parameters"]
        assert step["trainable_share"] == step["trainable_body"] / step["body_parameters"]
        record, tensors = read_delta(setup["root"] / "method" / step["folder"] / "model")
        body = set(record["body_tensors"])
        assert body and all(not t.startswith("targets.") for t in body)
        assert all(t.startswith("targets.") for t in record["head_tensors"])
        assert step["delta_bytes"] < 0.5 * step["full_bytes"]
    # After both tasks, every tensor neither task chose is still the base's, bit for bit.
    exported = setup["root"] / "export-size"
    cli("continual-export", "--run", setup["root"] / "method", "--task", "size", "--out", exported)
    weights = load_file(exported / "model.safetensors")
    chosen = {
        t
        for step in method["steps"]
        for t in read_delta(setup["root"] / "method" / step["folder"] / "model")[0]["body_tensors"]
    }
    unchanged = [k for k in base if not k.startswith("targets.") and k not in chosen]
    assert unchanged
    assert all(torch.equal(weights[k], base[k]) for k in unchanged)
    assert any(not torch.equal(weights[k], base[k]) for k in chosen)


def test_the_delta_chain_reproduces_every_step_bit_for_bit(setup, method) -> None:
    model = pretrainkit.load(setup["base"])
    assert state_sha256(body_state(model)) == method["base_body_sha256"]
    for step in method["steps"]:
        record = apply_delta(model, setup["root"] / "method" / step["folder"] / "model")
        assert state_sha256(body_state(model)) == step["sha256"] == record["sha256"]
    # The exported models score what the run reported after the last step.
    for name in ("sentiment", "size"):
        out = setup["root"] / f"chain-{name}"
        cli("continual-export", "--run", setup["root"] / "method", "--task", name, "--out", out)
        scored = evaluate(out, setup["root"] / f"{name}-dev.tsv")
        assert scored["accuracy"] == method["steps"][-1]["metrics"][name]["accuracy"]


def test_a_delta_on_the_wrong_base_is_an_error(setup, method) -> None:
    second = setup["root"] / "method" / method["steps"][1]["folder"] / "model"
    model = pretrainkit.load(setup["base"])
    with pytest.raises(CheckpointError, match="trained on a backbone with sha256"):
        apply_delta(model, second)  # step 2 without step 1
    damaged = setup["root"] / "damaged"
    shutil.copytree(second.parent.parent, damaged)
    first = damaged / method["steps"][0]["folder"] / "model" / "delta.safetensors"
    tensors = load_file(first)
    name = next(k for k in tensors if not k.startswith("targets."))
    tensors[name] = tensors[name] + 1e-3
    from safetensors.torch import save_file

    save_file(tensors, str(first))
    with pytest.raises(CheckpointError, match="damaged"):
        apply_delta(model, first.parent)
    # A base that changed since the run is refused by export.
    moved = setup["root"] / "other-base"
    other = pretrainkit.load(setup["base"])
    with torch.no_grad():
        other.encoder.layers[0].attention.query.weight.add_(1.0)
    other.save(moved)
    with pytest.raises(CheckpointError, match="base model changed"):
        workflow.export_task(setup["root"] / "method", "size", setup["root"] / "x", base=moved)
    assert not (setup["root"] / "x").exists()


def test_full_fine_tuning_forgets_more_than_the_method(method, full) -> None:
    # The sequential full fine-tuning baseline trains every group; the method at 30 % with EWC
    # keeps more of the first task. Both learn the new task.
    assert full["steps"][0]["trainable_share"] == 1.0
    assert full["summary"]["new_task"]["size"] >= 0.85
    assert full["summary"]["average_forgetting"] >= 0.03
    assert method["summary"]["average_forgetting"] < full["summary"]["average_forgetting"]


@pytest.fixture(scope="module")
def lora(setup) -> dict:
    return run(setup, "lora", "--budget", "10%", "--lora-rank", "2", "--reg-weight", "10")


def test_lora_slots_are_chosen_stored_as_factors_and_chained_bit_for_bit(setup, lora) -> None:
    summary = lora["summary"]
    assert summary["matrix"]["sentiment"][0] >= 0.85, summary
    assert summary["new_task"]["size"] >= 0.85, summary
    model = pretrainkit.load(setup["base"])
    slots = 0
    for step in lora["steps"]:
        assert step["trainable_body"] <= 0.10 * step["body_parameters"]
        folder = setup["root"] / "lora" / step["folder"] / "model"
        record, tensors = read_delta(folder)
        for matrix, (a, b, scale) in record["lowrank"].items():
            assert matrix not in record["body_tensors"] and f"{matrix[:-7]}.lora" in step["groups"]
            rows, cols = model.get_parameter(matrix).shape
            assert tensors[a].shape == (2, cols) and tensors[b].shape == (rows, 2)
            assert scale == 1.0
        slots += len(record["lowrank"])
        # Applying the delta (factors folded in) gives the backbone the run went on with.
        apply_delta(model, folder)
        assert state_sha256(body_state(model)) == step["sha256"]
        assert step["delta_bytes"] < 0.25 * step["full_bytes"]  # the head is most of it
    assert slots > 0
    out = setup["root"] / "lora-size"
    cli("continual-export", "--run", setup["root"] / "lora", "--task", "size", "--out", out)
    scored = evaluate(out, setup["root"] / "size-dev.tsv")
    assert scored["accuracy"] == lora["steps"][-1]["metrics"]["size"]["accuracy"]


def test_lowrank_merge_is_exact_and_independent_of_threads() -> None:
    generator = torch.Generator().manual_seed(0)
    weight, a, b = (
        torch.randn(*shape, generator=generator) for shape in ((48, 40), (4, 40), (48, 4))
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lowrank_merged(weight, a, b, 0.5)
        torch.set_num_threads(2)
        two = lowrank_merged(weight, a, b, 0.5)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two) and one.dtype == torch.float32
    exact = (weight.double() + 0.5 * (b.double() @ a.double())).float()
    assert torch.equal(one, exact)  # r products exact in float64, one rounding at the end


def test_slots_fold_into_the_same_function_and_the_penalty_acts_on_b_a() -> None:
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": CLASSIFIER}).eval()
    name = "encoder.layers.0.attention.query.weight"
    slots = attach_slots(model, {name: 2})
    a, b, scale = slots[name]
    with torch.no_grad():
        model.get_parameter(b).normal_()
    fisher = {name: torch.full_like(model.get_parameter(name), 2.0)}
    cm = ContinualModel(model, [a, b], {}, fisher, 3.0, {}, slots=slots)
    change = scale * (model.get_parameter(b) @ model.get_parameter(a))
    expected = 0.5 * 3.0 * float((2.0 * change * change).sum().detach())
    assert float(cm.penalty().detach()) == pytest.approx(expected, rel=1e-5)
    ids = torch.randint(5, TINY["vocab_size"], (2, 12))
    before = model(input_ids=ids).logits
    fold_slots(model, slots)
    assert type(model.get_submodule(name[:-7])) is torch.nn.Linear
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)


def test_a_matrix_is_trained_whole_or_as_a_slot_never_both(setup) -> None:
    model = pretrainkit.load(setup["base"])
    groups = parameter_groups(model, lora_rank=2)
    slots = [g for g in groups if g.lora_rank]
    assert slots and all(g.tensors[0].endswith(".weight") for g in slots)
    assert backbone_size(groups) == sum(p.numel() for p in body_parameters(model).values())
    scores = {g.name: 1.0 for g in groups}
    for seed in range(5):
        for chosen in (choose(groups, 0.1, None, seed=seed), choose(groups, 0.1, scores)):
            matrices = [g.matrix for g in chosen]
            assert len(matrices) == len(set(matrices))
            assert sum(g.size for g in chosen) <= 0.1 * backbone_size(groups)
    assert not any(g.lora_rank for g in choose(groups, 1.0, None))


def test_random_selection_is_seeded_and_within_budget(setup) -> None:
    model = pretrainkit.load(setup["base"])
    groups = parameter_groups(model)
    a = choose(groups, 0.3, None, seed=5)
    assert [g.name for g in a] == [g.name for g in choose(groups, 0.3, None, seed=5)]
    assert sum(g.size for g in a) <= 0.3 * sum(g.size for g in groups)


def test_groups_cover_the_backbone_once(setup) -> None:
    model = pretrainkit.load(setup["base"])
    groups = parameter_groups(model)
    names = [t for g in groups for t in g.tensors]
    assert sorted(names) == sorted(body_parameters(model)) and len(names) == len(set(names))
    by_name = {g.name: g for g in groups}
    assert by_name["encoder.layers.0.attention.query"].tensors == [
        "encoder.layers.0.attention.query.weight"
    ]
    assert "encoder.layers.0.attention.query.bias" in by_name["encoder.layers.0.bias"].tensors
    assert set(by_name["encoder.layers.1.norm"].tensors) == {
        f"encoder.layers.1.{n}.{p}"
        for n in ("attention_norm", "ffn_norm")
        for p in ("weight", "bias")
    }


def test_top_layers_narrow_the_candidates_and_the_backward_stops_below_them(setup) -> None:
    model = pretrainkit.load(setup["base"])
    groups = parameter_groups(model, lora_rank=4)
    top = top_layer_groups(model, groups, 1)
    assert top and all(t.startswith("encoder.layers.1.") for g in top for t in g.tensors)
    assert {g.name for g in top} == {
        g.name for g in groups if g.name.startswith("encoder.layers.1.")
    }
    assert top_layer_groups(model, groups, 0) == groups
    # The budget stays a share of the whole backbone, not of the candidates.
    chosen = choose(top, 0.1, None, seed=3, total=backbone_size(groups))
    assert sum(g.size for g in chosen) <= 0.1 * backbone_size(groups)
    with pytest.raises(ConfigError, match="top_layers 3 exceeds the encoder's 2 layer"):
        top_layer_groups(model, groups, 3)
    # Only the top layer trainable: the hidden states below it carry no gradient, so autograd
    # never enters layer 0 (no backward work there), and the top layer gets its gradients.
    trainable = {t for g in top_layer_groups(model, parameter_groups(model), 1) for t in g.tensors}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    seen: dict[int, bool] = {}
    for index, layer in enumerate(model.encoder.layers):
        layer.register_forward_hook(
            lambda m, i, o, index=index: seen.update({index: o.requires_grad})
        )
    ids = torch.randint(5, len(VOCAB), (2, 8))
    model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
    assert seen == {0: False, 1: True}
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_a_run_with_top_layers_changes_only_those_layers(setup) -> None:
    result = run(setup, "top", "--budget", "30%", "--top-layers", "1", "--reg-weight", "10")
    assert result["summary"]["new_task"]["sentiment"] >= 0.8, result["summary"]
    for step in result["steps"]:
        record, _ = read_delta(setup["root"] / "top" / step["folder"] / "model")
        assert record["body_tensors"]
        assert all(t.startswith("encoder.layers.1.") for t in record["body_tensors"]), record
    assert (
        json.loads((setup["root"] / "top" / "continual.json").read_text())["options"]["top_layers"]
        == 1
    )


def test_a_model_scoped_budget_counts_the_head_in_what_is_trained_and_stored(setup) -> None:
    result = run(
        setup, "scoped", "--budget", "30%", "--budget-scope", "model", "--reg-weight", "10"
    )
    assert result["summary"]["new_task"]["sentiment"] >= 0.8, result["summary"]
    for step in result["steps"]:
        model = step["body_parameters"] + step["trainable_head"]
        # The groups got what the head left of 30 % of the model ...
        assert step["backbone_budget"] * step["body_parameters"] == pytest.approx(
            0.30 * model - step["trainable_head"]
        )
        # ... so body and head together stay within it, and so does the delta on disk.
        assert step["trainable_body"] + step["trainable_head"] <= 0.30 * model
        assert step["delta_bytes"] <= 0.30 * step["full_bytes"]


def test_a_head_larger_than_the_budget_is_an_error() -> None:
    assert backbone_fraction(0.05, 1000, 10, "5%") == pytest.approx((0.05 * 1010 - 10) / 1000)
    with pytest.raises(ConfigError, match="budget 1% of the model .* the task's head alone has"):
        backbone_fraction(0.01, 1000, 20, "1%")


def test_importance_choice_takes_the_best_groups_that_fit() -> None:
    groups = [Group("a", ["a"], 50), Group("b", ["b"], 30), Group("c", ["c"], 20)]
    # 50 % of 100: "b" scores best, "a" does not fit beside it, "c" does.
    chosen = choose(groups, 0.5, {"a": 1.0, "b": 3.0, "c": 0.5})
    assert [g.name for g in chosen] == ["b", "c"]
    with pytest.raises(ConfigError, match="smaller than the smallest parameter group"):
        choose(groups, 0.1, {"a": 1.0, "b": 3.0, "c": 0.5})


def test_the_penalty_is_ewc_and_it_pulls_toward_the_old_values() -> None:
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": CLASSIFIER})
    name = "encoder.layers.0.attention.query.weight"
    anchor = {name: model.get_parameter(name).detach() - 0.5}
    fisher = {name: torch.full_like(anchor[name], 2.0)}
    cm = ContinualModel(model, [name], anchor, fisher, 3.0, {})
    expected = 0.5 * 3.0 * (2.0 * 0.25) * anchor[name].numel()
    assert float(cm.penalty().detach()) == pytest.approx(expected, rel=1e-5)
    assert [
        n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("targets")
    ] == [name]
    l2sp = ContinualModel(model, [name], anchor, None, 3.0, {})
    assert float(l2sp.penalty().detach()) == pytest.approx(
        0.5 * 3.0 * 0.25 * anchor[name].numel(), rel=1e-5
    )
    # The gradient of the penalty points away from the anchor.
    cm.penalty().backward()
    grad = model.get_parameter(name).grad
    assert grad is not None and bool((grad > 0).all())


@pytest.mark.parametrize(
    ("text", "value"), [("5%", 0.05), ("0.05", 0.05), ("100%", 1.0), ("12.5 %", 0.125), (0.2, 0.2)]
)
def test_budgets(text, value) -> None:
    assert parse_budget(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["0%", "0", "150%", "5", "abc", "-1%", True])
def test_bad_budgets(text) -> None:
    with pytest.raises(ConfigError, match="budget"):
        parse_budget(text)


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="unknown regularizer 'ewk'.*ewc"):
        ContinualOptions(regularizer="ewk")
    with pytest.raises(ConfigError, match="reg_weight 0 does nothing"):
        ContinualOptions(reg_weight=0)
    with pytest.raises(ConfigError, match="lora_rank must be ≥ 0"):
        ContinualOptions(lora_rank=-1)
    with pytest.raises(ConfigError, match="lora_rank 4 with budget 100%"):
        ContinualOptions(budget="100%", lora_rank=4)
    with pytest.raises(ConfigError, match="top_layers must be ≥ 0"):
        ContinualOptions(top_layers=-1)
    with pytest.raises(ConfigError, match="unknown budget_scope 'head'.*backbone, model"):
        ContinualOptions(budget_scope="head")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task: classification\ntrain: x\ndev: y\nsteps: 5\nepoch: 1\n", "unknown key 'epoch'"),
        ("task: classification\ndev: y\nsteps: 5\n", "'train' is required"),
        (
            "task: classification\ntrain: x\ndev: y\nsteps: 5\nepochs: 1\n",
            "give 'steps' or 'epochs'",
        ),
        ("task: classification\ntrain: x\ndev: y\nsteps: 0\n", "steps must be a positive integer"),
        ("task: classifcation\ntrain: a-train.tsv\ndev: a-dev.tsv\nsteps: 5\n", "unknown task"),
        ("task: classification\ntrain: a-train.tsv\ndev: a-dev.tsv\nsteps: 5\nlr: fast\n", "lr"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_task_files_fail_before_anything_is_written(setup, capsys, text, message) -> None:
    root = setup["root"]
    bad = root / "bad.yaml"
    bad.write_text(text)
    shutil.copy(root / "sentiment-train.tsv", root / "a-train.tsv")
    shutil.copy(root / "sentiment-dev.tsv", root / "a-dev.tsv")
    code, _, err = invoke(
        capsys, "continual", "--model", setup["base"], "--tasks", bad, "--out", root / "never"
    )
    assert code != 0 and message in err and str(bad) in err
    assert not (root / "never").exists()


def test_duplicate_task_names_and_an_existing_out_are_errors(setup, method, capsys) -> None:
    root = setup["root"]
    a = setup["tasks"][0]
    code, _, err = invoke(
        capsys, "continual", "--model", setup["base"], "--tasks", a, a, "--out", root / "never"
    )
    assert code != 0 and "its own name" in err and not (root / "never").exists()
    code, _, err = invoke(
        capsys, "continual", "--model", setup["base"], "--tasks", a, "--out", root / "never",
        "--top-layers", "3",
    )  # fmt: skip
    assert code == 2 and "exceeds the encoder's 2 layer(s)" in err and not (root / "never").exists()
    code, _, err = invoke(
        capsys, "continual", "--model", setup["base"], "--tasks", a, "--out", root / "method"
    )
    assert code != 0 and "--resume" in err
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "keep.txt").write_text("mine")
    code, _, err = invoke(
        capsys,
        "continual",
        "--model",
        setup["base"],
        "--tasks",
        a,
        "--out",
        root / "not-a-run",
        "--overwrite",
    )
    assert code != 0 and "not a continual run" in err
    assert (root / "not-a-run" / "keep.txt").read_text() == "mine"


def test_an_interrupted_run_resumes_to_the_same_deltas(setup, method, monkeypatch) -> None:
    root = setup["root"]
    original = workflow._train_task

    def interrupted(k, *args, **kwargs):
        if k == 2:
            raise KeyboardInterrupt
        return original(k, *args, **kwargs)

    monkeypatch.setattr(workflow, "_train_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        workflow.continual(
            setup["base"], setup["tasks"], root / "resumed", {"budget": "30%", "reg_weight": 10}
        )
    kept = json.loads((root / "resumed" / "continual.json").read_text())
    assert [s["task"] for s in kept["steps"]] == ["sentiment"]
    monkeypatch.setattr(workflow, "_train_task", original)
    workflow.continual(
        setup["base"],
        setup["tasks"],
        root / "resumed",
        {"budget": "30%", "reg_weight": 10},
        resume=True,
    )
    resumed = json.loads((root / "resumed" / "continual.json").read_text())
    assert [s["sha256"] for s in resumed["steps"]] == [s["sha256"] for s in method["steps"]]
    assert resumed["summary"]["matrix"] == method["summary"]["matrix"]
    # Other options than the run's are refused on resume.
    with pytest.raises(ConfigError, match="same options"):
        workflow.continual(
            setup["base"], setup["tasks"], root / "resumed", {"budget": "20%"}, resume=True
        )

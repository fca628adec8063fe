"""Parameter-efficient fine-tuning (pretrainkit.peft): LoRA, adapters, BitFit, LayerNorm-only.

A tiny random BERT (2 layers, hidden 64) with an MLM head is the base; the cue-word task of
tests/helpers.py is the downstream task.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import cli, invoke, require, write_classification
from safetensors.torch import load_file, save_file
from samp_helpers import TINY, VOCAB

import pretrainkit
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.model import Model
from pretrainkit.model import load as load_plain
from pretrainkit.peft.core import PEFT_METHODS, BaseReference, apply_peft
from pretrainkit.peft.folder import load_peft, merge_folder
from pretrainkit.peft.hf_export import export_hf
from pretrainkit.peft.options import OPTIONS
from pretrainkit.tokenization import load_tokenizer
from pretrainkit.workflows.finetune import evaluate, finetune, predict

CLASSIFIER = [{"name": "classification", "options": {"labels": ["0", "1"], "pooling": "mean"}}]
QUIET = ["--precision", "fp32", "--no-progress", "--seq-length", "32", "--batch-size", "16"]
METHODS = [
    ("lora", {}),
    ("lora", {"lora_targets": "key,output,up,down", "lora_rank": 2}),
    ("adapter", {"adapter_size": 8}),
    ("adapter", {"adapter_size": 8, "adapter_places": "ffn"}),
    ("bitfit", None),
    ("layernorm", None),
]


def _classifier(seed: int = 0) -> Model:
    torch.manual_seed(seed)
    return pretrainkit.build_model("bert-tiny", {**TINY, "targets": CLASSIFIER})


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, len(VOCAB), (4, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])}


REFERENCE = BaseReference("unused", "0" * 64)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> dict[str, Path]:
    """A base folder and a `finetune --peft lora` run on it, through the command line."""
    root = tmp_path_factory.mktemp("peft")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    base = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    base.tokenizer = load_tokenizer(root / "vocab.txt")
    base.save(root / "base")
    write_classification(root / "train.tsv", 256, seed=1)
    write_classification(root / "dev.tsv", 64, seed=2)
    cli("finetune", "--model", root / "base", "--train", root / "train.tsv",
        "--dev", root / "dev.tsv", "--out", root / "run", "--steps", 150, "--lr", 1e-2,
        "--warmup", 5, *QUIET, "--peft", "lora", "--lora-rank", 4)  # fmt: skip
    return {"root": root, "base": root / "base", "run": root / "run", "dev": root / "dev.tsv"}


def test_every_method_has_its_options_entry() -> None:
    # The CLI reads the torch-free OPTIONS; the registry is what runs.
    assert sorted(OPTIONS) == PEFT_METHODS.names()


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_the_wrapped_model_starts_exactly_as_the_base(method, options) -> None:
    model = _classifier().eval()
    batch = _batch()
    before = model(**batch)
    peft = apply_peft(model, method, options, REFERENCE).eval()
    after = peft(**batch)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.hidden_states, after.hidden_states)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_only_the_method_tensors_and_the_head_train(method, options) -> None:
    model = _classifier()
    peft = apply_peft(model, method, options, REFERENCE)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    assert trainable == set(peft.trainable)
    expected = {
        "lora": lambda k: k.endswith((".lora_a", ".lora_b")),
        "adapter": lambda k: ".adapter_" in k,
        "bitfit": lambda k: k.endswith(".bias"),
        "layernorm": lambda k: "norm" in k.rsplit(".", 2)[-2],
    }[method]
    body = {k for k in before if not k.startswith("targets.")}
    assert {k for k in body if k in trainable} == {k for k in body if expected(k)}
    assert {k for k in before if k.startswith("targets.")} <= trainable  # the head always
    if options and "lora_targets" in options:
        wrapped = {k.rsplit(".", 2)[-2] for k in trainable if ".lora_" in k}
        assert wrapped == {"key", "output", "up", "down"}
    if options and options.get("adapter_places") == "ffn":
        assert all(".feed_forward.down." in k for k in trainable if ".adapter_" in k)
    optimizer = torch.optim.AdamW(peft.trainable_parameters(), lr=1e-2)
    peft.train()
    for step in range(3):
        loss = peft(**_batch(step)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, value in model.named_parameters():
        changed = not torch.equal(value, before[name])
        assert changed == (name in trainable), name
        assert (value.grad is not None) == (name in trainable), name


def test_finetune_peft_lora_learns_the_task(lora_run) -> None:
    run = json.loads((lora_run["run"] / "run.json").read_text())
    assert run["peft"]["method"] == "lora"
    assert run["peft"]["options"] == {"lora_rank": 4, "lora_alpha": 16.0, "lora_dropout": 0.0,
                                      "lora_targets": "query,value"}  # fmt: skip
    result = evaluate(lora_run["run"], lora_run["dev"])
    assert result["accuracy"] > 0.9, result
    # The body did not move: its tensors are the base's, bit for bit.
    base, tuned = load_plain(lora_run["base"]), pretrainkit.load(lora_run["run"])
    tuned_state = tuned.state_dict()
    for key, value in base.encoder.state_dict().items():
        assert torch.equal(tuned_state[f"encoder.{key}"], value), key
    lora_b = [v for k, v in tuned_state.items() if k.endswith(".lora_b")]
    assert len(lora_b) == 4 and all(v.abs().sum() > 0 for v in lora_b)  # the update trained


def test_the_peft_folder_holds_only_the_trained_tensors(lora_run) -> None:
    folder = lora_run["run"] / "model"
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.safetensors",
        "peft.json",
        "task.json",
        "task_config.yaml",
    ]
    keys = set(load_file(folder / "model.safetensors"))
    assert {k for k in keys if not k.startswith("targets.")} == {
        f"encoder.layers.{i}.attention.{p}.lora_{m}"
        for i in (0, 1)
        for p in ("query", "value")
        for m in ("a", "b")
    }
    record = json.loads((folder / "peft.json").read_text())
    assert record["base"]["path"] == str(lora_run["base"].resolve())
    assert len(record["base"]["sha256"]) == 64
    # Bytes on disk against the full fine-tuned model the merge writes.
    merged = merge_folder(folder, lora_run["root"] / "merged-size")
    size = sum(p.stat().st_size for p in folder.iterdir())
    full = sum(p.stat().st_size for p in merged.rglob("*") if p.is_file())
    assert size < 0.2 * full, (size, full)


def test_load_evaluate_and_predict_a_peft_folder(lora_run, tmp_path) -> None:
    model = pretrainkit.load(lora_run["run"])
    assert model.task_record is not None and model.tokenizer is not None
    lines = predict(lora_run["run"], lora_run["dev"], tmp_path / "out.tsv")
    predicted = [line.split("\t")[0] for line in lines.read_text().splitlines()[1:]]
    gold = [line.split("\t")[0] for line in lora_run["dev"].read_text().splitlines()[1:]]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    assert accuracy == pytest.approx(evaluate(lora_run["run"], lora_run["dev"])["accuracy"])


def test_merge_gives_the_same_logits(lora_run, capsys) -> None:
    out = lora_run["root"] / "merged"
    code, _, err = invoke(capsys, "merge", "--model", lora_run["run"], "--out", out)
    assert code == 0, err
    merged = load_plain(out).eval()  # a plain folder: any command's loader reads it
    assert not any("lora" in k for k in merged.state_dict())
    peft_model = pretrainkit.load(lora_run["run"])
    batch = _batch(3)
    batch.pop("labels")
    with torch.no_grad():
        expected, got = peft_model(**batch).logits, merged(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert evaluate(out, lora_run["dev"]) == pytest.approx(
        evaluate(lora_run["run"], lora_run["dev"])
    )


def test_bitfit_merges_and_adapters_refuse(lora_run, tmp_path) -> None:
    common = {"steps": 6, "lr": 1e-2, "warmup": 0, "precision": "fp32", "progress": False}
    for method in ("bitfit", "adapter"):
        finetune("classification", lora_run["base"], lora_run["root"] / "train.tsv", None,
                 tmp_path / method, common, batch_size=16, task_options={"seq_length": 32},
                 peft=method, peft_options={"adapter_size": 4} if method == "adapter" else None)  # fmt: skip
    merged = merge_folder(tmp_path / "bitfit", tmp_path / "bitfit-merged")
    batch = _batch(4)
    with torch.no_grad():
        expected = pretrainkit.load(tmp_path / "bitfit")(**batch).logits
        torch.testing.assert_close(
            load_plain(merged).eval()(**batch).logits, expected, atol=1e-6, rtol=0
        )
    with pytest.raises(CheckpointError, match="only LoRA has a HF peft format"):
        export_hf(tmp_path / "bitfit", tmp_path / "bitfit-hf")
    with pytest.raises(ConfigError, match="adapters cannot be merged"):
        merge_folder(tmp_path / "adapter", tmp_path / "adapter-merged")
    assert not (tmp_path / "adapter-merged").exists()
    # An adapter folder loads and evaluates on its base all the same.
    assert 0 <= evaluate(tmp_path / "adapter", lora_run["dev"])["accuracy"] <= 1


def test_a_changed_base_is_refused(lora_run, tmp_path) -> None:
    base, run = tmp_path / "base", tmp_path / "run"
    shutil.copytree(lora_run["base"], base)
    shutil.copytree(lora_run["run"] / "model", run)
    record = json.loads((run / "peft.json").read_text())
    record["base"]["path"] = str(base)
    (run / "peft.json").write_text(json.dumps(record))
    pretrainkit.load(run)  # the copy is the same base
    weights = load_file(base / "model.safetensors")
    weights["encoder.layers.0.attention.query.weight"][0, 0] += 1e-3
    save_file(weights, str(base / "model.safetensors"))
    with pytest.raises(CheckpointError, match="the base model changed"):
        pretrainkit.load(run)
    # A moved base can be named instead of the recorded path; its hash is checked the same.
    assert load_peft(run, base=lora_run["base"]).base.path == str(lora_run["base"].resolve())
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match="its base model .*nowhere cannot be used"):
        load_peft(run, base=missing)


def test_bad_options_are_clear_errors(lora_run, tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match=r"gate matched no module.*down, key, output, query"):
        apply_peft(_classifier(), "lora", {"lora_targets": "query,gate"}, REFERENCE)
    with pytest.raises(ConfigError, match="lora_rank: the rank must be an integer of at least 1"):
        apply_peft(_classifier(), "lora", {"lora_rank": 0}, REFERENCE)
    with pytest.raises(ConfigError, match="unknown projection"):
        apply_peft(_classifier(), "lora", {"lora_targets": "qkv"}, REFERENCE)
    common = ["--model", lora_run["base"], "--train", lora_run["root"] / "train.tsv", *QUIET]
    code, _, err = invoke(capsys, "finetune", *common, "--out", tmp_path / "a", "--steps", 2,
                          "--peft", "adapter", "--lora-rank", 4)  # fmt: skip
    assert code != 0 and "--lora-rank does not apply to '--peft adapter'" in err, err
    code, _, err = invoke(capsys, "finetune", *common, "--out", tmp_path / "b", "--steps", 2,
                          "--lora-rank", 4)  # fmt: skip
    assert code != 0 and "does not apply to 'full fine-tuning" in err, err
    code, _, err = invoke(capsys, "finetune", *common, "--out", tmp_path / "c", "--steps", 2,
                          "--peft", "lora", "--lora-rank", 0)  # fmt: skip
    assert code != 0 and "lora_rank" in err and "Traceback" not in err, err
    code, _, err = invoke(capsys, "finetune", *common[2:], "--model", lora_run["run"],
                          "--out", tmp_path / "d", "--steps", 2, "--peft", "lora")  # fmt: skip
    assert code != 0 and "a PEFT folder; `pretrainkit merge` it" in err, err
    code, _, err = invoke(capsys, "merge", "--model", lora_run["base"], "--out", tmp_path / "e")
    assert code != 0 and "not a PEFT folder" in err, err


def test_lora_exports_in_the_hf_peft_format(lora_run, capsys) -> None:
    peft = require("peft", "HF peft parity")
    transformers = require("transformers", "HF peft parity")
    out = lora_run["root"] / "hf"
    code, _, err = invoke(capsys, "convert", "--to-hf", lora_run["run"], "--out", out)
    assert code == 0, err
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    hf_base = transformers.AutoModelForMaskedLM.from_pretrained(out / "base").eval()
    batch = _batch(5)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        plain = hf_base(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hf = peft.PeftModel.from_pretrained(hf_base, out).eval()
        adapted = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        ours = pretrainkit.load(lora_run["run"]).eval()(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    got, expected = adapted.hidden_states[-1][real], ours.hidden_states[real]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (plain.hidden_states[-1][real] - expected).abs().max() > 1e-3  # the adapter matters


def test_a_peft_run_resumes_bit_for_bit(lora_run, tmp_path) -> None:
    options = {"steps": 6, "save_every": 3, "lr": 1e-2, "warmup": 0, "precision": "fp32",
               "progress": False}  # fmt: skip
    common = {"batch_size": 16, "task_options": {"seq_length": 32}, "peft": "lora"}
    train = lora_run["root"] / "train.tsv"
    finetune("classification", lora_run["base"], train, None, tmp_path / "a", options, **common)
    # Interrupted after the step-3 checkpoint: the later checkpoint and the model are gone.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "model")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-00000006")
    finetune("classification", lora_run["base"], train, None, tmp_path / "b", options,
             resume=True, **common)  # fmt: skip
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

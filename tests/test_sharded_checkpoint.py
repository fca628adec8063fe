"""Sharded checkpoints (``--checkpoint-format sharded``) on CPU (torchrun, gloo).

A tiny BERT pre-trains for 20 steps under FSDP on two processes, saving every 10 steps in the
sharded format: every process writes its half of the weights and of the Adam moments through
torch.distributed.checkpoint as safetensors, nothing is gathered, and nothing is pickled. The
step-10 checkpoint then resumes on one process and as DDP on two; the losses after the switch
follow the uninterrupted run within 1 % per step (one process against two: the MLM loss is a
mean over each process's masked tokens, see tests/test_distributed.py; measured ≤ 0.2 %).
``convert --from-checkpoint`` makes a model folder of a sharded checkpoint whose weights are
exactly those of the run's full-format final model, and refuses a damaged checkpoint naming
the file. A TP 2 run's sharded checkpoint (column- and row-split DTensors) resumes on one
process. Dropout is off so that nothing else differs.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    LAYOUT_BATCH,
    LAYOUT_STEPS,
    QUIET,
    cli,
    cut_at_step_10,
    invoke,
    layout_args,
    layout_shards,
    torchrun,
    write_classification,
)
from helpers import run_losses as losses
from safetensors.torch import load_file

import pretrainkit
from pretrainkit.errors import CheckpointError
from pretrainkit.training.checkpoint import MANIFEST, TRAINER_STATE

STEPS, GLOBAL_BATCH = LAYOUT_STEPS, LAYOUT_BATCH
TOLERANCE = 0.01  # relative, per step, across numbers of processes (module docstring)
SHARDED = ["--checkpoint-format", "sharded"]
FSDP = ["--strategy", "fsdp", *SHARDED]
SHARD = "shard-{:05d}-model-00001-of-00001.safetensors"  # DCP's name for process K-1's file


def pretrain_args(root: Path, out: Path, *extra: str) -> list[str]:
    return layout_args(root / "shards", out, *extra)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards and the uninterrupted FSDP 2 run in the sharded format (launched once)."""
    root = tmp_path_factory.mktemp("sharded")
    layout_shards(root)
    torchrun(2, *pretrain_args(root, root / "fsdp", *FSDP), log=root / "fsdp.log")
    return root


def step(run: Path, number: int) -> Path:
    return run / "checkpoints" / f"step-{number:08d}"


def elements(path: Path) -> int:
    """The tensor elements a safetensors file holds, from its JSON header alone."""
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    shapes = [entry["shape"] for key, entry in header.items() if key != "__metadata__"]
    return sum(int(torch.Size(shape).numel()) for shape in shapes)


def assert_nothing_pickled(folder: Path) -> None:
    """Every file but the trainer state (read with weights_only) is JSON, YAML or safetensors;
    no DCP ``.metadata`` pickle, no pickle or torch.save (zip) stream anywhere."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name == TRAINER_STATE:
            continue
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", path  # pickle protocol ≥ 2, zip
        if path.suffix == ".safetensors":
            elements(path)  # a JSON header, or this fails
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        else:
            pytest.fail(f"unexpected file in a sharded checkpoint: {path}")


def test_every_process_writes_its_half_and_nothing_is_gathered(root: Path) -> None:
    checkpoint = step(root / "fsdp", 10)
    assert not (checkpoint / "model.safetensors").exists()  # nothing gathered onto rank 0
    index = json.loads((checkpoint / "sharded" / "index.json").read_text())
    assert (index["world_size"], index["layout"]["strategy"]) == (2, "fsdp")
    parameters = sum(
        int(torch.Size(t["shape"]).numel()) for t in index["model"]["tensors"].values()
    )
    assert parameters == json.loads((root / "fsdp" / "run.json").read_text())["parameters"]
    for part, share in (("model", parameters), ("optimizer", 2 * parameters)):
        files = [checkpoint / "sharded" / part / SHARD.format(k) for k in (1, 2)]
        assert sorted(index[part]["files"]) == [f.name for f in files]
        held = [elements(f) for f in files]
        # FSDP2 splits every tensor's rows in two (an odd count gives one more to rank 0).
        assert all(0.45 * share <= n <= 0.55 * share for n in held), (part, held, share)
    assert sum(elements(f) for f in (checkpoint / "sharded" / "model").iterdir()) == parameters
    listed = json.loads((checkpoint / MANIFEST).read_text())["files"]
    on_disk = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()}
    assert set(listed) == on_disk - {MANIFEST}  # the manifest covers every shard
    assert_nothing_pickled(checkpoint)
    # The optimizer shards, read back whole in one process: every element stored, the step
    # count and the moments of 10 updates.
    from pretrainkit.distributed.sharded_checkpoint import load_part
    from pretrainkit.distributed.sharded_index import read_index

    stored = read_index(checkpoint)["optimizer"]["tensors"]
    assert {t["dtype"] for t in stored.values()} == {"F32"}
    moments = {k: torch.full(t["shape"], float("nan")) for k, t in stored.items()}
    load_part(checkpoint, "optimizer", moments)
    assert all(bool(torch.isfinite(v).all()) for v in moments.values())
    assert {float(v) for k, v in moments.items() if k.endswith(".step")} == {10.0}
    assert all(float(v.sum()) > 0 for k, v in moments.items() if k.endswith(".exp_avg_sq"))
    # RUN/model stays a plain full model folder.
    assert pretrainkit.load(root / "fsdp" / "model") is not None


def test_resume_on_one_process_follows_the_uninterrupted_run(root: Path) -> None:
    resumed = cut_at_step_10(root / "fsdp", root / "fsdp-on-one")
    cli(*pretrain_args(root, resumed, "--resume"))  # the full format from here on
    expected, got = losses(root / "fsdp"), losses(resumed)
    assert sorted(got) == list(range(1, STEPS + 1))
    for number in range(11, STEPS + 1):
        assert got[number] == pytest.approx(expected[number], rel=TOLERANCE), number
    assert (step(resumed, 20) / "model.safetensors").is_file()


def test_resume_as_ddp_on_two_processes(root: Path) -> None:
    resumed = cut_at_step_10(root / "fsdp", root / "fsdp-on-ddp")
    args = pretrain_args(root, resumed, "--strategy", "ddp", *SHARDED, "--resume")
    torchrun(2, *args, log=root / "on-ddp.log")
    assert "(step 10)" in (root / "on-ddp.log").read_text()
    expected, got = losses(root / "fsdp"), losses(resumed)
    for number in range(11, STEPS + 1):
        assert got[number] == pytest.approx(expected[number], rel=TOLERANCE), number
    # DDP writes the sharded format too: replicated tensors, each written by one process.
    index = json.loads((step(resumed, 20) / "sharded" / "index.json").read_text())
    assert index["layout"]["strategy"] == "ddp" and len(index["model"]["files"]) == 2
    final = load_file(str(resumed / "model" / "model.safetensors"))
    uninterrupted = load_file(str(root / "fsdp" / "model" / "model.safetensors"))
    assert all(torch.allclose(final[k], uninterrupted[k], atol=1e-3) for k in final)


class Refused(pickle.Unpickler):
    def load(self):  # type: ignore[override]
        raise AssertionError("a sharded checkpoint was read with pickle")


def test_convert_gives_the_full_model_of_the_same_step(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Neither pickle nor torch.load may run while the checkpoint is read.
    def refuse(*args, **kwargs):
        raise AssertionError("a sharded checkpoint was read with pickle")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", Refused)
    out = tmp_path / "model"
    cli("convert", "--from-checkpoint", step(root / "fsdp", 20), "--out", out)
    monkeypatch.undo()
    # RUN/model is the full-format model of step 20, gathered by FSDP at the end of the run.
    full = load_file(str(root / "fsdp" / "model" / "model.safetensors"))
    got = load_file(str(out / "model.safetensors"))
    assert got.keys() == full.keys()
    assert all(torch.equal(got[k], full[k]) for k in full)  # exactly
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "model.safetensors",
        "tokenizer",
    ]
    model = pretrainkit.load(out)
    assert model.tokenizer is not None and model.tied_parameters()  # the MLM head tie is back
    # Loading the checkpoint itself says what it is and how to get a model folder from it.
    with pytest.raises(CheckpointError, match="a sharded checkpoint.*convert --from-checkpoint"):
        pretrainkit.load(step(root / "fsdp", 20))


def damaged_copy(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "step-00000010"
    shutil.copytree(step(root / "fsdp", 10), copy)
    return copy


def test_a_tampered_shard_is_refused(root: Path, tmp_path: Path, capsys) -> None:
    checkpoint = damaged_copy(root, tmp_path)
    shard = checkpoint / "sharded" / "model" / SHARD.format(2)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # one weight's last byte: same size, other contents
    shard.write_bytes(bytes(data))
    code, _, err = invoke(
        capsys, "convert", "--from-checkpoint", checkpoint, "--out", tmp_path / "m"
    )
    assert code == 2 and f"sharded/model/{SHARD.format(2)} has other contents" in err, err
    assert not (tmp_path / "m").exists()
    # Resuming passes it over likewise (kept as .damaged, never read).
    run = cut_at_step_10(root / "fsdp", tmp_path / "run")
    (step(run, 10) / "sharded" / "model" / SHARD.format(2)).write_bytes(bytes(data))
    code, _, err = invoke(capsys, *pretrain_args(root, run, "--resume"))
    assert code == 2 and "no intact checkpoint" in err and SHARD.format(2) in err, err


def test_a_missing_or_unlisted_shard_is_refused(root: Path, tmp_path: Path, capsys) -> None:
    checkpoint = damaged_copy(root, tmp_path)
    missing = checkpoint / "sharded" / "optimizer" / SHARD.format(1)
    missing.unlink()
    code, _, err = invoke(
        capsys, "convert", "--from-checkpoint", checkpoint, "--out", tmp_path / "m"
    )
    assert code == 2 and f"sharded/optimizer/{SHARD.format(1)} is missing" in err, err
    # A shard removed from the manifest too is still missing from what index.json lists, and
    # an extra file in a shard folder is never read (DCP would read every *.safetensors).
    from pretrainkit.distributed.sharded_index import read_index

    with pytest.raises(CheckpointError, match=f"shard {SHARD.format(1)} is missing"):
        read_index(checkpoint)
    shutil.copyfile(step(root / "fsdp", 10) / "sharded" / "optimizer" / SHARD.format(1), missing)
    shutil.copyfile(missing, missing.with_name("shard-00003-model-00001-of-00001.safetensors"))
    with pytest.raises(CheckpointError, match="shard-00003-.* is not a shard index.json lists"):
        read_index(checkpoint)


def test_bad_input_is_an_error_before_anything_is_written(
    root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "m"
    convert = ("convert", "--out", out, "--from-checkpoint")
    cases = [
        ((*convert, root / "fsdp" / "model"), "not a sharded checkpoint"),
        ((*convert, tmp_path / "nowhere"), "no such checkpoint folder"),
        ((*convert, step(root / "fsdp", 10), "--family", "bert"), "--family"),
        (pretrain_args(root, out, "--checkpoint-format", "shard"), "did you mean 'sharded'"),
        (
            pretrain_args(root, out, "--strategy", "deepspeed", *SHARDED),
            "checkpoint_format 'sharded' with strategy 'deepspeed'",
        ),
    ]
    # A recipe that wraps the model (here PEFT) keeps the full format.
    write_classification(tmp_path / "train.tsv", 16, seed=0)
    finetune = ("finetune", "--model", root / "fsdp" / "model", "--train", tmp_path / "train.tsv")
    cases.append(
        (
            (*finetune, "--out", out, "--steps", "2", *QUIET, "--peft", "lora", *SHARDED),
            "this run trains a PeftModel",
        )
    )
    for argv, message in cases:
        code, _, err = invoke(capsys, *argv)
        assert code == 2 and message in err, (argv, err)
        assert not out.exists()
    # A full checkpoint is a model folder already.
    cli(*pretrain_args(root, tmp_path / "full", "--steps", "2", "--save-every", "2"))
    code, _, err = invoke(capsys, *convert, step(tmp_path / "full", 2))
    assert code == 2 and "a full checkpoint" in err, err


def test_engines_that_cannot_reshard_refuse_a_sharded_checkpoint(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pretrainkit.distributed.sharded_checkpoint import check_resumable

    for strategy in ("single", "ddp", "fsdp"):  # with or without tensor / pipeline parallelism
        check_resumable(SimpleNamespace(strategy_name=strategy), tmp_path)
    with pytest.raises(CheckpointError, match=f"{tmp_path}: a sharded checkpoint .* deepspeed"):
        check_resumable(SimpleNamespace(strategy_name="deepspeed"), tmp_path)


def test_tensor_parallel_checkpoint_resumes_on_one_process(root: Path) -> None:
    # TP 2 (one data reader): query/key/value and FFN up split by rows, the outputs and FFN
    # down by columns, embeddings and norms replicated (each written once).
    run = root / "tp2"
    args = pretrain_args(root, run, "--tensor-parallel", "2", *SHARDED)
    torchrun(2, *args, log=root / "tp2.log")
    index = json.loads((step(run, 10) / "sharded" / "index.json").read_text())
    assert (index["layout"]["tensor_parallel"], len(index["model"]["files"])) == (2, 2)
    resumed = cut_at_step_10(run, root / "tp2-on-one")
    cli(*pretrain_args(root, resumed, "--resume"))
    expected, got = losses(run), losses(resumed)
    for number in range(11, STEPS + 1):
        assert got[number] == pytest.approx(expected[number], rel=1e-3), number

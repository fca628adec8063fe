"""Pipelines sharded by FSDP (``--pipeline-parallel 2 --strategy fsdp``) on CPU (torchrun, gloo).

Two pipelines of two stages (4 processes): each pipeline reads half of every global batch and
each stage is sharded by FSDP2 over the same stage of both pipelines, which reduce-scatters
(averages) its gradients once per step. That is DDP's rule, so the reference is DDP on two
processes: the curves agree to float rounding (measured ≤ 2.1e-7 relative; asserted 1e-3).
The headline layout, tensor × pipeline × FSDP (``--tensor-parallel 2 --pipeline-parallel 2
--strategy fsdp``, 8 processes: 2 pipelines × 2 stages × 2 tensor-parallel processes, FSDP
sharding the split blocks over the pipelines in 2-D; with ``--sequence-parallel``), follows
the same reference. Both write
the full weights (gathered over the shards, the tensor-parallel parts and the stages), which
load in one process; their checkpoints resume on other layouts with the same losses. The
FSDP × PP 2 run writes sharded checkpoints (every process its stage's part, through
torch.distributed.checkpoint), which resume on DDP and consolidate into a model folder; one
process's sharded checkpoint resumes on a pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import (
    LAYOUT_STEPS,
    NO_DROPOUT_AT_ALL,
    TINY_MODEL,
    cli,
    cut_at_step_10,
    layout_args,
    layout_shards,
    loaded_mlm_outputs,
    torchrun,
)
from helpers import run_losses as losses
from helpers import run_metric as metric
from safetensors.torch import load_file

STEPS = LAYOUT_STEPS
TOLERANCE = 1e-3  # relative, per step: the same rule as the reference, only float order differs
FSDP_PP2 = ["--pipeline-parallel", "2", "--strategy", "fsdp"]
FSDP_TP2_PP2 = ["--tensor-parallel", "2", *FSDP_PP2]


def pretrain_args(shards: Path, out: Path, *extra: str) -> list[str]:
    return layout_args(shards, out, *extra, model=TINY_MODEL, dropout=NO_DROPOUT_AT_ALL)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards, the DDP reference (2 processes), FSDP × PP 2 (4) and TP 2 × PP 2 × FSDP (8)."""
    root = tmp_path_factory.mktemp("fsdp-pp")
    shards = layout_shards(root, "bert")
    torchrun(2, *pretrain_args(shards, root / "ddp", "--strategy", "ddp"), log=root / "ddp.log")
    # Its checkpoints sharded: each process writes its stage's part (the tied copy once).
    sharded = ["--checkpoint-format", "sharded"]
    torchrun(4, *pretrain_args(shards, root / "fsdp-pp2", *FSDP_PP2, *sharded), log=root / "a.log")
    # With sequence parallelism: the stages' norms run on sequence parts, FSDP-sharded too.
    sequence = [*FSDP_TP2_PP2, "--sequence-parallel"]
    torchrun(8, *pretrain_args(shards, root / "fsdp-tp2-pp2", *sequence), log=root / "b.log")
    return root


@pytest.mark.parametrize(
    ("run", "world"), [("fsdp-pp2", 4), ("fsdp-tp2-pp2", 8)], ids=["pp2", "tp2-pp2"]
)
def test_sharded_pipelines_train_as_ddp(root: Path, run: str, world: int) -> None:
    for name in ("loss", "grad_norm", "nsp_accuracy"):
        expected, got = metric(root / "ddp", name), metric(root / run, name)
        assert sorted(got) == list(range(1, STEPS + 1))
        for step in expected:
            assert got[step] == pytest.approx(expected[step], rel=TOLERANCE, abs=1e-6), name
    plan = json.loads((root / run / "run.json").read_text())
    assert (plan["world_size"], plan["data_parallel_size"], plan["batch_size"]) == (world, 2, 4)
    assert plan["strategy"]["strategy"] == "fsdp"


@pytest.mark.parametrize("run", ["fsdp-pp2", "fsdp-tp2-pp2"], ids=["pp2", "tp2-pp2"])
def test_sharded_pipeline_model_loads_in_one_process(root: Path, run: str) -> None:
    # The saved weights are whole (every shard, part and stage gathered; the tied copy once),
    # equal to DDP's up to the float order (Adam can turn that into a step of up to lr).
    reference = load_file(str(root / "ddp" / "model" / "model.safetensors"))
    weights = load_file(str(root / run / "model" / "model.safetensors"))
    assert weights.keys() == reference.keys()
    assert all(torch.allclose(weights[k], reference[k], atol=1e-4) for k in weights)
    got, expected = loaded_mlm_outputs(root / run / "model", root / "ddp" / "model")
    assert float(got.loss) == pytest.approx(float(expected.loss), rel=TOLERANCE)


@pytest.mark.parametrize(
    ("source", "layout", "world"),
    [
        # saved sharded over the pipelines (and split over "tp"), resumed on plain DDP
        ("fsdp-pp2", ["--strategy", "ddp"], 2),
        # saved at TP 2 × PP 2 × FSDP, resumed without tensor parallelism (the shards reloaded)
        ("fsdp-tp2-pp2", FSDP_PP2, 4),
    ],
    ids=["fsdp-pp2-to-ddp", "tp2-pp2-to-fsdp-pp2"],
)
def test_sharded_pipeline_checkpoint_resumes_on_another_layout(
    root: Path, source: str, layout: list[str], world: int, tmp_path: Path
) -> None:
    # Two data-parallel readers before and after: the data positions come back as they are.
    cut = cut_at_step_10(root / source, tmp_path / "cut")
    shards = root / "shards"
    torchrun(world, *pretrain_args(shards, cut, *layout, "--resume"), log=tmp_path / "r.log")
    expected, got = losses(root / source), losses(cut)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(11, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=TOLERANCE), step


def test_sharded_pipeline_checkpoint_consolidates(root: Path, tmp_path: Path) -> None:
    checkpoint = root / "fsdp-pp2" / "checkpoints" / "step-00000010"
    index = json.loads((checkpoint / "sharded" / "index.json").read_text())
    assert index["layout"] == {
        "strategy": "fsdp", "tensor_parallel": 1, "pipeline_parallel": 2, "data_parallel": 2
    }  # fmt: skip
    assert len(list((checkpoint / "sharded" / "model").iterdir())) == 4  # one file per process
    out = tmp_path / "model"
    cli("convert", "--from-checkpoint", checkpoint, "--out", out)
    # Every stage's tensors, the tied copy once: DDP's step-10 weights, to float order.
    reference = load_file(str(root / "ddp" / "checkpoints" / "step-00000010" / "model.safetensors"))
    weights = load_file(str(out / "model.safetensors"))
    assert weights.keys() == reference.keys()
    assert all(torch.allclose(weights[k], reference[k], atol=1e-4) for k in weights)


def test_one_process_sharded_checkpoint_resumes_on_a_pipeline(root: Path, tmp_path: Path) -> None:
    # The last stage holds the MLM head without the word embedding it is tied to: it reads
    # the head from the embedding's stored tensors (and their Adam moments).
    single = tmp_path / "single"
    cli(*pretrain_args(root / "shards", single, "--checkpoint-format", "sharded"))
    cut = cut_at_step_10(single, tmp_path / "cut")
    torchrun(
        2, *pretrain_args(root / "shards", cut, "--pipeline-parallel", "2", "--resume"),
        log=tmp_path / "r.log",
    )  # fmt: skip
    expected, got = losses(single), losses(cut)
    for step in range(11, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=TOLERANCE), step

"""Two CPU processes (torchrun, gloo) against one: DDP, FSDP2 and DeepSpeed ZeRO-2.

Each strategy pre-trains the same tiny BERT for 20 steps with the same global batch (8) as a
single-process reference, and the loss curves must agree step by step within 1 % (relative).
Why not exactly: the MLM loss of a micro-batch is the mean over *its* masked tokens. Two
processes each average their half and the halves are averaged (logged loss and gradients
alike), which weights a token by 1/(2·its half's masked count) instead of 1/(the batch's).
Dropout is off so that nothing else differs; the measured gap is ≤ 0.2 % over 20 steps.

Launches are shared: one run per strategy (module fixture), reused by the checks below.
Resuming on two processes, though, must continue the interrupted run exactly (0 tolerance).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import (
    LAYOUT_BATCH,
    LAYOUT_STEPS,
    QUIET,
    cli,
    cut_at_step_10,
    layout_args,
    layout_shards,
    needs,
    torchrun,
    write_classification,
)
from helpers import run_losses as losses
from safetensors.torch import load_file

import pretrainkit
from pretrainkit.training.checkpoint import write_manifest

STEPS, GLOBAL_BATCH = LAYOUT_STEPS, LAYOUT_BATCH
TOLERANCE = 0.01  # relative, per logged step; see the module docstring
STRATEGIES = {
    # DDP accumulates 2 micro-batches of 2 (the first under no_sync); FSDP also recomputes
    # activations; all three have 8 sequences per optimizer step.
    "ddp": ["--strategy", "ddp", "--accumulate", "2"],
    "fsdp": ["--strategy", "fsdp", "--activation-checkpointing"],
    "deepspeed": ["--strategy", "deepspeed", "--zero-stage", "2"],
}
NEEDS_DEEPSPEED = needs("deepspeed")


def pretrain_args(data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return layout_args(data["shards"], out, *extra)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist")
    layout_shards(root)
    write_classification(root / "train.tsv", rows=64, seed=1)
    # The reference: one process, the same global batch.
    cli(*pretrain_args({"shards": root / "shards"}, root / "single"))
    return {"root": root, "shards": root / "shards", "train": root / "train.tsv"}


@pytest.fixture(scope="module")
def runs(data: dict[str, Path]) -> dict[str, Path]:
    """Run folders by strategy, launched on first use."""
    return {}


def run_of(strategy: str, data: dict[str, Path], runs: dict[str, Path]) -> Path:
    failed = data["root"] / f"{strategy}.failed"
    if failed.exists():  # launched once already: every test of it reports the same failure
        pytest.fail(f"the {strategy} run failed earlier; its log:\n{failed.read_text()}")
    if strategy not in runs:
        out = data["root"] / strategy
        try:
            torchrun(
                2,
                *pretrain_args(data, out, *STRATEGIES[strategy]),
                log=data["root"] / f"{strategy}.log",
            )
        except AssertionError as error:
            failed.write_text(str(error))
            raise
        runs[strategy] = out
    return runs[strategy]


PARAMS = [
    pytest.param("ddp"),
    pytest.param("fsdp"),
    pytest.param("deepspeed", marks=NEEDS_DEEPSPEED),
]


@pytest.mark.parametrize("strategy", PARAMS)
def test_two_processes_follow_the_single_process_loss_curve(
    strategy: str, data: dict[str, Path], runs: dict[str, Path]
) -> None:
    run = run_of(strategy, data, runs)
    single, distributed = losses(data["root"] / "single"), losses(run)
    assert sorted(distributed) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert distributed[step] == pytest.approx(loss, rel=TOLERANCE), step
    assert single[STEPS] < single[1] - 0.5  # it learns, so the comparison means something
    plan = json.loads((run / "run.json").read_text())
    assert (plan["world_size"], plan["global_batch_size"]) == (2, GLOBAL_BATCH)
    assert plan["strategy"]["strategy"] == strategy
    # Every process's data position is in the checkpoint, each its own part of the shards.
    positions = json.loads((run / "checkpoints" / "step-00000020" / "data_state.json").read_text())
    ranks = [p["stream"] for p in positions["ranks"]]
    assert [(p["rank"], p["world_size"]) for p in ranks] == [(0, 2), (1, 2)]
    assert all(p["cursor"] == STEPS * GLOBAL_BATCH // 2 for p in ranks)


@pytest.mark.parametrize("strategy", PARAMS)
def test_models_trained_on_two_processes_load_in_one(
    strategy: str, data: dict[str, Path], runs: dict[str, Path]
) -> None:
    run = run_of(strategy, data, runs)
    reference = load_file(str(data["root"] / "single" / "model" / "model.safetensors"))
    weights = load_file(str(run / "model" / "model.safetensors"))
    assert weights.keys() == reference.keys()  # the same format, tied copy stored once
    checkpoint = load_file(str(run / "checkpoints" / "step-00000020" / "model.safetensors"))
    assert all(torch.equal(weights[k], checkpoint[k]) for k in weights)
    model = pretrainkit.load(run / "model").eval()  # one process, no process group
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)  # bit for bit
    # The final model and the last checkpoint's (written by other code) compute the same.
    again = pretrainkit.load(run / "checkpoints" / "step-00000020").eval()
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 40, 41, 3, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        hidden = model(ids, attention_mask=mask).hidden_states
        assert hidden.shape == (2, 5, 64)
        assert torch.equal(hidden, again(ids, attention_mask=mask).hidden_states)


PLANTED = "code-ran"  # what a planted pickle creates when something unpickles it


class Plant:
    """Unpickling it creates a folder: the stand-in for code a planted pickle would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def plant_deepspeed_pickles(checkpoint: Path, marker: Path) -> None:
    """A run folder from someone else: DeepSpeed's own file names under ``deepspeed/state``
    holding pickles that create ``marker`` when read, and a manifest that lists them."""
    state = checkpoint / "deepspeed" / "state"
    state.mkdir()
    names = ["mp_rank_00_model_states.pt"]
    names += [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(2)]
    for name in names:
        torch.save(Plant(marker), state / name)
    write_manifest(checkpoint, 10)


RESUME_PARAMS = [
    pytest.param("ddp"),
    pytest.param("fsdp"),
    pytest.param("deepspeed", marks=NEEDS_DEEPSPEED),
]


@pytest.mark.parametrize("strategy", RESUME_PARAMS)
def test_resume_on_two_processes_continues_exactly(
    strategy: str, data: dict[str, Path], runs: dict[str, Path]
) -> None:
    # The run as if killed right after its step-10 checkpoint: later checkpoints, the final
    # model and the later records are gone, so a resume that trains nothing cannot pass.
    run = run_of(strategy, data, runs)
    resumed = data["root"] / f"{strategy}-resumed"
    cut_at_step_10(run, resumed)
    assert sorted(losses(resumed)) == list(range(1, 11))
    marker = data["root"] / f"{strategy}-{PLANTED}"
    if strategy == "deepspeed":
        checkpoint = resumed / "checkpoints" / "step-00000010"
        # Our own copy of the optimizer state: rank 0's manifest covers rank 1's file too.
        shards = {p.name for p in (checkpoint / "deepspeed").iterdir()}
        assert shards == {"zero.json", "zero-rank-00000.safetensors", "zero-rank-00001.safetensors"}
        manifest = json.loads((checkpoint / "manifest.json").read_text())
        assert "deepspeed/zero-rank-00001.safetensors" in manifest["files"]
        plant_deepspeed_pickles(checkpoint, marker)  # resume must never unpickle them
    torchrun(
        2,
        *pretrain_args(data, resumed, *STRATEGIES[strategy], "--resume"),
        log=data["root"] / f"{strategy}-resumed.log",
    )
    assert not marker.exists()
    assert "(step 10)" in (data["root"] / f"{strategy}-resumed.log").read_text()
    expected, got = losses(run), losses(resumed)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(11, STEPS + 1):
        assert got[step] == expected[step], step  # the same numbers, bit for bit
    final = load_file(str(resumed / "model" / "model.safetensors"))
    uninterrupted = load_file(str(run / "model" / "model.safetensors"))
    assert final.keys() == uninterrupted.keys()
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final)


def test_two_process_checkpoint_resumes_on_one(
    data: dict[str, Path], runs: dict[str, Path]
) -> None:
    # The data position is re-split over the one reader (tests/test_resume_readers.py): the
    # run continues the 2-process curve, within the tolerance of one process against two.
    run = run_of("fsdp", data, runs)
    from helpers import cut_at_step_10

    copy = cut_at_step_10(run, data["root"] / "fsdp-on-one")
    cli(*pretrain_args(data, copy, "--resume"))
    expected, got = losses(run), losses(copy)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(11, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=TOLERANCE), step


def test_single_process_model_fine_tunes_on_two_processes(data: dict[str, Path]) -> None:
    # The other direction: a model saved by one process, loaded and sharded over two (FSDP).
    out = data["root"] / "finetune-fsdp"
    torchrun(
        2,
        "finetune", "--model", str(data["root"] / "single" / "model"), "--train",
        str(data["train"]), "--out", str(out), "--steps", "5", "--global-batch-size", "8",
        "--seq-length", "32", "--strategy", "fsdp", *QUIET,
        log=data["root"] / "finetune-fsdp.log",
    )  # fmt: skip
    model = pretrainkit.load(out / "model")
    assert "classification" in model.targets
    plan = json.loads((out / "run.json").read_text())
    assert (plan["world_size"], plan["batch_size"], plan["global_batch_size"]) == (2, 4, 8)

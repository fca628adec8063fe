"""Tensor parallelism on CPU (torchrun, gloo): two processes split every transformer layer.

The same tiny BERT pre-trains for 20 steps in one process and with ``--tensor-parallel 2``
(strategy single: tensor parallelism alone) on the same global batch. Both processes of the
tensor-parallel group read the same batch and compute half of the heads and half of the FFN
width each, so the curves differ only by float summation order (measured ≤ 2e-4 relative;
asserted 1e-3). With data parallelism on top (FSDP × TP, 4 processes) 1 % is the bound, as in
tests/test_distributed.py. Dropout is off so that nothing else differs.

The vocabulary is split too (104 rows: the word table and the MLM decoder tied to it share
one row-split parameter), and a third run adds ``--sequence-parallel`` (the norms and
residual dropouts on half of the positions each); both follow one process within 1e-3.

The weights a TP run saves are the full ones (gathered on rank 0): the model loads in one
process, and its checkpoints resume on another layout (one process; FSDP × TP onto DDP).
Layer-level parity for other families (LLaMA-like: rotary, gated FFN, grouped-query
attention, untied head; BART: cross-attention, a word table shared by both sides and the
head), with and without sequence parallelism, runs in ``tensor_parallel_worker.py``.
"""

from __future__ import annotations

import json
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
    layout_refusal,
    layout_shards,
    loaded_mlm_outputs,
    torchrun,
)
from helpers import run_losses as losses
from safetensors.torch import load_file

STEPS, GLOBAL_BATCH = LAYOUT_STEPS, LAYOUT_BATCH
TOLERANCE = 0.01  # relative, per step, with data parallelism (see the module docstring)
TP_TOLERANCE = 1e-3  # tensor parallelism alone: the same batch, only the float order differs
TP2 = ["--tensor-parallel", "2"]
SP2 = [*TP2, "--sequence-parallel"]
HERE = Path(__file__).resolve().parent


def pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return layout_args(data / "shards", out, *extra)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards, the single-process reference run and the TP 2 runs, without and with sequence
    parallelism (launched once)."""
    root = tmp_path_factory.mktemp("tp")
    layout_shards(root)
    cli(*pretrain_args(root, root / "single"))
    torchrun(2, *pretrain_args(root, root / "tp2", *TP2), log=root / "tp2.log")
    torchrun(2, *pretrain_args(root, root / "tp2-sp", *SP2), log=root / "tp2-sp.log")
    return root


def test_tp2_follows_the_single_process_loss_curve(root: Path) -> None:
    single, split = losses(root / "single"), losses(root / "tp2")
    assert sorted(split) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert split[step] == pytest.approx(loss, rel=TP_TOLERANCE), step
    assert single[STEPS] < single[1] - 0.5  # it learns, so the comparison means something

    # Clipping saw the full gradient norm (not one process's half of the split layers).
    def first_norm(run: Path) -> float:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return next(r["grad_norm"] for r in map(json.loads, lines) if r.get("step") == 1)

    assert first_norm(root / "tp2") == pytest.approx(first_norm(root / "single"), rel=1e-3)
    plan = json.loads((root / "tp2" / "run.json").read_text())
    assert (plan["world_size"], plan["data_parallel_size"]) == (2, 1)
    assert (plan["batch_size"], plan["global_batch_size"]) == (GLOBAL_BATCH, GLOBAL_BATCH)
    assert plan["strategy"]["tensor_parallel"] == 2
    # One data reader (the tensor-parallel group), so one position, as in one process.
    positions = json.loads(
        (root / "tp2" / "checkpoints" / "step-00000020" / "data_state.json").read_text()
    )
    assert positions["world_size"] == 1
    assert positions["ranks"][0]["stream"]["cursor"] == STEPS * GLOBAL_BATCH


def test_vocabulary_and_sequence_parallel_follow_one_process(root: Path) -> None:
    single = losses(root / "single")
    for run in ("tp2", "tp2-sp"):
        # The word table and the MLM decoder tied to it: one parameter, split by rows.
        split = "the vocabulary of 104 split over 2 processes: embedding.parts.word, targets.mlm"
        assert split in (root / f"{run}.log").read_text(), run
        got = losses(root / run)
        assert sorted(got) == list(range(1, STEPS + 1))
        for step, loss in single.items():
            assert got[step] == pytest.approx(loss, rel=TP_TOLERANCE), (run, step)
    plan = json.loads((root / "tp2-sp" / "run.json").read_text())
    assert plan["strategy"]["sequence_parallel"] is True
    assert plan["data_parallel_size"] == 1


def finetune_under(root: Path, name: str, layout: list[str], *extra: str) -> None:
    """``finetune`` of a classifier on ``ROOT/single``, 8 steps of 8 rows, dropout off: once
    in one process (``ROOT/NAME-single``) and once under ``layout`` with 2 processes
    (``ROOT/NAME-split``); their loss curves must agree step by step."""
    from helpers import write_classification

    write_classification(root / f"{name}.tsv", 64, seed=3)
    args = [
        "finetune", "--model", str(root / "single"), "--train", str(root / f"{name}.tsv"),
        "--steps", "8", "--batch-size", "8", "--lr", "1e-3", "--log-every", "1",
        "--seq-length", "32", "--dropout", "0", *QUIET, *extra,
    ]  # fmt: skip
    cli(*args, "--out", root / f"{name}-single")
    out = root / f"{name}-split"
    torchrun(2, *args, "--out", str(out), *layout, log=root / f"{name}-split.log")
    single, split = losses(root / f"{name}-single"), losses(out)
    assert sorted(split) == list(range(1, 9))
    for step, loss in single.items():
        assert split[step] == pytest.approx(loss, rel=TP_TOLERANCE), step


def test_finetune_under_tp2_follows_one_process(root: Path) -> None:
    # finetune splits its task rows over the data-parallel readers too: both processes of the
    # tensor-parallel group train on the same batches as one process does.
    finetune_under(root, "ft", TP2)


def test_packed_finetune_under_tp2_and_sp_follows_one_process(root: Path) -> None:
    # --pack under TP 2 with sequence parallelism: the packed rows are cut along the sequence
    # like any other; the per-example mask, positions and the unpacking before the head hold.
    # (Packed against padded, in one process: tests/test_packing.py.)
    finetune_under(root, "ftp", SP2, "--pack")
    task = json.loads((root / "ftp-split" / "model" / "task.json").read_text())
    assert task["options"]["pack"] is True


@pytest.mark.parametrize("run", ["tp2", "tp2-sp"])
def test_tp2_model_loads_in_one_process(root: Path, run: str) -> None:
    reference = load_file(str(root / "single" / "model" / "model.safetensors"))
    weights = load_file(str(root / run / "model" / "model.safetensors"))
    # Full weights (the split vocabulary and the norms gathered too), tied copy once.
    assert weights.keys() == reference.keys()
    assert all(weights[k].shape == reference[k].shape for k in weights)
    got, expected = loaded_mlm_outputs(root / run / "model", root / "single" / "model")
    # Trained apart, the two agree as closely as their loss curves do.
    assert float(got.loss) == pytest.approx(float(expected.loss), rel=TOLERANCE)
    assert torch.allclose(got.logits, expected.logits, atol=0.05)


def test_tp2_checkpoint_resumes_on_one_process(root: Path) -> None:
    resumed = cut_at_step_10(root / "tp2", root / "tp2-on-one")
    cli(*pretrain_args(root, resumed, "--resume"))
    expected, got = losses(root / "tp2"), losses(resumed)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(11, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-3), step
    final = load_file(str(resumed / "model" / "model.safetensors"))
    uninterrupted = load_file(str(root / "tp2" / "model" / "model.safetensors"))
    # Adam moves a weight by at most about lr per step whatever the gradient's size, so
    # 10 steps of float-order differences stay within 10 × lr (measured: 1.8e-3).
    assert all(torch.allclose(final[k], uninterrupted[k], atol=10 * 1e-3) for k in final)


def test_tp2_resume_on_tp2_continues_exactly(root: Path) -> None:
    resumed = cut_at_step_10(root / "tp2", root / "tp2-resumed")
    torchrun(2, *pretrain_args(root, resumed, *TP2, "--resume"), log=root / "tp2-resumed.log")
    assert "(step 10)" in (root / "tp2-resumed.log").read_text()
    expected, got = losses(root / "tp2"), losses(resumed)
    for step in range(11, STEPS + 1):
        assert got[step] == expected[step], step  # bit for bit


def test_tp2_times_fsdp2_on_four_processes_and_resume_on_ddp(root: Path) -> None:
    # 2-D: FSDP over the two data-parallel pairs, TP within each; then its checkpoint
    # resumes as plain DDP on two processes (the same two data readers).
    run = root / "fsdp-tp"
    torchrun(4, *pretrain_args(root, run, "--strategy", "fsdp", *TP2), log=root / "fsdp-tp.log")
    single, split = losses(root / "single"), losses(run)
    for step, loss in single.items():
        assert split[step] == pytest.approx(loss, rel=TOLERANCE), step
    plan = json.loads((run / "run.json").read_text())
    assert (plan["world_size"], plan["data_parallel_size"], plan["batch_size"]) == (4, 2, 4)
    resumed = cut_at_step_10(run, root / "fsdp-tp-on-ddp")
    torchrun(
        2, *pretrain_args(root, resumed, "--strategy", "ddp", "--resume"), log=root / "on-ddp.log"
    )
    expected, got = losses(run), losses(resumed)
    for step in range(11, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-3), step


def test_layers_of_other_families_split_exactly(tmp_path: Path) -> None:
    out = tmp_path / "parity.json"
    torchrun(
        2, str(HERE / "tensor_parallel_worker.py"), str(out), log=tmp_path / "w.log", module=False
    )
    results = json.loads(out.read_text())
    for family in ("llama", "bart-base", "llama+sp", "bart-base+sp", "indivisible"):
        found = results[family]
        assert found["split"] > 0, family
        assert found["loss"][1] == pytest.approx(found["loss"][0], rel=1e-5), family
        assert found["logits"] < 1e-4, family
        assert found["grad_norm"][1] == pytest.approx(found["grad_norm"][0], rel=1e-5), family
        assert found["gathered"] == 0.0, family  # the gathered weights are the originals
        assert found["tied"], family  # shared word tables stay shared on every process
    assert results["bart-base"]["ties"] > 0
    # Split by vocabulary rows, BART's two word tables (one tied parameter) included; 101 rows
    # do not split over two processes and stay whole (the layers still split).
    rows = "(Shard(dim=0),)"
    assert results["llama"]["vocabulary"] == results["llama+sp"]["vocabulary"] == [rows]
    assert results["bart-base"]["vocabulary"] == results["bart-base+sp"]["vocabulary"] == [rows] * 2
    assert results["indivisible"]["vocabulary"] == ["None"]
    # Sequence parallelism: the norms' weights become replicated DTensors.
    assert (results["llama"]["norms"], results["llama+sp"]["norms"]) == ("None", "(Replicate(),)")
    for family in ("llama", "bart-base"):
        # Dropout 0.1, 11 positions (parts of 6 and 5): with and without sequence parallelism
        # the same masks, so the same losses; the processes' generators still agree.
        plain, sequence = results[f"{family}-dropout"]
        assert len(set(plain[:3])) == 3, family  # dropout is on: three different losses
        assert sequence[:3] == pytest.approx(plain[:3], rel=1e-6), family
        assert plain[3] == plain[4] and sequence[3] == sequence[4], family
    assert "different batches" in results["mismatch"]
    # Also FSDP from meta (no TP) rebuilds rank 1's non-persistent buffers (rotary frequencies).
    expected, *got = results["fsdp-meta"]  # the reference, then each process's loss
    assert got == pytest.approx([expected, expected], rel=1e-5)


BAD_LAYOUTS = [
    pytest.param(1, ["--tensor-parallel", "0"], "tensor_parallel must be a positive integer", id="zero"),
    pytest.param(1, ["--sequence-parallel"], "sequence_parallel splits activations", id="sp-alone"),
    pytest.param(1, TP2, "needs exactly 2 processes (launched with 1)", id="single-on-one"),
    pytest.param(3, [*TP2, "--strategy", "fsdp"], "does not divide the 3 process(es)", id="world"),
    pytest.param(2, [*TP2, "--model.encoder.num_heads", "1"], "num_heads = 1", id="heads"),
    pytest.param(2, [*TP2, "--model.encoder.ffn_size", "127"], "(ffn_size) = 127", id="ffn"),
    pytest.param(2, [*TP2, "--model.encoder.position", "alibi"], "'alibi'", id="alibi"),
    pytest.param(2, [*TP2, "--strategy", "ddp"], "with strategy 'ddp' is not supported", id="ddp"),
    pytest.param(4, [*TP2, "--strategy", "deepspeed"], "'deepspeed'", id="deepspeed"),
]  # fmt: skip


@pytest.mark.parametrize(("world", "extra", "message"), BAD_LAYOUTS)
def test_bad_layouts_fail_before_the_output_folder_exists(
    root: Path, world: int, extra: list[str], message: str, capsys, monkeypatch, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, err = layout_refusal(capsys, monkeypatch, world, pretrain_args(root, out, *extra))
    assert code == 2 and message in err, err
    assert not out.exists()

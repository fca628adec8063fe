"""Tensor × pipeline parallelism on CPU (torchrun, gloo): 4 processes, 2 stages of 2.

A tiny BERT (2 layers, MLM, the MLM decoder tied to the word embedding) pre-trains for 20
steps in one process and with ``--tensor-parallel 2 --pipeline-parallel 2`` on the same global
batch. The processes form a ("pp", "tp") mesh: ranks 0 and 1 are stage 0 (the word table
split by vocabulary rows, layer 0 split over the two), ranks 2 and 3 stage 1 (layer 1 split,
the MLM head split by vocabulary rows like the table it is tied to, the final norm whole);
each tensor-parallel index runs its own copy of the pipeline schedule and passes
whole hidden states to the same index of the next stage. With dropout off the curves differ
only by float summation order (measured ≤ 2e-7 relative; asserted 1 %, the brief's bound,
and 1e-3 where one reader sees one batch). The run's weights are the full ones: the model
loads in one process and exports to Hugging Face; its checkpoint resumes on one process and
on the same layout.

A LLaMA-like LM (rotary, gated FFN, grouped-query attention, untied head) runs the same layout
under GPipe with accumulation and activation checkpointing, and two such pipelines under
``ddp`` (8 processes, dp × pp × tp = 2 × 2 × 2) follow DDP on 2 processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import (
    LAYOUT_BATCH,
    LAYOUT_STEPS,
    NO_DROPOUT_AT_ALL,
    cli,
    cut_at_step_10,
    layout_args,
    layout_refusal,
    layout_shards,
    tiny_llama,
    torchrun,
)
from helpers import run_losses as losses
from helpers import run_metric as metric
from safetensors.torch import load_file

import pretrainkit

STEPS, GLOBAL_BATCH = LAYOUT_STEPS, LAYOUT_BATCH
TOLERANCE = 0.01  # relative, per step (the brief's bound)
EXACT = 1e-3  # relative, per step, where only the float order differs (measured ≤ 3e-7)
TP2_PP2 = ["--tensor-parallel", "2", "--pipeline-parallel", "2"]
LLAMA = tiny_llama(2)


def pretrain_args(shards: Path, out: Path, *extra: str, model: list[str] | None = None) -> list:
    return layout_args(shards, out, *extra, model=model, dropout=NO_DROPOUT_AT_ALL)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards, the single-process reference run and the TP 2 × PP 2 run (launched once)."""
    root = tmp_path_factory.mktemp("tp-pp")
    for objective in ("mlm", "lm"):
        layout_shards(root, objective, f"shards-{objective}")
    shards = root / "shards-mlm"
    cli(*pretrain_args(shards, root / "single"))
    torchrun(4, *pretrain_args(shards, root / "tp-pp", *TP2_PP2), log=root / "tp-pp.log")
    return root


def test_tp2_pp2_follows_the_single_process_loss_curve(root: Path) -> None:
    single, split = losses(root / "single"), losses(root / "tp-pp")
    assert sorted(split) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert split[step] == pytest.approx(loss, rel=TOLERANCE), step
        assert split[step] == pytest.approx(loss, rel=EXACT), step
    assert single[STEPS] < single[1] - 0.5  # it learns, so the comparison means something
    # Clipping saw the full norm: split gradients summed over "tp", stages over "pp", the
    # tied embedding / MLM decoder pair once; the metrics come from the last stage.
    for name in ("grad_norm", "mlm_accuracy"):
        expected, got = metric(root / "single", name), metric(root / "tp-pp", name)
        for step in (1, 10, STEPS):
            assert got[step] == pytest.approx(expected[step], rel=EXACT, abs=1e-6), name
    plan = json.loads((root / "tp-pp" / "run.json").read_text())
    assert (plan["world_size"], plan["data_parallel_size"], plan["microbatches"]) == (4, 1, 2)
    assert (plan["batch_size"], plan["global_batch_size"]) == (GLOBAL_BATCH, GLOBAL_BATCH)
    assert plan["strategy"]["tensor_parallel"] == plan["strategy"]["pipeline_parallel"] == 2
    log = (root / "tp-pp.log").read_text()
    assert "tensor parallel 2, pipeline parallel 2" in log
    assert "the vocabulary of 104 split over 2 processes: embedding.parts.word" in log
    # One data reader (the 4 processes hold one model), so one position, as in one process.
    positions = json.loads(
        (root / "tp-pp" / "checkpoints" / "step-00000020" / "data_state.json").read_text()
    )
    assert positions["world_size"] == 1
    assert positions["ranks"][0]["stream"]["cursor"] == STEPS * GLOBAL_BATCH


def test_tp2_pp2_model_loads_in_one_process_and_exports_to_hf(root: Path) -> None:
    transformers = pytest.importorskip("transformers")
    reference = load_file(str(root / "single" / "model" / "model.safetensors"))
    weights = load_file(str(root / "tp-pp" / "model" / "model.safetensors"))
    assert weights.keys() == reference.keys()  # full weights, the tied copy once
    assert all(weights[k].shape == reference[k].shape for k in weights)
    # Trained apart on the same batches (Adam can turn a float-order difference into a step
    # of up to lr; measured 6e-6).
    assert all(torch.allclose(weights[k], reference[k], atol=1e-4) for k in weights)
    model = pretrainkit.load(root / "tp-pp" / "model").eval()
    assert model.targets["mlm"].decoder.weight is model.embedding.parts["word"].weight
    single = pretrainkit.load(root / "single" / "model").eval()
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 40, 41, 3, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        got = model(ids, attention_mask=mask).target_logits["mlm"]
        expected = single(ids, attention_mask=mask).target_logits["mlm"]
    assert torch.allclose(got, expected, atol=1e-3)
    cli("convert", "--to-hf", root / "tp-pp" / "model", "--out", root / "hf")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(root / "hf").eval()
    with torch.no_grad():
        exported = hf(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert torch.allclose(exported[real], got[real], atol=1e-4)
    assert torch.allclose(exported[real], expected[real], atol=1e-3)


def test_tp2_pp2_checkpoint_resumes_on_one_process(root: Path) -> None:
    # One data reader before and after the switch, so the data position carries over.
    resumed = cut_at_step_10(root / "tp-pp", root / "tp-pp-on-one")
    cli(*pretrain_args(root / "shards-mlm", resumed, "--resume"))
    expected, got = losses(root / "tp-pp"), losses(resumed)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(11, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=EXACT), step


def test_tp2_pp2_resume_on_tp2_pp2_continues_exactly(root: Path) -> None:
    # The gathered optimizer moments split again over the stages and their processes.
    resumed = cut_at_step_10(root / "tp-pp", root / "tp-pp-resumed")
    args = pretrain_args(root / "shards-mlm", resumed, *TP2_PP2, "--resume")
    torchrun(4, *args, log=root / "tp-pp-resumed.log")
    assert "(step 10)" in (root / "tp-pp-resumed.log").read_text()
    expected, got = losses(root / "tp-pp"), losses(resumed)
    for step in range(11, STEPS + 1):
        assert got[step] == expected[step], step  # bit for bit


def test_tp2_pp2_checkpoint_resumes_on_ddp_over_four_processes(root: Path) -> None:
    # The example: saved at TP 2 × PP 2 (one data reader), resumed at DP 4 (four): the
    # weights and moments load whole on every process, the global data order is re-split
    # over four readers, and the losses follow the uninterrupted run within the data-parallel
    # effect (each process's masked-token mean).
    resumed = cut_at_step_10(root / "tp-pp", root / "tp-pp-on-dp4")
    log = root / "tp-pp-on-dp4.log"
    torchrun(
        4, *pretrain_args(root / "shards-mlm", resumed, "--strategy", "ddp", "--resume"), log=log
    )
    text = log.read_text()
    assert "(step 10)" in text and "1 data-parallel reader(s) -> 4" in text, text[-3000:]
    expected, got = losses(root / "tp-pp"), losses(resumed)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(11, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=TOLERANCE), step
    plan = json.loads((resumed / "run.json").read_text())
    assert (plan["world_size"], plan["data_parallel_size"]) == (4, 4)


def test_llama_lm_under_tp2_pp2_with_gpipe_and_accumulation(root: Path) -> None:
    # Rotary buffers sent to stage 1, grouped-query heads split 2 + 1 per process, an untied
    # head; GPipe with 4 micro-batches of each accumulated half-batch, blocks recomputed.
    shards, accumulate = root / "shards-lm", ["--accumulate", "2"]
    cli(*pretrain_args(shards, root / "lm-single", *accumulate, model=LLAMA))
    piped = [*TP2_PP2, "--pipeline-schedule", "gpipe", "--microbatches", "4"]
    args = pretrain_args(shards, root / "lm-tp-pp", *accumulate, *piped, model=LLAMA)
    torchrun(4, *args, "--activation-checkpointing", log=root / "lm-tp-pp.log")
    single, split = losses(root / "lm-single"), losses(root / "lm-tp-pp")
    assert sorted(split) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert split[step] == pytest.approx(loss, rel=EXACT), step
    assert single[STEPS] < single[1] - 0.5


def test_two_tp2_pp2_pipelines_under_ddp_train_as_ddp(root: Path) -> None:
    # 8 processes, ("dp", "pp", "tp") = 2 × 2 × 2: each pipeline reads half of every global
    # batch and each split or whole gradient is averaged over the two pipelines (DDP's rule,
    # so the reference is DDP on two processes, to float rounding).
    run, ddp = root / "ddp-tp-pp", root / "ddp"
    shards = root / "shards-mlm"
    strategy = ["--strategy", "ddp"]
    torchrun(8, *pretrain_args(shards, run, *TP2_PP2, *strategy), log=root / "ddp-tp-pp.log")
    torchrun(2, *pretrain_args(shards, ddp, *strategy), log=root / "ddp.log")
    for name in ("loss", "grad_norm"):
        expected, got = metric(ddp, name), metric(run, name)
        assert sorted(got) == list(range(1, STEPS + 1))
        for step in expected:
            assert got[step] == pytest.approx(expected[step], rel=EXACT, abs=1e-6), name
    plan = json.loads((run / "run.json").read_text())
    assert (plan["world_size"], plan["data_parallel_size"], plan["batch_size"]) == (8, 2, 4)
    reference = load_file(str(ddp / "model" / "model.safetensors"))
    weights = load_file(str(run / "model" / "model.safetensors"))
    assert weights.keys() == reference.keys()
    assert all(torch.allclose(weights[k], reference[k], atol=1e-4) for k in weights)


def test_sequence_parallel_within_the_stages_follows_one_process(root: Path) -> None:
    # Each stage splits its stack's input along the sequence (32 positions, 16 a process), its
    # norms (stage 1's final norm too) run on the local positions and it sends whole hidden
    # states on. Without dropout: one process's curve. With dropout 0.1: the losses of the
    # same layout without sequence parallelism (every process draws the whole mask).
    shards, sequence = root / "shards-mlm", [*TP2_PP2, "--sequence-parallel"]
    torchrun(4, *pretrain_args(shards, root / "tp-pp-sp", *sequence), log=root / "tp-pp-sp.log")
    assert "(sequence parallel)" in (root / "tp-pp-sp.log").read_text()
    single, split = losses(root / "single"), losses(root / "tp-pp-sp")
    assert sorted(split) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert split[step] == pytest.approx(loss, rel=EXACT), step
    dropped: dict[str, dict[int, float]] = {}
    for name, extra in (("tp-pp-dropout", TP2_PP2), ("tp-pp-sp-dropout", sequence)):
        args = layout_args(shards, root / name, *extra, "--steps", "6", dropout=[])
        torchrun(4, *args, log=root / f"{name}.log")
        dropped[name] = losses(root / name)
    plain, sharded = dropped["tp-pp-dropout"], dropped["tp-pp-sp-dropout"]
    assert sorted(sharded) == sorted(plain) == list(range(1, 7))
    for step, loss in plain.items():
        assert sharded[step] == pytest.approx(loss, rel=EXACT), step
    assert plain[1] != pytest.approx(single[1], rel=1e-4)  # dropout was on


BAD_LAYOUTS = [
    pytest.param(2, TP2_PP2, "needs exactly 4 processes (launched with 2)", id="world-2"),
    pytest.param(8, TP2_PP2, "with strategy 'single' needs exactly 4 processes", id="world-8"),
    pytest.param(6, [*TP2_PP2, "--strategy", "ddp"], "does not divide the 6 process(es)", id="ddp-6"),
    pytest.param(6, [*TP2_PP2, "--strategy", "fsdp"], "does not divide the 6 process(es)", id="fsdp-6"),
    pytest.param(8, [*TP2_PP2, "--strategy", "deepspeed"], "'deepspeed'", id="deepspeed"),
    pytest.param(4, [*TP2_PP2, "--model.encoder.num_heads", "1"], "num_heads = 1", id="heads"),
    pytest.param(
        6, ["--tensor-parallel", "2", "--pipeline-parallel", "3"], "exceeds the 2 encoder layer(s)",
        id="layers",
    ),
    pytest.param(4, [*TP2_PP2, "--microbatches", "3"], "does not divide the per-process batch", id="micro"),
]  # fmt: skip


@pytest.mark.parametrize(("world", "extra", "message"), BAD_LAYOUTS)
def test_bad_layouts_fail_before_the_output_folder_exists(
    root: Path, world: int, extra: list[str], message: str, capsys, monkeypatch, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, err = layout_refusal(
        capsys, monkeypatch, world, pretrain_args(root / "shards-mlm", out, *extra)
    )
    assert code == 2 and message in err, err
    assert not out.exists()

"""Pipeline parallelism on CPU (torchrun, gloo): two processes hold one stage each.

A tiny BERT (2 layers, MLM + NSP, the MLM decoder tied to the word embedding) pre-trains for
20 steps in one process and with ``--pipeline-parallel 2`` (1F1B, 2 micro-batches) on the
same global batch. Stage 0 embeds and runs layer 0, stage 1 runs layer 1 and the targets;
both read the same batches. The last stage weights each micro-batch's target means by its
share of the batch's labelled tokens, and the tied pair's gradients are summed between the
stages, so the curves differ only by float summation order (measured ≤ 2e-7 relative;
asserted 1e-3). All dropout is off: each stage draws its own dropout masks, so with dropout
the curves agree only on average.

A LLaMA-like decoder-only LM (rotary, gated FFN, grouped-query attention, untied head, three
layers over two stages) runs the GPipe schedule with gradient accumulation and activation
checkpointing. The weights a pipeline run saves are the full ones (gathered on rank 0): the
model loads in one process, and checkpoints resume on one process and on the pipeline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    LAYOUT_BATCH,
    LAYOUT_STEPS,
    NO_DROPOUT_AT_ALL,
    QUIET,
    TINY_MODEL,
    cli,
    cut_at_step_10,
    invoke,
    layout_args,
    layout_refusal,
    layout_shards,
    loaded_mlm_outputs,
    tiny_llama,
    torchrun,
    write_classification,
)
from helpers import run_losses as losses
from helpers import run_metric as metric
from safetensors.torch import load_file

from pretrainkit.distributed.config import ParallelConfig, resolve_microbatches
from pretrainkit.errors import ConfigError

STEPS, GLOBAL_BATCH = LAYOUT_STEPS, LAYOUT_BATCH
TOLERANCE = 1e-3  # relative, per step: the same batch, only the float order differs
PP2 = ["--pipeline-parallel", "2"]
HERE = Path(__file__).resolve()
LLAMA = tiny_llama(3)


def pretrain_args(shards: Path, out: Path, *extra: str, model: list[str] = TINY_MODEL) -> list:
    return layout_args(shards, out, *extra, model=model, dropout=NO_DROPOUT_AT_ALL)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards, the single-process reference run and the PP 2 run (launched once)."""
    root = tmp_path_factory.mktemp("pp")
    for objective in ("bert", "lm"):
        layout_shards(root, objective, f"shards-{objective}")
    shards = root / "shards-bert"
    cli(*pretrain_args(shards, root / "single"))
    torchrun(2, *pretrain_args(shards, root / "pp2", *PP2), log=root / "pp2.log")
    return root


def test_pp2_follows_the_single_process_loss_curve(root: Path) -> None:
    single, piped = losses(root / "single"), losses(root / "pp2")
    assert sorted(piped) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert piped[step] == pytest.approx(loss, rel=TOLERANCE), step
    assert single[STEPS] < single[1] - 0.5  # it learns, so the comparison means something
    # Both targets' metrics come from the last stage, as batch means; clipping saw the norm
    # over both stages (the tied embedding / MLM decoder pair once).
    for name in ("mlm_accuracy", "nsp_loss", "grad_norm"):
        expected, got = metric(root / "single", name), metric(root / "pp2", name)
        for step in (1, 10, STEPS):
            assert got[step] == pytest.approx(expected[step], rel=TOLERANCE, abs=1e-6), name
    plan = json.loads((root / "pp2" / "run.json").read_text())
    assert (plan["world_size"], plan["data_parallel_size"], plan["microbatches"]) == (2, 1, 2)
    assert plan["global_batch_size"] == GLOBAL_BATCH
    assert plan["strategy"]["pipeline_parallel"] == 2
    # One data reader (the pipeline), so one position, as in one process.
    positions = json.loads(
        (root / "pp2" / "checkpoints" / "step-00000020" / "data_state.json").read_text()
    )
    assert positions["world_size"] == 1


def test_decoder_only_lm_under_gpipe_with_accumulation(root: Path) -> None:
    # Three layers over two stages (2 + 1), rotary buffers sent to stage 1, an untied head;
    # GPipe with 4 micro-batches of each accumulated half-batch, layers recomputed in backward.
    shards = root / "shards-lm"
    accumulate = ["--accumulate", "2"]
    cli(*pretrain_args(shards, root / "lm-single", *accumulate, model=LLAMA))
    piped = [*PP2, "--pipeline-schedule", "gpipe", "--microbatches", "4"]
    args = pretrain_args(shards, root / "lm-pp2", *accumulate, *piped, model=LLAMA)
    torchrun(2, *args, "--activation-checkpointing", log=root / "lm-pp2.log")
    single, split = losses(root / "lm-single"), losses(root / "lm-pp2")
    assert sorted(split) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert split[step] == pytest.approx(loss, rel=TOLERANCE), step
    assert single[STEPS] < single[1] - 0.5


def test_pp2_model_loads_in_one_process(root: Path) -> None:
    reference = load_file(str(root / "single" / "model" / "model.safetensors"))
    weights = load_file(str(root / "pp2" / "model" / "model.safetensors"))
    assert weights.keys() == reference.keys()  # full weights, tied copy once, the same format
    # Trained apart on the same batches: only the float order differs (measured: 3e-7; Adam
    # can turn a tiny gradient difference into a step of up to lr, hence the margin).
    assert all(torch.allclose(weights[k], reference[k], atol=1e-4) for k in weights)
    got, expected = loaded_mlm_outputs(root / "pp2" / "model", root / "single" / "model")
    assert float(got.loss) == pytest.approx(float(expected.loss), rel=TOLERANCE)


def test_pp2_checkpoint_resumes_on_one_process(root: Path) -> None:
    resumed = cut_at_step_10(root / "pp2", root / "pp2-on-one")
    cli(*pretrain_args(root / "shards-bert", resumed, "--resume"))
    expected, got = losses(root / "pp2"), losses(resumed)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(11, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=TOLERANCE), step


def test_pp2_resume_on_pp2_continues_exactly(root: Path) -> None:
    resumed = cut_at_step_10(root / "pp2", root / "pp2-resumed")
    args = pretrain_args(root / "shards-bert", resumed, *PP2, "--resume")
    torchrun(2, *args, log=root / "pp2-resumed.log")
    assert "(step 10)" in (root / "pp2-resumed.log").read_text()
    expected, got = losses(root / "pp2"), losses(resumed)
    for step in range(11, STEPS + 1):
        assert got[step] == expected[step], step  # bit for bit


def test_single_process_checkpoint_resumes_on_pp2(root: Path) -> None:
    # The other way: one process's optimizer state (the tied pair stored once) splits over
    # the stages, the MLM decoder's copy taking the word embedding's moments.
    resumed = cut_at_step_10(root / "single", root / "single-on-pp2")
    args = pretrain_args(root / "shards-bert", resumed, *PP2, "--resume")
    torchrun(2, *args, log=root / "single-on-pp2.log")
    expected, got = losses(root / "single"), losses(resumed)
    for step in range(11, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=TOLERANCE), step


def test_two_pipelines_under_ddp_train_as_ddp(root: Path) -> None:
    # 4 processes: two pipelines of two stages, each reading half of every global batch, each
    # stage's gradients averaged over the pipelines. That is DDP's rule (a mean of the two
    # half-batch means, which differs from one process's batch mean by up to 3.5 % here, MLM
    # and NSP on 4 sequences), so the reference is DDP on two processes, to float rounding.
    run, ddp = root / "ddp-pp2", root / "ddp"
    torchrun(
        4,
        *pretrain_args(root / "shards-bert", run, *PP2, "--strategy", "ddp"),
        log=root / "ddp-pp2.log",
    )
    torchrun(
        2, *pretrain_args(root / "shards-bert", ddp, "--strategy", "ddp"), log=root / "ddp.log"
    )
    for name in ("loss", "grad_norm", "nsp_accuracy"):
        expected, got = metric(ddp, name), metric(run, name)
        assert sorted(got) == list(range(1, STEPS + 1))
        for step in expected:
            assert got[step] == pytest.approx(expected[step], rel=TOLERANCE, abs=1e-6), name
    plan = json.loads((run / "run.json").read_text())
    assert (plan["world_size"], plan["data_parallel_size"], plan["batch_size"]) == (4, 2, 4)
    # The first pipeline's stages are gathered into the model (and the checkpoints).
    reference = load_file(str(ddp / "model" / "model.safetensors"))
    weights = load_file(str(run / "model" / "model.safetensors"))
    assert weights.keys() == reference.keys()
    assert all(torch.allclose(weights[k], reference[k], atol=1e-4) for k in weights)


def test_stage_split_is_balanced_by_parameters() -> None:
    from pretrainkit.distributed.pipeline_plan import stage_layers

    def split(sizes: list[int], stages: int) -> list[int]:
        return [len(r) for r in stage_layers(sizes, stages)]

    assert split([1] * 2, 2) == [1, 1]
    assert split([1] * 5, 2) == [3, 2]  # ties: the earlier stage takes more
    assert split([1] * 7, 3) == [3, 2, 2]  # the evenest of the splits with at most 3
    assert split([1] * 12, 5) == [3, 3, 2, 2, 2]
    assert split([5, 1, 1, 1, 1, 1], 2) == [1, 5]  # by parameters, not by layer count
    assert split([1] * 4, 4) == [1, 1, 1, 1]


def test_microbatches_default_and_checks() -> None:
    def resolved(batch: int, **options) -> int:
        return resolve_microbatches(ParallelConfig(**options), batch)

    assert resolved(8, pipeline_parallel=2) == 2
    assert resolved(9, pipeline_parallel=2) == 3  # the smallest count ≥ 2 dividing 9
    assert resolved(8, pipeline_parallel=2, microbatches=8) == 8
    assert resolved(8, pipeline_parallel=2, pipeline_schedule="gpipe", microbatches=1) == 1
    assert resolved(8) == 1
    with pytest.raises(ConfigError, match="does not divide the per-process batch of 8"):
        resolved(8, pipeline_parallel=2, microbatches=3)
    with pytest.raises(ConfigError, match="smaller than pipeline_parallel 4"):
        resolved(3, pipeline_parallel=4)


def test_models_the_pipeline_cannot_split_are_refused() -> None:
    from pretrainkit.distributed.pipeline_plan import check_pipeline
    from pretrainkit.model import build_model

    small = {"vocab_size": 100}  # on the meta device: nothing is allocated
    cases = [
        ("t5-small", {}, "encoder.position 'relative'"),
        ("s2t-small", {}, "'speech' inputs"),
        ("bert-tiny", {"encoder": {"name": "lstm"}}, "no layer stack to split"),
        ("bert-tiny", {"encoder": {"share_layers": True}}, "a shared block"),
        ("bert-tiny", {"encoder": {"position": "relative"}}, "'relative'"),
        ("bert-tiny", {"targets": [{"name": "mlm"}, {"name": "contrastive"}]}, "contrastive"),
        ("vit-base", {}, "'patch' inputs"),
    ]
    with torch.device("meta"):
        for preset, overrides, message in cases:
            model = build_model(preset, {**small, **overrides})
            with pytest.raises(ConfigError, match=message):
                check_pipeline(model, 2)
        with pytest.raises(ConfigError, match="exceeds the 2 encoder layer"):
            check_pipeline(build_model("bert-tiny", small), 3)
        bart = build_model("bart-base", small)  # 6 + 6 layers
        with pytest.raises(ConfigError, match="exceeds the 12 encoder and decoder layer"):
            check_pipeline(bart, 13)
        with pytest.raises(ConfigError, match="interleaved schedule with an encoder-decoder"):
            check_pipeline(bart, 2, 2)
        with pytest.raises(ConfigError, match="pipeline_split 'time' with an encoder-decoder"):
            check_pipeline(bart, 2, 1, "time")
        check_pipeline(bart, 12)


BAD_LAYOUTS = [
    pytest.param(1, ["--pipeline-parallel", "0"], "pipeline_parallel must be a positive integer", id="zero"),
    pytest.param(1, PP2, "needs exactly 2 processes (launched with 1)", id="world-1"),
    pytest.param(4, [*PP2, "--strategy", "deepspeed"], "with strategy 'deepspeed' is not supported", id="deepspeed"),
    pytest.param(3, PP2, "needs exactly 2 processes (launched with 3)", id="world-3"),
    pytest.param(4, PP2, "with strategy 'single' needs exactly 2 processes", id="world-4"),
    pytest.param(3, ["--pipeline-parallel", "3"], "exceeds the 2 encoder layer(s)", id="layers"),
    pytest.param(3, [*PP2, "--strategy", "ddp"], "does not divide the 3 process(es)", id="ddp-3"),
    pytest.param(4, [*PP2, "--strategy", "fsdp", "--pipeline-schedule", "interleaved"], "'interleaved' with strategy 'fsdp' is not supported yet", id="fsdp-interleaved"),
    pytest.param(4, [*PP2, "--strategy", "fsdp", "--cpu-offload"], "cpu_offload with pipeline_parallel 2 is not supported yet", id="fsdp-offload"),
    pytest.param(3, [*PP2, "--strategy", "fsdp"], "does not divide the 3 process(es)", id="fsdp-3"),
    pytest.param(2, [*PP2, "--tensor-parallel", "2"], "needs exactly 4 processes (launched with 2)", id="tp"),
    pytest.param(2, [*PP2, "--microbatches", "3"], "does not divide the per-process batch", id="micro"),
    pytest.param(2, [*PP2, "--microbatches", "1"], "fewer than the 2 pipeline stages", id="1f1b"),
    pytest.param(2, [*PP2, "--pipeline-schedule", "gpip"], "did you mean 'gpipe'", id="schedule"),
    pytest.param(1, ["--pipeline-schedule", "gpipe"], "applies to pipeline parallelism only", id="no-pp"),
    pytest.param(2, [*PP2, "--dev", "shards"], "held-out evaluation through the pipeline", id="dev"),
]  # fmt: skip


@pytest.mark.parametrize(("world", "extra", "message"), BAD_LAYOUTS)
def test_bad_layouts_fail_before_the_output_folder_exists(
    root: Path, world: int, extra: list[str], message: str, capsys, monkeypatch, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    extra = [str(root / "shards-bert") if e == "shards" else e for e in extra]
    args = pretrain_args(root / "shards-bert", out, *extra)
    code, err = layout_refusal(capsys, monkeypatch, world, args)
    assert code == 2 and message in err, err
    assert not out.exists()


def test_other_commands_refuse_the_pipeline(root: Path, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    write_classification(tmp_path / "cls.tsv", 16, seed=3)
    out = tmp_path / "ft"
    code, _, err = invoke(
        capsys, "finetune", "--model", root / "single", "--train", tmp_path / "cls.tsv",
        "--out", out, "--steps", "2", *PP2, *QUIET,
    )  # fmt: skip
    assert code == 2 and "only pretrain trains through a pipeline" in err, err
    assert not out.exists()


def test_padding_uneven_labels_and_longer_batches_stay_exact(tmp_path: Path) -> None:
    # Batches of 12, 20 and 9 positions (the stages' buffers rebuilt for 20, the 9 padded to
    # it), padding inside, micro-batches with 2 and 10 masked tokens: the loss is still the
    # batch mean and the gradient the one-process one, step after step.
    out = tmp_path / "exact.json"
    torchrun(2, str(HERE), "worker", str(out), log=tmp_path / "worker.log", module=False)
    for reference, piped, reference_norm, piped_norm in json.loads(out.read_text()):
        assert piped == pytest.approx(reference, rel=1e-5)
        assert piped_norm == pytest.approx(reference_norm, rel=1e-5)


def worker(out: str) -> None:
    """Under torchrun with 2 processes: a pipeline engine against a one-process copy."""
    from pretrainkit.distributed import ParallelConfig, parallelize
    from pretrainkit.model import build_model
    from pretrainkit.training import TrainConfig
    from pretrainkit.training.optim import build_optimizer

    config = {
        "vocab_size": 100, "hidden_size": 64,
        "embedding": {"dropout": 0.0, "max_positions": 64},
        "encoder": {"num_heads": 2, "ffn_size": 128, "dropout": 0.0, "attention_dropout": 0.0},
    }  # fmt: skip
    train = TrainConfig(steps=3, lr=1e-3, device="cpu", precision="fp32")
    torch.manual_seed(0)
    reference = build_model("bert-tiny", config)
    optimizer = build_optimizer(reference, train)
    parallel = ParallelConfig(pipeline_parallel=2)
    torch.manual_seed(0)
    rank = int(__import__("os").environ["RANK"])
    with torch.device("meta") if rank else torch.device("cpu"):
        model = build_model("bert-tiny", config)
    engine = parallelize(model, parallel, train, "cpu", "fp32", micro_batch=4)
    generator = torch.Generator().manual_seed(1)
    results = []
    for length, masked in ((12, (1, 5)), (20, (3, 2)), (9, (4, 1))):
        ids = torch.randint(5, 100, (4, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[1, length - 3 :] = 0  # a padded row
        labels = torch.full_like(ids, -100)
        for row, count in enumerate((masked[0], masked[0], masked[1], masked[1])):
            labels[row, 1 : 1 + count] = ids[row, 1 : 1 + count]  # micro-batches differ
        batch = {
            "input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": labels, "pair_labels": torch.tensor([0, 1, 1, 0]),
        }  # fmt: skip
        expected = reference(**batch).loss
        expected.backward()
        expected_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 1e9)
        optimizer.step()
        optimizer.zero_grad()
        loss, _ = engine.forward_backward(batch, 1, True)
        norm, _ = engine.step(None)
        results.append([float(expected.detach()), float(loss), float(expected_norm), norm])
    if rank == 0:
        Path(out).write_text(json.dumps(results))


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(sys.argv[2])

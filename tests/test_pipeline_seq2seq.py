"""Encoder-decoder models through a pipeline (torchrun, gloo, CPU): a tiny BART pre-trained
with the ``bart`` denoising objective.

The pipeline's layer stack is the encoder's layers followed by the decoder's, cut anywhere:
within the encoder (hidden states pass on), at its end (the memory passes on), within the
decoder (the decoder's states and the memory pass on; every decoder stage reads the memory,
whose gradient flows back through each) or across the boundary (one stage runs the encoder's
end and the decoder's start). The word table is tied three ways (encoder embedding, decoder
embedding, LM head) and may sit on three stages; its gradients are summed over all of them.

- 2 + 2 layers on PP 4 (one layer a stage: every kind of cut, the table on stages 0, 2, 3)
  and on TP 2 × PP 2 with sequence parallelism (the decoder's cross-attention split too; each
  stack's activations split along the sequence between sub-layers) follow one process within
  1e-3 per step (measured ≤ 2.6e-7);
- 1 + 2 layers on PP 2 (stage 0 runs the encoder and the first decoder layer);
- two pipelines sharded by FSDP follow DDP on 2 processes; their batches have decoder sides
  of different lengths, which the pipelines agree on before each step;
- the PP 4 model loads in one process, and its checkpoint resumes there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import cli, cut_at_step_10, layout_args, layout_shards, torchrun
from helpers import run_losses as losses
from helpers import run_metric as metric
from safetensors.torch import load_file

import pretrainkit

TOLERANCE = 1e-3  # relative, per step: the same batches, only the float order differs
BART = [
    "--model", "bart-base", "--model.hidden_size", "64",
    "--model.encoder.num_heads", "2", "--model.encoder.ffn_size", "128",
    "--model.decoder.num_heads", "2", "--model.decoder.ffn_size", "128",
    "--model.encoder.num_layers", "2", "--model.decoder.num_layers", "2",
    "--model.embedding.max_positions", "64", "--model.tgt_embedding.max_positions", "64",
]  # fmt: skip
NO_DROPOUT = [
    f"--model.{name}" for slot in ("encoder", "decoder")
    for name in (f"{slot}.dropout", f"{slot}.attention_dropout", f"{slot}.ffn_dropout")
] + ["--model.embedding.dropout", "--model.tgt_embedding.dropout"]  # fmt: skip
ONE_PLUS_TWO = ["--model.encoder.num_layers", "1"]


def pretrain_args(shards: Path, out: Path, *extra: str) -> list[str]:
    dropout = [value for flag in NO_DROPOUT for value in (flag, "0")]
    return layout_args(shards, out, *extra, model=BART, dropout=dropout)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pp-seq2seq")
    shards = layout_shards(root, "bart")
    cli(*pretrain_args(shards, root / "single"))
    pp4 = ["--pipeline-parallel", "4", "--microbatches", "4"]
    torchrun(4, *pretrain_args(shards, root / "pp4", *pp4), log=root / "pp4.log")
    # With sequence parallelism: each stack splits its input along the sequence, the decoder's
    # cross-attention reads the encoder's whole output.
    tp2_pp2 = ["--pipeline-parallel", "2", "--tensor-parallel", "2", "--sequence-parallel"]
    torchrun(4, *pretrain_args(shards, root / "tp2-pp2", *tp2_pp2), log=root / "tp2-pp2.log")
    cli(*pretrain_args(shards, root / "single-1+2", *ONE_PLUS_TWO))
    across = [*ONE_PLUS_TWO, "--pipeline-parallel", "2"]
    torchrun(2, *pretrain_args(shards, root / "pp2-1+2", *across), log=root / "pp2-1+2.log")
    return root


def split_line(log: Path) -> str:
    return next(x for x in log.read_text().splitlines() if "pipeline split by" in x)


@pytest.mark.parametrize(
    ("run", "reference", "stages"),
    [
        ("pp4", "single", "layers 0-0, layers 1-1, layers 2-2, layers 3-3"),
        ("tp2-pp2", "single", "layers 0-1, layers 2-3"),
        ("pp2-1+2", "single-1+2", "layers 0-1, layers 2-2"),  # stage 0: encoder + decoder 0
    ],
)
def test_encoder_decoder_pipeline_follows_one_process(
    root: Path, run: str, reference: str, stages: str
) -> None:
    assert stages in split_line(root / f"{run}.log")
    for name in ("loss", "grad_norm", "lm_accuracy"):
        expected, got = metric(root / reference, name), metric(root / run, name)
        assert sorted(got) == sorted(expected) == list(range(1, 21))
        for step, value in expected.items():
            assert got[step] == pytest.approx(value, rel=TOLERANCE, abs=1e-6), (name, step)
    single = losses(root / reference)
    assert single[20] < single[1] - 0.5  # it learns
    expected_weights = load_file(str(root / reference / "model" / "model.safetensors"))
    weights = load_file(str(root / run / "model" / "model.safetensors"))
    assert weights.keys() == expected_weights.keys()
    for name, value in expected_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=1e-5, msg=name)


def test_pipeline_model_loads_and_resumes_in_one_process(root: Path) -> None:
    model = pretrainkit.load(root / "pp4" / "model")
    word = model.embedding.parts["word"].weight
    assert model.tgt_embedding.parts["word"].weight is word  # the three-way tie restored
    assert model.targets["seq2seq_lm"].decoder.weight is word
    resumed = cut_at_step_10(root / "pp4", root / "pp4-on-one")
    cli(*pretrain_args(root / "shards", resumed, "--resume"))
    expected, got = losses(root / "single"), losses(resumed)
    for step in range(11, 21):
        assert got[step] == pytest.approx(expected[step], rel=TOLERANCE), step


def test_sharded_pipelines_of_an_encoder_decoder_train_as_ddp(root: Path) -> None:
    shards = root / "shards"
    ddp, fsdp = root / "ddp", root / "fsdp-pp2"
    torchrun(2, *pretrain_args(shards, ddp, "--strategy", "ddp"), log=root / "ddp.log")
    layout = ["--pipeline-parallel", "2", "--strategy", "fsdp"]
    torchrun(4, *pretrain_args(shards, fsdp, *layout), log=root / "fsdp-pp2.log")
    for name in ("loss", "grad_norm"):
        expected, got = metric(ddp, name), metric(fsdp, name)
        assert sorted(got) == list(range(1, 21))
        for step, value in expected.items():
            assert got[step] == pytest.approx(value, rel=TOLERANCE), (name, step)

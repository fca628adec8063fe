"""DeepSpeed ZeRO-3 on two CPU processes (torchrun, gloo) against one process.

ZeRO-3 used to stop in the first backward pass ("active_backward_submodules is empty"). The
cause was ours, not the tied MLM head: ZeRO-3 gathers a module's parameters for its backward
from a hook on the tensors the module returns, and DeepSpeed finds those only in tensors,
tuples, lists and dicts; our targets and the model return dataclasses (``TargetOutput``,
``ModelOutput``). A head with parameters of its own (the CRF's transitions) then ran its
backward on released, empty parameters. ``zero.expose_dataclass_outputs`` wraps the tensors
inside those dataclasses the way DeepSpeed wraps a tuple's.

The checks: a tiny BERT pre-trained for 20 steps follows the single-process loss curve within
1 % per step (the same global batch; the gap is the per-process MLM mean, see
test_distributed.py); its model loads in one process; it resumes from its step-10 checkpoint
bit for bit from safetensors alone (planted pickles never read); and a CRF tagger, whose head
owns parameters, fine-tunes under ZeRO-3 as on one process.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from helpers import QUIET, cli, cut_at_step_10, layout_shards, needs, torchrun
from helpers import run_losses as losses
from safetensors.torch import load_file
from test_distributed import (
    GLOBAL_BATCH,
    PLANTED,
    STEPS,
    TOLERANCE,
    plant_deepspeed_pickles,
    pretrain_args,
)
from torch import nn

import pretrainkit
from pretrainkit.distributed.zero import deepspeed_config, largest_vector
from pretrainkit.training.config import TrainConfig

pytestmark = needs("deepspeed")
ZERO3 = ["--strategy", "deepspeed", "--zero-stage", "3"]
OWN_FILES = {"zero.json", "zero-rank-00000.safetensors", "zero-rank-00001.safetensors"}


def write_tagging(path: Path, rows: int, seed: int) -> Path:
    """Sentences of the test corpus's grammar; each adjective-noun pair is one entity."""
    rng = random.Random(seed)
    pairs = [("big", "horse"), ("small", "mouse"), ("red", "fox"), ("old", "farmer")]
    verbs = ["sees", "likes", "follows", "feeds"]
    lines = ["text_a\tlabel"]
    for _ in range(rows):
        (a, n), (b, m) = rng.choice(pairs), rng.choice(pairs)
        words = ["the", a, n, rng.choice(verbs), "the", b, m, "."]
        lines.append(" ".join(words) + "\tO B-A I-A O O B-A I-A O")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Shards, the single-process reference run and the ZeRO-3 run (launched once)."""
    root = tmp_path_factory.mktemp("zero3")
    layout_shards(root)
    data = {"root": root, "shards": root / "shards"}
    cli(*pretrain_args(data, root / "single"))
    torchrun(2, *pretrain_args(data, root / "zero3", *ZERO3), log=root / "zero3.log")
    return data


def test_zero3_partitions_every_matrix_and_keeps_vectors_whole() -> None:
    # DeepSpeed's default would keep all of this small model whole (every parameter is under
    # its 100,000 elements), and the runs below would then never gather a partitioned one.
    options = {"hidden_size": 64, "vocab_size": 104, "encoder": {"num_heads": 2, "ffn_size": 128}}
    model = pretrainkit.build_model("bert-tiny", {**options, "targets": [{"name": "mlm"}]})
    threshold = largest_vector(model)
    assert threshold == 128  # the FFN's bias
    whole = {n for n, p in model.named_parameters() if p.numel() <= threshold}
    vectors = {n for n, p in model.named_parameters() if p.dim() == 1}
    assert whole == vectors | {"embedding.parts.segment.weight"}  # 2 x 64: as small as one
    big = nn.Module()
    big.bias = nn.Parameter(torch.zeros(250_002))  # a large vocabulary's MLM bias
    assert largest_vector(big) == 100_000  # never more whole than DeepSpeed's default
    config = deepspeed_config(TrainConfig(steps=1), 4, 2, stage=3, cpu_offload=False, whole_up_to=7)
    assert config["zero_optimization"]["stage3_param_persistence_threshold"] == 7
    stage2 = deepspeed_config(TrainConfig(steps=1), 4, 2, stage=2, cpu_offload=False, whole_up_to=7)
    assert "stage3_param_persistence_threshold" not in stage2["zero_optimization"]


def test_zero3_follows_the_single_process_loss_curve(data: dict[str, Path]) -> None:
    root = data["root"]
    single, zero3 = losses(root / "single"), losses(root / "zero3")
    assert sorted(zero3) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert zero3[step] == pytest.approx(loss, rel=TOLERANCE), step
    assert single[STEPS] < single[1] - 0.5  # it learns, so the comparison means something
    plan = json.loads((root / "zero3" / "run.json").read_text())
    assert (plan["world_size"], plan["global_batch_size"]) == (2, GLOBAL_BATCH)
    assert (plan["strategy"]["strategy"], plan["strategy"]["zero_stage"]) == ("deepspeed", 3)
    # The optimizer state is ours (safetensors + JSON), not DeepSpeed's pickles.
    shards = root / "zero3" / "checkpoints" / "step-00000020" / "deepspeed"
    assert {p.name for p in shards.iterdir()} == OWN_FILES
    # DeepSpeed's "cannot see into this output" warning is gone for the outputs we expose.
    assert "unknown inputs or outputs type" not in (root / "zero3.log").read_text()


def test_zero3_model_loads_in_one_process(data: dict[str, Path]) -> None:
    run = data["root"] / "zero3"
    reference = load_file(str(data["root"] / "single" / "model" / "model.safetensors"))
    weights = load_file(str(run / "model" / "model.safetensors"))
    assert weights.keys() == reference.keys()  # gathered whole, the tied copy stored once
    assert all(weights[k].shape == reference[k].shape for k in weights)
    model = pretrainkit.load(run / "model").eval()  # one process, no process group
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert model.targets["mlm"].decoder.weight is model.embedding.parts["word"].weight
    # The final model and the last checkpoint's (written by other code) compute the same.
    again = pretrainkit.load(run / "checkpoints" / "step-00000020").eval()
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 40, 41, 3, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        hidden = model(ids, attention_mask=mask).hidden_states
        assert hidden.shape == (2, 5, 64) and bool(hidden.isfinite().all())
        assert torch.equal(hidden, again(ids, attention_mask=mask).hidden_states)


def test_zero3_resumes_from_safetensors_without_reading_pickles(data: dict[str, Path]) -> None:
    run = data["root"] / "zero3"
    resumed = cut_at_step_10(run, data["root"] / "zero3-resumed")
    checkpoint = resumed / "checkpoints" / "step-00000010"
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert "deepspeed/zero-rank-00001.safetensors" in manifest["files"]
    marker = data["root"] / f"zero3-{PLANTED}"
    plant_deepspeed_pickles(checkpoint, marker)  # resume must never unpickle them
    log = data["root"] / "zero3-resumed.log"
    torchrun(2, *pretrain_args(data, resumed, *ZERO3, "--resume"), log=log)
    assert not marker.exists()
    assert "(step 10)" in log.read_text()
    expected, got = losses(run), losses(resumed)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(11, STEPS + 1):  # weights, fp32 partitions and Adam moments restored
        assert got[step] == expected[step], step
    final = load_file(str(resumed / "model" / "model.safetensors"))
    uninterrupted = load_file(str(run / "model" / "model.safetensors"))
    assert final.keys() == uninterrupted.keys()
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final)


def test_zero3_fine_tunes_a_head_with_parameters_of_its_own(data: dict[str, Path]) -> None:
    # The CRF's start, transition and end scores belong to the target itself, not to a child
    # module: without the exposed output, ZeRO-3 ran their backward on released parameters.
    root = data["root"]
    train = write_tagging(root / "tagging.tsv", rows=96, seed=3)

    def finetune_args(out: Path, *extra: str) -> list[str]:
        return [
            "finetune", "--task", "tagging", "--crf", "--dropout", "0", "--model",
            str(root / "single" / "model"), "--train", str(train), "--out", str(out),
            "--steps", "10", "--global-batch-size", "8", "--seq-length", "32", "--lr", "1e-3",
            "--log-every", "1", *QUIET, *extra,
        ]  # fmt: skip

    cli(*finetune_args(root / "crf-single"))
    torchrun(2, *finetune_args(root / "crf-zero3", *ZERO3), log=root / "crf-zero3.log")
    single, zero3 = losses(root / "crf-single"), losses(root / "crf-zero3")
    assert sorted(zero3) == list(range(1, 11))
    for step, loss in single.items():
        assert zero3[step] == pytest.approx(loss, rel=TOLERANCE), step
    assert single[10] < single[1] - 0.2
    model = pretrainkit.load(root / "crf-zero3" / "model")
    reference = pretrainkit.load(root / "crf-single" / "model")
    transitions = model.targets["crf"].transitions
    assert transitions.abs().max() > 0  # trained (they start at zero)
    assert torch.allclose(
        transitions, reference.targets["crf"].transitions, atol=1e-4
    )  # measured 2e-6

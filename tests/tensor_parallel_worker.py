"""Run by tests/test_tensor_parallel.py under torchrun (2 processes): layer-level parity of
tensor parallelism (vocabulary split, with and without sequence parallelism) for two
families, dropout under sequence parallelism, a vocabulary TP does not divide, and the check
that refuses mismatched batches."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from pretrainkit.config import load_model_config
from pretrainkit.distributed import ParallelConfig, init_device, parallelize
from pretrainkit.errors import ConfigError
from pretrainkit.model import build_model
from pretrainkit.training.config import TrainConfig

FAMILIES = {
    # pre-RMSNorm, rotary, gated SiLU FFN, grouped-query attention (4 query / 2 kv heads)
    "llama": {
        "vocab_size": 100, "hidden_size": 32, "encoder.num_layers": 2, "encoder.num_heads": 4,
        "encoder.num_kv_heads": 2, "encoder.ffn_size": 64,
    },
    # encoder-decoder: cross-attention in every decoder block, tied LM head
    "bart-base": {
        "vocab_size": 100, "hidden_size": 32, "embedding.max_positions": 40,
        "tgt_embedding.max_positions": 40, "encoder.num_layers": 1, "encoder.num_heads": 2,
        "encoder.ffn_size": 64, "decoder.num_layers": 1, "decoder.num_heads": 2,
        "decoder.ffn_size": 64, "embedding.dropout": 0, "encoder.dropout": 0,
        "encoder.attention_dropout": 0, "encoder.ffn_dropout": 0, "decoder.dropout": 0,
        "decoder.attention_dropout": 0, "decoder.ffn_dropout": 0, "tgt_embedding.dropout": 0,
    },
}  # fmt: skip


def dropout_on(overrides: dict, p: float) -> dict:
    """The family's overrides with every dropout at ``p``."""
    keys = ["embedding.dropout", "encoder.dropout", "encoder.attention_dropout"]
    keys.append("encoder.ffn_dropout")
    if "decoder.num_layers" in overrides:
        keys += ["tgt_embedding.dropout", "decoder.dropout", "decoder.attention_dropout"]
        keys.append("decoder.ffn_dropout")
    return {**overrides, **dict.fromkeys(keys, p)}


def parity(name: str, overrides: dict, sequence_parallel: bool = False, length: int = 12) -> dict:
    config = load_model_config(name, overrides)
    torch.manual_seed(0)
    reference = build_model(config)
    parallel = ParallelConfig(tensor_parallel=2, sequence_parallel=sequence_parallel)
    torch.manual_seed(0)
    with init_device(parallel):  # meta on rank 1, as pretrain builds
        split = build_model(config)
    train = TrainConfig(steps=1, device="cpu")
    engine = parallelize(split, parallel, train, "cpu")
    generator = torch.Generator().manual_seed(1)
    # An odd length under sequence parallelism: parts of 6 and 5 positions.
    ids = torch.randint(4, 100, (2, length), generator=generator)
    batch = {"input_ids": ids, "labels": ids.clone()}
    expected = reference(**batch)
    got = engine.module(**batch)
    expected.loss.backward()
    got.loss.backward()
    ref_norm = torch.nn.utils.get_total_norm([p.grad for p in reference.parameters()])
    norm = engine.grad_norm(None)
    named = dict(split.named_parameters(remove_duplicate=False))
    tied = all(named[alias] is named[source] for alias, source in split.tied_parameters().items())
    flag = torch.tensor([int(tied)])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)  # on every process, rank 1 came from meta
    full = engine.full_state_dict()
    reference_state = reference.state_dict()
    return {
        "loss": [float(expected.loss), float(got.loss)],
        "logits": float((expected.logits - got.logits).abs().max()),
        "grad_norm": [float(ref_norm), float(norm)],
        "ties": len(split.tied_parameters()),
        "tied": bool(flag.item()),
        "split": sum(type(p).__name__ == "DTensor" for p in split.parameters()),
        "vocabulary": [
            str(getattr(split.get_parameter(f"{slot}.parts.word.weight"), "placements", None))
            for slot in ("embedding", "tgt_embedding")
            if getattr(split, slot, None) is not None
        ],
        "norms": str(getattr(split.encoder.layers[0].ffn_norm.weight, "placements", None)),
        "gathered": None
        if full is None or dist.get_rank() != 0
        else max(float((full[k] - reference_state[k]).abs().max()) for k in full),
    }


def dropout_losses(name: str, overrides: dict, sequence_parallel: bool) -> list[float]:
    """Three training forwards and backwards with dropout 0.1 at an odd length, then one
    draw from each process's generator (they must still agree)."""
    config = load_model_config(name, dropout_on(overrides, 0.1))
    parallel = ParallelConfig(tensor_parallel=2, sequence_parallel=sequence_parallel)
    torch.manual_seed(0)
    with init_device(parallel):
        model = build_model(config)
    engine = parallelize(model, parallel, None, "cpu")
    ids = torch.randint(4, 100, (2, 11), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    losses = []
    for _ in range(3):
        output = engine.module(input_ids=ids, labels=ids.clone())
        output.loss.backward()
        losses.append(float(output.loss.detach()))
    draws = [torch.zeros(1) for _ in range(dist.get_world_size())]
    dist.all_gather(draws, torch.rand(1))
    return [*losses, *(float(draw) for draw in draws)]


def fsdp_from_meta() -> list[float]:
    """FSDP alone (no TP) on the LLaMA-like model, rank 1 built on meta: the rotary
    frequencies (a non-persistent buffer, not in any state dict) must reach rank 1 too."""
    config = load_model_config("llama", FAMILIES["llama"])
    torch.manual_seed(0)
    reference = build_model(config)
    torch.manual_seed(0)
    with init_device(ParallelConfig(strategy="fsdp")):
        sharded = build_model(config)
    engine = parallelize(sharded, ParallelConfig(strategy="fsdp"), None, "cpu")
    ids = torch.randint(4, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids.clone()}
    losses = [torch.zeros(1) for _ in range(dist.get_world_size())]
    dist.all_gather(losses, engine.module(**batch).loss.detach().reshape(1))
    return [float(reference(**batch).loss), *(float(loss) for loss in losses)]


def mismatched_batches() -> str:
    config = load_model_config("llama", FAMILIES["llama"])
    engine = parallelize(build_model(config), ParallelConfig(tensor_parallel=2), None, "cpu")
    batch = {"input_ids": torch.full((1, 4), 5 + dist.get_rank())}  # split by global rank
    try:
        engine.check_batch(batch)
    except ConfigError as error:
        return str(error)
    return "no error"


if __name__ == "__main__":
    results: dict = {name: parity(name, overrides) for name, overrides in FAMILIES.items()}
    for name, overrides in FAMILIES.items():
        results[f"{name}+sp"] = parity(name, overrides, sequence_parallel=True, length=11)
        results[f"{name}-dropout"] = [
            dropout_losses(name, overrides, sequence_parallel)
            for sequence_parallel in (False, True)
        ]
    # 101 rows: two processes cannot split the vocabulary; it stays whole, the rest splits.
    results["indivisible"] = parity("llama", {**FAMILIES["llama"], "vocab_size": 101})
    results["mismatch"] = mismatched_batches()
    results["fsdp-meta"] = fsdp_from_meta()
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as file:
            json.dump(results, file)
    dist.barrier()
    dist.destroy_process_group()

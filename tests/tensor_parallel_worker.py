"""Run by tests/test_tensor_parallel.py under torchrun (2 processes): layer-level parity of
tensor parallelism for three families, and the check that refuses mismatched batches."""

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


def parity(name: str, overrides: dict) -> dict:
    config = load_model_config(name, overrides)
    torch.manual_seed(0)
    reference = build_model(config)
    torch.manual_seed(0)
    with init_device(ParallelConfig(tensor_parallel=2)):  # meta on rank 1, as pretrain builds
        split = build_model(config)
    train = TrainConfig(steps=1, device="cpu")
    engine = parallelize(split, ParallelConfig(tensor_parallel=2), train, "cpu")
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 100, (2, 12), generator=generator)
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
        "gathered": None
        if full is None or dist.get_rank() != 0
        else max(float((full[k] - reference_state[k]).abs().max()) for k in full),
    }


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
    results = {name: parity(name, overrides) for name, overrides in FAMILIES.items()}
    results["mismatch"] = mismatched_batches()
    results["fsdp-meta"] = fsdp_from_meta()
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as file:
            json.dump(results, file)
    dist.barrier()
    dist.destroy_process_group()

"""Tensor parallelism: the attention heads and the feed-forward width split over processes.

The plan is derived from the layers' types, not from names per model family: every transformer
block of ``model.encoder.layers`` / ``model.decoder.layers`` holds a ``MultiHeadAttention``
(self- and, in decoders, cross-attention) and a ``FeedForward`` or ``GatedFeedForward``. Their
input projections (query, key, value; FFN up and gate) are split by output columns
(``ColwiseParallel``): each process computes ``num_heads / N`` whole heads and ``ffn_size / N``
hidden units. The projections back to the model width (attention output, FFN down) are split
by input rows (``RowwiseParallel``) and all-reduce their partial sums, so the residual stream
between blocks is whole on every process (Megatron-LM's layout, through PyTorch's own
``parallelize_module``). Embeddings, norms and heads stay replicated: each process holds them
whole and computes the same gradient for them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pretrainkit.errors import ConfigError
from pretrainkit.layers.attention import MultiHeadAttention
from pretrainkit.layers.feed_forward import FeedForward, GatedFeedForward

# Attention biases with one slice per head, computed by the stack for all heads at once: with
# a process holding only some of the heads they would need slicing there.
PER_HEAD_POSITIONS = ("alibi", "relative")


def tensor_parallel_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The transformer blocks to split, with their names (shared blocks, as in ALBERT, once)."""
    blocks: dict[int, tuple[str, nn.Module]] = {}
    for stack_name in ("encoder", "decoder"):
        stack = getattr(model, stack_name, None)
        layers = getattr(stack, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            continue
        for index, block in enumerate(layers):
            blocks.setdefault(id(block), (f"{stack_name}.layers.{index}", block))
    return list(blocks.values())


def check_tensor_parallel(model: nn.Module, size: int) -> None:
    """Fail before anything is written on a model that ``size`` processes cannot split.

    Every block must have attention and feed-forward modules of the known types whose head
    counts (query and key/value) and FFN width ``size`` divides; per-head position biases
    (ALiBi, T5's relative bias) are not split yet.

    Raises:
        ConfigError: Naming the module and the number that ``size`` does not divide.
    """
    if size == 1:
        return
    blocks = tensor_parallel_blocks(model)
    if not blocks:
        raise ConfigError(
            f"tensor_parallel {size}: {type(model).__name__} has no transformer layers "
            "(encoder.layers / decoder.layers) to split; RNN and CNN encoders and models "
            "wrapped by a recipe (distillation) train with tensor_parallel 1"
        )
    for stack_name in ("encoder", "decoder"):
        position = getattr(getattr(model, stack_name, None), "position", None)
        if position in PER_HEAD_POSITIONS:
            raise ConfigError(
                f"tensor_parallel {size}: {stack_name}.position {position!r} adds a bias per "
                "attention head for all heads at once, which tensor parallelism does not split "
                "yet; use rotary or absolute positions, or tensor_parallel 1"
            )
    for name, block in blocks:
        for part in ("attention", "cross_attention"):
            attention = getattr(block, part, None)
            if attention is None:
                continue
            if not isinstance(attention, MultiHeadAttention):
                raise ConfigError(
                    f"tensor_parallel {size}: {name}.{part} is a {type(attention).__name__}, "
                    "which has no tensor-parallel plan (only MultiHeadAttention)"
                )
            for what, heads in (
                ("num_heads", attention.num_heads),
                ("num_kv_heads", attention.num_kv_heads),
            ):
                if heads % size:
                    raise ConfigError(
                        f"tensor_parallel {size} does not divide {name}.{part} {what} = {heads}: "
                        "each process computes whole heads; choose a tensor_parallel that "
                        f"divides {heads}"
                    )
        feed_forward = getattr(block, "feed_forward", None)
        if not isinstance(feed_forward, FeedForward | GatedFeedForward):
            raise ConfigError(
                f"tensor_parallel {size}: {name}.feed_forward is a "
                f"{type(feed_forward).__name__}, which has no tensor-parallel plan "
                "(only FeedForward and GatedFeedForward)"
            )
        width = feed_forward.up.out_features
        if width % size:
            raise ConfigError(
                f"tensor_parallel {size} does not divide {name}.feed_forward width (ffn_size) "
                f"= {width}; choose a tensor_parallel that divides it"
            )


def block_plan(block: nn.Module) -> dict[str, Any]:
    """``parallelize_module``'s plan for one block, by the types of its sub-modules."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan: dict[str, Any] = {}
    for part in ("attention", "cross_attention"):
        if isinstance(getattr(block, part, None), MultiHeadAttention):
            for projection in ("query", "key", "value"):
                plan[f"{part}.{projection}"] = ColwiseParallel()
            plan[f"{part}.output"] = RowwiseParallel()
    feed_forward = getattr(block, "feed_forward", None)
    if isinstance(feed_forward, GatedFeedForward):
        plan["feed_forward.gate"] = ColwiseParallel()
    if isinstance(feed_forward, FeedForward | GatedFeedForward):
        plan["feed_forward.up"] = ColwiseParallel()
        plan["feed_forward.down"] = RowwiseParallel()
    return plan


def apply_tensor_parallel(
    model: nn.Module, tp_mesh: Any, src_data_rank: int | None = 0
) -> nn.Module:
    """Split every transformer block of ``model`` over ``tp_mesh`` (in place).

    The split parameters become DTensors sharded over the mesh. With ``src_data_rank=0`` the
    mesh's first process's values are scattered, so processes that built different initial
    weights still agree; ``None`` keeps each process's own part (a model on the meta device,
    whose weights are broadcast afterwards).
    """
    from torch.distributed.tensor.parallel import parallelize_module

    check_tensor_parallel(model, tp_mesh.size())
    for _, block in tensor_parallel_blocks(model):
        parallelize_module(block, tp_mesh, block_plan(block), src_data_rank=src_data_rank)
    return model


def replicated_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that tensor parallelism left whole (embeddings, norms, heads)."""
    from torch.distributed.tensor import DTensor

    return [p for p in model.parameters() if not isinstance(p, DTensor)]


def batch_checksum(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A number that differs, in practice, between two different batches (same keys)."""
    total = torch.zeros((), dtype=torch.float64)
    for index, key in enumerate(sorted(batch)):
        value = batch[key].detach().to("cpu", torch.float64).reshape(-1)
        weights = torch.arange(1, value.numel() + 1, dtype=torch.float64)
        total += (index + 1) * (value * weights).sum()
    return total.reshape(1)

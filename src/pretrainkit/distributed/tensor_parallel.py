"""Tensor parallelism: the attention heads, the feed-forward width and the vocabulary split
over processes, optionally the sequence too.

The plan is derived from the modules' types, not from names per model family: every
transformer block of ``model.encoder.layers`` / ``model.decoder.layers`` holds a
``MultiHeadAttention`` (self- and, in decoders, cross-attention) and a ``FeedForward`` or
``GatedFeedForward``. Their input projections (query, key, value; FFN up and gate) are split
by output columns (``ColwiseParallel``): each process computes ``num_heads / N`` whole heads
and ``ffn_size / N`` hidden units. The projections back to the model width (attention output,
FFN down) are split by input rows (``RowwiseParallel``) and all-reduce their partial sums, so
the residual stream between blocks is whole on every process (Megatron-LM's layout, through
PyTorch's own ``parallelize_module``), unless sequence parallelism shards it.

The vocabulary (the word tables and the heads onto them, tied or not) is split by rows; see
``tensor_parallel_vocabulary``.

Sequence parallelism (optional): between the sub-layers the residual stream is a DTensor
sharded along the sequence, so the norms and the residual dropouts work on ``s / N``
positions; each sub-layer gathers its input (all-gather) and its row-wise output is
reduce-scattered instead of all-reduced. See ``tensor_parallel_styles``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pretrainkit.encoders.transformer import TransformerEncoder
from pretrainkit.errors import ConfigError
from pretrainkit.layers.attention import MultiHeadAttention
from pretrainkit.layers.block import TransformerBlock
from pretrainkit.layers.feed_forward import FeedForward, GatedFeedForward
from pretrainkit.layers.norms import RMSNorm

# Attention biases with one slice per head, computed by the stack for all heads at once: with
# a process holding only some of the heads they would need slicing there.
PER_HEAD_POSITIONS = ("alibi", "relative")
# Norms that work position by position, so they run on a part of the sequence unchanged.
SEQUENCE_NORMS = (nn.LayerNorm, RMSNorm)
# Each split stack and the embedding slot that feeds it.
STACKS = (("encoder", "embedding"), ("decoder", "tgt_embedding"))


def split_stacks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layer stacks with transformer blocks to split, by name."""
    stacks: list[tuple[str, nn.Module]] = []
    for name, _ in STACKS:
        stack = getattr(model, name, None)
        if isinstance(stack, nn.Module) and isinstance(
            getattr(stack, "layers", None), nn.ModuleList
        ):
            stacks.append((name, stack))
    return stacks


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


def check_tensor_parallel(model: nn.Module, size: int, sequence_parallel: bool = False) -> None:
    """Fail before anything is written on a model that ``size`` processes cannot split.

    Every block must have attention and feed-forward modules of the known types whose head
    counts (query and key/value) and FFN width ``size`` divides; per-head position biases
    (ALiBi, T5's relative bias) are not split yet. With ``sequence_parallel`` the blocks and
    stacks must also be of the types whose residual stream the plan knows (see
    ``check_sequence_parallel``). (The vocabulary is never an error: one that ``size`` does
    not divide stays whole.)

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
    if sequence_parallel:
        check_sequence_parallel(model, size)


def check_sequence_parallel(model: nn.Module, size: int) -> None:
    """The modules sequence parallelism shards around: transformer stacks fed by an embedding
    slot, ``TransformerBlock`` blocks (whose residual and dropout the plan shards) and norms
    that work position by position (LayerNorm, RMSNorm).

    Raises:
        ConfigError: Naming the module of another type.
    """
    prefix = f"sequence_parallel (tensor_parallel {size})"
    for stack_name, slot in STACKS:
        stack = getattr(model, stack_name, None)
        if not isinstance(getattr(stack, "layers", None), nn.ModuleList):
            continue
        if not isinstance(stack, TransformerEncoder):
            raise ConfigError(
                f"{prefix}: {stack_name} is a {type(stack).__name__}, not a transformer stack "
                "whose blocks the plan knows; drop --sequence-parallel"
            )
        if getattr(model, slot, None) is None:
            raise ConfigError(
                f"{prefix}: {type(model).__name__} has no {slot} before its {stack_name}, "
                "where the sequence is split; drop --sequence-parallel"
            )
        norms: list[tuple[str, Any]] = [(f"{stack_name}.final_norm", stack.final_norm)]
        for index, block in enumerate(stack.layers):
            name = f"{stack_name}.layers.{index}"
            if not isinstance(block, TransformerBlock):
                raise ConfigError(
                    f"{prefix}: {name} is a {type(block).__name__}, not a TransformerBlock "
                    "whose residual stream the plan shards; drop --sequence-parallel"
                )
            parts = ("attention_norm", "cross_norm", "ffn_norm")
            norms += [(f"{name}.{part}", getattr(block, part, None)) for part in parts]
        for name, norm in norms:
            if norm is not None and not isinstance(norm, SEQUENCE_NORMS):
                raise ConfigError(
                    f"{prefix}: {name} is a {type(norm).__name__}; only LayerNorm and RMSNorm "
                    "(position by position) run on a part of the sequence; drop "
                    "--sequence-parallel"
                )


def block_plan(block: nn.Module, sequence_parallel: bool = False) -> dict[str, Any]:
    """``parallelize_module``'s plan for one block, by the types of its sub-modules.

    With ``sequence_parallel`` the block's input and output are sharded along the sequence:
    its norms run on the local positions, each sub-layer gathers its input once, and the
    row-wise projections reduce-scatter their partial sums back to sequence parts.
    """
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    from pretrainkit.distributed.tensor_parallel_styles import (
        SEQUENCE,
        ColwiseFromAnyLayout,
        GatherSequence,
        SequenceParallelNorm,
    )

    def column() -> Any:
        return ColwiseFromAnyLayout() if sequence_parallel else ColwiseParallel()

    def row() -> Any:
        if sequence_parallel:
            return RowwiseParallel(output_layouts=SEQUENCE, use_local_output=False)
        return RowwiseParallel()

    plan: dict[str, Any] = {}
    for part in ("attention", "cross_attention"):
        if isinstance(getattr(block, part, None), MultiHeadAttention):
            for projection in ("query", "key", "value"):
                plan[f"{part}.{projection}"] = column()
            plan[f"{part}.output"] = row()
            if sequence_parallel:
                plan[part] = GatherSequence()
    feed_forward = getattr(block, "feed_forward", None)
    if isinstance(feed_forward, GatedFeedForward):
        plan["feed_forward.gate"] = column()
    if isinstance(feed_forward, FeedForward | GatedFeedForward):
        plan["feed_forward.up"] = column()
        plan["feed_forward.down"] = row()
        if sequence_parallel:
            plan["feed_forward"] = GatherSequence()
    if sequence_parallel:
        for norm in ("attention_norm", "cross_norm", "ffn_norm"):
            if getattr(block, norm, None) is not None:
                plan[norm] = SequenceParallelNorm()
    return plan


def sequence_plan(model: nn.Module) -> dict[str, Any]:
    """Where the residual stream enters and leaves its sequence-sharded form: after each
    embedding slot that feeds a split stack, and after that stack (its final norm, where it
    has one, runs on the local positions)."""
    from pretrainkit.distributed.tensor_parallel_styles import (
        GatherSequenceOutput,
        SequenceParallelNorm,
        ShardSequenceOutput,
    )

    plan: dict[str, Any] = {}
    slots = dict(STACKS)
    for stack_name, stack in split_stacks(model):
        plan[slots[stack_name]] = ShardSequenceOutput()
        plan[stack_name] = GatherSequenceOutput()
        if getattr(stack, "final_norm", None) is not None:
            plan[f"{stack_name}.final_norm"] = SequenceParallelNorm()
    return plan


def apply_tensor_parallel(
    model: nn.Module,
    tp_mesh: Any,
    src_data_rank: int | None = 0,
    *,
    vocabulary: bool = True,
    sequence_parallel: bool = False,
) -> nn.Module:
    """Split ``model`` over ``tp_mesh`` (in place): every transformer block, the vocabulary
    (unless ``vocabulary`` is False) and, with ``sequence_parallel``, the activations between
    the sub-layers along the sequence.

    The split parameters become DTensors sharded over the mesh. With ``src_data_rank=0`` the
    mesh's first process's values are scattered, so processes that built different initial
    weights still agree; ``None`` keeps each process's own part (a model on the meta device,
    whose weights are broadcast afterwards).
    """
    from torch.distributed.tensor.parallel import parallelize_module

    from pretrainkit.distributed.tensor_parallel_styles import SequenceShardedDropout

    check_tensor_parallel(model, tp_mesh.size(), sequence_parallel)
    for _, block in tensor_parallel_blocks(model):
        plan = block_plan(block, sequence_parallel)
        parallelize_module(block, tp_mesh, plan, src_data_rank=src_data_rank)
        dropout = getattr(block, "dropout", None)
        if sequence_parallel and type(dropout) is nn.Dropout:
            block.dropout = SequenceShardedDropout(dropout.p)
    if sequence_parallel:
        parallelize_module(model, tp_mesh, sequence_plan(model), src_data_rank=src_data_rank)
    if vocabulary:
        from pretrainkit.distributed.tensor_parallel_vocabulary import split_vocabulary

        split_vocabulary(model, tp_mesh, src_data_rank)
    return model


def replicated_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that tensor parallelism left whole on every process: plain tensors (norms,
    position tables, a vocabulary it could not split) and, under sequence parallelism, the
    norms' replicated DTensors."""
    from torch.distributed.tensor import DTensor

    return [
        p
        for p in model.parameters()
        if not isinstance(p, DTensor) or all(place.is_replicate() for place in p.placements)
    ]


def batch_checksum(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A number that differs, in practice, between two different batches (same keys)."""
    total = torch.zeros((), dtype=torch.float64)
    for index, key in enumerate(sorted(batch)):
        value = batch[key].detach().to("cpu", torch.float64).reshape(-1)
        weights = torch.arange(1, value.numel() + 1, dtype=torch.float64)
        total += (index + 1) * (value * weights).sum()
    return total.reshape(1)

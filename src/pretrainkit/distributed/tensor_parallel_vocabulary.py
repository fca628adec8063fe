"""Tensor parallelism over the vocabulary: the word tables and the heads onto them split by rows.

"Where the family allows" is read from the modules, not from family names: the word tables
are the ``word`` parts (``WordEmbedding``) of the embedding slots, and the heads every
``nn.Linear`` of the targets whose output width is a word table's vocabulary (the MLM and LM
decoders, tied to a table or not). A tied head and its table (BERT's MLM decoder, GPT-2's LM
head, BART's head and both its tables) are split alike and share one split parameter.

The head's logits are gathered whole (``ColwiseParallel(output_layouts=Replicate())``) rather
than left split for ``loss_parallel``: the targets compute their loss and accuracy in one fused
pass over plain logits and hand the logits to evaluation and prediction, which expect a whole
tensor, while ``loss_parallel`` covers only ``F.cross_entropy`` on a DTensor with the backward
inside its context. Both give the same loss. The split saves the vocabulary's weights,
gradients, optimizer moments and the head's matmul by N, not the logits. A vocabulary that N
does not divide stays whole (logged): refusing it would refuse TP for GPT-2's 50257 tokens.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from pretrainkit.distributed.tensor_parallel import STACKS
from pretrainkit.embeddings.embedding import WordEmbedding

logger = logging.getLogger(__name__)


def vocabulary_groups(
    model: nn.Module, vocabulary: int | None = None
) -> list[list[tuple[str, nn.Module]]]:
    """The modules holding a vocabulary-sized weight, grouped by shared (tied) weight.

    The word tables are the ``word`` parts of the embedding slots; the heads, every
    ``nn.Linear`` of the targets whose output width is a word table's vocabulary (the MLM and
    LM decoders) or ``vocabulary`` (a pipeline's last stage holds the head without the table).
    A tied head falls in its table's group.
    """
    found: list[tuple[str, nn.Module]] = []
    for _, slot in STACKS:
        parts = getattr(getattr(model, slot, None), "parts", None)
        if isinstance(parts, nn.ModuleDict) and isinstance(
            parts["word"] if "word" in parts else None, WordEmbedding
        ):
            found.append((f"{slot}.parts.word", parts["word"]))
    sizes = {rows(module) for _, module in found} | ({vocabulary} if vocabulary else set())
    targets = getattr(model, "targets", None)
    if isinstance(targets, nn.Module):
        for name, module in targets.named_modules():
            if isinstance(module, nn.Linear) and module.out_features in sizes:
                found.append((f"targets.{name}", module))
    groups: dict[int, list[tuple[str, nn.Module]]] = {}
    for name, module in found:
        groups.setdefault(id(module.weight), []).append((name, module))
    return list(groups.values())


def rows(module: nn.Module) -> int:
    """The vocabulary of a word table or a head onto it: its weight's rows."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.shape[0]


def split_vocabulary(
    model: nn.Module, tp_mesh: Any, src_data_rank: int | None = 0, vocabulary: int | None = None
) -> list[str]:
    """Split the word tables and the heads onto the vocabulary by rows over ``tp_mesh``
    (``vocabulary``: see ``vocabulary_groups``).

    Tables are split with ``VocabularyParallelEmbedding`` (the output summed whole), heads
    with ``ColwiseParallel`` whose logits are gathered whole. Tied modules end up sharing one
    split parameter again (``parallelize_module`` gives each module its own). A vocabulary
    that the mesh size does not divide stays whole, with a log line.

    Returns:
        The names of the split modules.
    """
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module
    from torch.distributed.tensor.parallel.style import ParallelStyle

    from pretrainkit.distributed.tensor_parallel_styles import VocabularyParallelEmbedding

    size = tp_mesh.size()
    split: list[str] = []
    for group in vocabulary_groups(model, vocabulary):
        vocabulary = rows(group[0][1])
        names = [name for name, _ in group]
        if vocabulary % size:
            if torch.distributed.get_rank() == 0:
                logger.warning(
                    "tensor_parallel %d does not divide the vocabulary of %d: %s stay whole "
                    "on every process (the layers are split as usual)",
                    size, vocabulary, ", ".join(names),
                )  # fmt: skip
            continue
        plan: dict[str, ParallelStyle] = {
            name: VocabularyParallelEmbedding()
            if isinstance(module, WordEmbedding)
            else ColwiseParallel(output_layouts=Replicate())
            for name, module in group
        }
        parallelize_module(model, tp_mesh, plan, src_data_rank=src_data_rank)
        shared = group[0][1].weight
        for _, module in group[1:]:
            module.weight = shared  # the tie, on the split parameter
        split += names
        if torch.distributed.get_rank() == 0:
            logger.info(
                "tensor parallel: the vocabulary of %d split over %d processes: %s",
                vocabulary, size, ", ".join(names),
            )  # fmt: skip
    return split

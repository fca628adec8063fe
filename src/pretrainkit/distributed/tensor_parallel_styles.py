"""Parallel styles for the vocabulary and the sequence, beside PyTorch's Colwise/Rowwise ones.

``torch.distributed.tensor.parallel`` splits ``nn.Linear`` and ``nn.Embedding`` and shards
activations with ``SequenceParallel``; these styles fill the gaps for pretrainkit's modules:

- ``VocabularyParallelEmbedding``: a ``WordEmbedding`` (whose forward also takes the token
  types and positions, which ``RowwiseParallel`` would drop) split by vocabulary rows.
- ``SequenceParallelNorm``: ``SequenceParallel`` whose replicated weights come from the source
  rank (PyTorch's assumes they are equal everywhere already) and which reads a plain tensor
  as whole, never as a part.
- ``GatherSequence`` / ``ShardSequenceOutput`` / ``ShardSequenceInput`` /
  ``GatherSequenceOutput``: where the residual stream enters and leaves its sequence-sharded
  form.
- ``SequenceShardedDropout``: dropout on a sequence-sharded tensor with the whole tensor's mask.

Under sequence parallelism the residual stream between sub-layers is a DTensor sharded on the
sequence dimension (``Shard(1)`` of ``[b, s, h]``), never a bare local part: its ``shape`` is
the whole one (the stack builds its masks and rotary tables from it), and any projection that
receives it gathers it first (``ColwiseFromAnyLayout``), so no path can mistake a part for the
whole.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, SequenceParallel
from torch.distributed.tensor.parallel.style import ParallelStyle

SEQUENCE = Shard(1)  # [b, s, h]: positions split over the processes


def _whole(value: Any) -> Any:
    """A DTensor gathered whole (still a DTensor); anything else as it is."""
    if isinstance(value, DTensor) and any(not p.is_replicate() for p in value.placements):
        return value.redistribute(placements=[Replicate()] * value.device_mesh.ndim)
    return value


class VocabularyParallelEmbedding(ParallelStyle):
    """A word table split by rows: each process holds ``vocab / N`` token vectors.

    The ids stay whole on every process; each looks up the ids in its rows (zeros for the
    others) and the parts are summed (one all-reduce of ``[b, s, h]``), so the output is the
    whole embedding, a plain tensor, as before.
    """

    def _partition(self, name: str, module: nn.Module, mesh: Any) -> None:
        for key, param in list(module.named_parameters(recurse=False)):
            rows = distribute_tensor(param, mesh, [Shard(0)], src_data_rank=self.src_data_rank)
            module.register_parameter(key, nn.Parameter(rows, param.requires_grad))

    @staticmethod
    def _inputs(module: nn.Module, inputs: tuple[Any, ...], mesh: Any) -> tuple[Any, ...]:
        ids = inputs[0]
        if not isinstance(ids, DTensor):
            ids = DTensor.from_local(ids, mesh, [Replicate()], run_check=False)
        return (ids, *inputs[1:])

    @staticmethod
    def _output(module: nn.Module, output: DTensor, mesh: Any) -> torch.Tensor:
        return output.redistribute(placements=[Replicate()]).to_local()

    def _apply(self, module: nn.Module, device_mesh: Any) -> nn.Module:
        # (PyTorch annotates the hooks as returning None; they return the new inputs/output.)
        inputs: Any = self._inputs
        output: Any = self._output
        return distribute_module(module, device_mesh, self._partition, inputs, output)


class SequenceParallelNorm(SequenceParallel):
    """``SequenceParallel`` for a norm: the weights replicated from ``src_data_rank`` (not
    assumed equal), the input sharded along the sequence, the output a sharded DTensor.

    A plain tensor input is taken as whole and cut (no communication), never as a part.
    """

    def _replicate_module_fn(self, name: str, module: nn.Module, device_mesh: Any) -> None:
        for key, param in list(module.named_parameters(recurse=False)):
            whole = distribute_tensor(
                param, device_mesh, [Replicate()], src_data_rank=self.src_data_rank
            )
            module.register_parameter(key, nn.Parameter(whole, param.requires_grad))

    @staticmethod
    def _prepare_input_fn(sequence_sharding, mod, inputs, device_mesh):  # type: ignore[override]
        x = inputs[0]
        if not isinstance(x, DTensor):
            x = DTensor.from_local(x, device_mesh, [Replicate()], run_check=False)
        if tuple(x.placements) != tuple(sequence_sharding):
            x = x.redistribute(placements=sequence_sharding)
        return (x, *inputs[1:])


class ColwiseFromAnyLayout(ColwiseParallel):
    """``ColwiseParallel`` that gathers a DTensor input of any layout first.

    PyTorch's trusts the declared ``input_layouts`` of a DTensor it receives; under sequence
    parallelism a projection reached outside its module's forward (cross-attention's query,
    through ``attend``) gets the sequence-sharded stream, which must be gathered.
    """

    @staticmethod
    def _prepare_input_fn(input_layouts, desired_input_layouts, mod, inputs, device_mesh):  # type: ignore[override]
        if isinstance(inputs[0], DTensor):
            return _whole(inputs[0])
        return ColwiseParallel._prepare_input_fn(
            input_layouts, desired_input_layouts, mod, inputs, device_mesh
        )


class GatherSequence(ParallelStyle):
    """Before a sub-layer (attention, feed-forward): its sequence-sharded first input is
    gathered whole once (all-gather; backward: one reduce-scatter of the summed gradients of
    the projections reading it), not once per projection."""

    def _apply(self, module: nn.Module, device_mesh: Any) -> nn.Module:
        module.register_forward_pre_hook(lambda _, inputs: (_whole(inputs[0]), *inputs[1:]))
        return module


def _sequence_sharded(x: torch.Tensor, device_mesh: Any) -> DTensor:
    """``x`` — a plain tensor whole on every process, or a DTensor — sharded along the
    sequence (each process keeps its positions; no communication)."""
    if not isinstance(x, DTensor):
        x = DTensor.from_local(x, device_mesh, [Replicate()], run_check=False)
    return x.redistribute(placements=[SEQUENCE])


class ShardSequenceOutput(ParallelStyle):
    """After an embedding: its whole output becomes a DTensor sharded along the sequence."""

    def _apply(self, module: nn.Module, device_mesh: Any) -> nn.Module:
        def shard(_: nn.Module, inputs: Any, output: torch.Tensor) -> DTensor:
            return _sequence_sharded(output, device_mesh)

        module.register_forward_hook(shard)
        return module


class ShardSequenceInput(ParallelStyle):
    """Before a layer stack: its whole first input (hidden states) becomes a DTensor sharded
    along the sequence (no communication). A pipeline stage's stack receives its input from
    the previous stage, not from an embedding slot, so the sequence is split here."""

    def _apply(self, module: nn.Module, device_mesh: Any) -> nn.Module:
        def shard(_: nn.Module, inputs: Any) -> Any:
            return (_sequence_sharded(inputs[0], device_mesh), *inputs[1:])

        module.register_forward_pre_hook(shard)
        return module


class GatherSequenceOutput(ParallelStyle):
    """After a layer stack: its sequence-sharded output becomes the whole plain tensor the
    targets (and a decoder's cross-attention) read."""

    def _apply(self, module: nn.Module, device_mesh: Any) -> nn.Module:
        def gather(_: nn.Module, inputs: Any, output: Any) -> Any:
            return _whole(output).to_local() if isinstance(output, DTensor) else output

        module.register_forward_hook(gather)
        return module


class SequenceShardedDropout(nn.Dropout):
    """Dropout on a sequence-sharded DTensor with the mask the whole tensor would get.

    Every process draws the whole ``[b, s, h]`` mask from its generator, as the same
    dropout on the whole tensor does, and keeps its positions' part. So the processes'
    generators advance alike (DTensor's own random ops on a CPU mesh draw only each part:
    uneven parts would leave the generators apart, and later dropouts on whole tensors, such
    as a classifier's, would then differ between processes), and a run draws the same masks
    with and without sequence parallelism.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.p > 0 and isinstance(x, DTensor)):
            return super().forward(x)
        local = x.to_local()
        keep = torch.empty(x.shape, dtype=local.dtype, device=local.device)
        keep.bernoulli_(1 - self.p)  # as torch.dropout draws it
        if self.p < 1:
            keep.div_(1 - self.p)
        part = distribute_tensor(keep, x.device_mesh, x.placements, src_data_rank=None)
        return x * part

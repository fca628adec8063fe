"""What a pipeline splits and how: the model checks, the stage split, a model cut down to its
stage, and the bookkeeping of the loss and the optimizer state (no communication here; the
engine is ``distributed.pipeline``)."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from pretrainkit.encoders.transformer import TransformerEncoder
from pretrainkit.errors import ConfigError
from pretrainkit.model import Model

IGNORE_INDEX = -100
# Targets whose loss is a mean over the label entries that are not IGNORE_INDEX (the causal
# LM's shifted by one), which the last stage re-weights per micro-batch; the others would need
# their own rule.
PIPELINE_TARGETS = ("mlm", "lm", "nsp", "sop", "seq2seq_lm")
# Entries of a sequence-to-sequence batch on the decoder's side (``[b, t]``, t its own length).
DECODER_INPUTS = ("decoder_input_ids", "decoder_attention_mask")
# Batch entries besides input_ids that the embedding, the encoder and the decoder read (every
# stage gets them); labels are read by the loss on the last stage.
SIDE_INPUTS = (
    "attention_mask", "token_type_ids", "position_ids", "example_ids", "prefix_lengths",
    *DECODER_INPUTS,
)  # fmt: skip
# Only the objectives' inputs above: an image or speech batch has no input_ids.
BATCH_KEYS = ("input_ids", "labels", "pair_labels", *SIDE_INPUTS)


def layer_slots(model: Model) -> list[tuple[TransformerEncoder, int]]:
    """The pipeline's layer stack, in order: each layer as (its stack, its index there). The
    encoder's layers, then, in an encoder-decoder model, the decoder's: one stack of
    ``E + D`` layers that the stages cut wherever the split puts them."""
    stacks = [cast(TransformerEncoder, model.encoder)]
    if model.decoder is not None:
        stacks.append(cast(TransformerEncoder, model.decoder))
    return [(stack, index) for stack in stacks for index in range(len(stack.layers))]


def check_pipeline(
    model: nn.Module, stages: int, per_process: int = 1, split: str = "params"
) -> None:
    """Fail before anything is written on a model ``stages`` pipeline stages (each process
    holding ``per_process`` of them, under the interleaved schedule; cut by ``split``)
    cannot split.

    Raises:
        ConfigError: Naming what is not supported (yet) and what to use instead.
    """
    where = f"pipeline_parallel {stages}"
    if per_process > 1:
        where += f" × stages_per_process {per_process}"
    stages *= per_process
    if not isinstance(model, Model):
        raise ConfigError(
            f"{where}: {type(model).__name__} is not a pretrainkit Model (embedding → encoder → "
            "targets); models wrapped by a recipe train with pipeline_parallel 1"
        )
    stacks = [("encoder", model.encoder)]
    if model.decoder is not None:
        stacks.append(("decoder", model.decoder))
        if per_process > 1:
            raise ConfigError(
                f"{where}: the interleaved schedule with an encoder-decoder model is not "
                "supported yet; use --pipeline-schedule 1f1b or gpipe"
            )
        if split != "params":
            raise ConfigError(
                f"{where}: pipeline_split {split!r} with an encoder-decoder model is not "
                "supported yet (the measurement times encoder layers only); use "
                "--pipeline-split params"
            )
    for slot, stack in stacks:
        _check_stack(where, slot, stack)
    total = sum(cast(TransformerEncoder, stack).num_layers for _, stack in stacks)
    if stages > total:
        kind = "encoder and decoder" if model.decoder is not None else "encoder"
        raise ConfigError(
            f"{where} exceeds the {total} {kind} layer(s): every stage needs at least one "
            f"layer; use at most {total} stages in all"
        )
    for slot in ("embedding", "tgt_embedding"):
        token_part = getattr(getattr(model, slot), "token_part", None)
        if slot == "tgt_embedding" and model.decoder is None:
            continue
        if token_part != "word":
            raise ConfigError(
                f"{where}: the {slot} reads {token_part!r} inputs; the pipeline takes token "
                "ids (a 'word' embedding) only so far"
            )
    names = [entry.name for entry in model.config.targets]
    unsupported = [name for name in names if name not in PIPELINE_TARGETS]
    if unsupported:
        raise ConfigError(
            f"{where}: target(s) {', '.join(unsupported)} not supported yet: the last stage "
            "re-weights each target's micro-batch mean into the batch mean, which it knows how "
            f"to do for {', '.join(PIPELINE_TARGETS)}"
        )


def _check_stack(where: str, slot: str, stack: nn.Module) -> None:
    """One layer stack (the encoder's or the decoder's) that the stages can cut."""
    if not isinstance(stack, TransformerEncoder):
        raise ConfigError(
            f"{where}: the {slot} is a {type(stack).__name__}, which has no layer stack to "
            "split; RNN and CNN encoders train with pipeline_parallel 1"
        )
    if len(stack.layers) != stack.num_layers:
        raise ConfigError(
            f"{where}: the {slot} applies {len(stack.layers)} block(s) {stack.num_layers} "
            "times (share_layers / layer_groups); a shared block would live on several stages, "
            "which is not supported"
        )
    if stack.relative_bias is not None:
        raise ConfigError(
            f"{where}: {slot}.position 'relative' computes one bias table for all layers, "
            "which the stages would share; not supported yet (use rotary, absolute or alibi)"
        )


def stage_layers(sizes: list[int], stages: int) -> list[range]:
    """Consecutive layer ranges, one per stage: the largest range's parameter count as small
    as it can be and, among such splits, the ranges as even as they can be (least sum of
    squares; then earlier stages take more, since the last one also computes the targets).

    Seven equal layers over three stages: 3, 2, 2. Every range holds at least one layer.

    Args:
        sizes: Parameters of each layer, in order.
        stages: Number of ranges (≤ ``len(sizes)``).
    """
    return balance_stages(sizes, stages)


def balance_stages(
    costs: Sequence[float], stages: int, first: float = 0.0, last: float = 0.0
) -> list[range]:
    """Consecutive layer ranges, one per stage, that make the costliest stage as cheap as it
    can be: a pipeline runs at the pace of its slowest stage.

    A stage costs the sum of its layers' ``costs``, plus ``first`` on stage 0 (the embedding)
    and ``last`` on the last stage (final norm and targets). Among the splits with the least
    largest stage, the evenest (least sum of squared stage costs) wins, and on a tie the one
    whose earlier stages take more layers. Exact: a dynamic programme over (stages left, first
    layer), O(stages · layers²), which is nothing next to one training step.

    Args:
        costs: One non-negative cost per layer, in order (parameters, or measured seconds).
        stages: Number of ranges (1 ≤ stages ≤ ``len(costs)``).
        first: Extra cost of stage 0.
        last: Extra cost of the last stage.

    Raises:
        ConfigError: Fewer layers than stages, or a negative or non-finite cost.
    """
    count = len(costs)
    if not 1 <= stages <= count:
        raise ConfigError(f"cannot cut {count} layer(s) into {stages} stage(s) of ≥ 1 layer")
    if any(not math.isfinite(c) or c < 0 for c in (*costs, first, last)):
        raise ConfigError(f"stage costs must be finite and ≥ 0, got {list(costs)}, {first}, {last}")
    prefix = [0.0]
    for cost in costs:
        prefix.append(prefix[-1] + cost)

    def part(start: int, end: int) -> float:
        # One expression for both passes, so the bound below compares equal floats.
        extra = (first if start == 0 else 0.0) + (last if end == count else 0.0)
        return prefix[end] - prefix[start] + extra

    # largest[k][i]: the smallest possible largest range when layers i.. form k ranges.
    inf = float("inf")
    largest = [[inf] * (count + 1) for _ in range(stages + 1)]
    largest[0][count] = 0
    for parts in range(1, stages + 1):
        for start in range(count - parts, -1, -1):
            for end in range(start + 1, count - parts + 2):
                worst = max(part(start, end), largest[parts - 1][end])
                largest[parts][start] = min(largest[parts][start], worst)
    limit = largest[stages][0]
    # Then the evenest split within that bound: squares[k][i] over the same ranges, where
    # trying longer first ranges first keeps them on ties.
    squares = [[inf] * (count + 1) for _ in range(stages + 1)]
    squares[0][count] = 0
    choice: dict[tuple[int, int], int] = {}
    for parts in range(1, stages + 1):
        for start in range(count - parts, -1, -1):
            for end in range(count - parts + 1, start, -1):
                if part(start, end) > limit:
                    continue
                cost = part(start, end) ** 2 + squares[parts - 1][end]
                if cost < squares[parts][start]:
                    squares[parts][start], choice[parts, start] = cost, end
    ranges, start = [], 0
    for parts in range(stages, 0, -1):
        end = choice[parts, start]
        ranges.append(range(start, end))
        start = end
    return ranges


class OnOtherStage(nn.Module):
    """Stands in for a module that another stage holds: no parameters, passes its input on
    (the encoder calls every layer slot; the embedding and targets slots are never called)."""

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return x


class _TakeInputs(nn.Module):
    """Stands in for the first block once, to record what the encoder hands every block
    (hidden states, attention mask, rotary tables, causal flag, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.args: tuple[Any, ...] = ()

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        self.args = (x, *args)
        return x


def measure_stage_costs(
    model: Model, rows: int, length: int, device: torch.device, precision: str, repeats: int = 5
) -> dict[str, Any]:
    """Seconds of one forward + backward of each part of the stack on a micro-batch of
    ``rows`` × ``length`` random tokens (the median of ``repeats`` after one warm-up run):
    the embedding, every encoder layer, and the final norm with the targets (random labels;
    an MLM target's at 15 % of the positions, as the objective masks).

    One part at a time is moved to ``device`` and back, so the whole model never has to fit
    there; the random number generators are left as they were, and no gradient is kept, so
    the run that follows does not notice the measurement.

    Returns:
        ``{"embedding": s, "layers": [s, ...], "head": s}``.
    """
    import statistics
    import time

    from pretrainkit.training.precision import autocast

    encoder = cast(TransformerEncoder, model.encoder)
    home = next(model.parameters()).device
    layers = list(encoder.layers)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(run: Any) -> float:
        model.zero_grad(set_to_none=True)
        run()  # warm-up: allocations, kernel choices
        seconds = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            run()
            sync()
            seconds.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
        return statistics.median(seconds)

    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), autocast(precision, device):
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(model.config.vocab_size, (rows, length), generator=generator)
        ids = ids.to(device)
        mask = torch.ones(rows, length, dtype=torch.long, device=device)
        take = _TakeInputs()
        try:
            for index in range(len(layers)):
                encoder.layers[index] = take if index == 0 else OnOtherStage()
            encoder.to(device)  # rotary tables and final norm, not the blocks
            model.embedding.to(device)
            with torch.no_grad():
                encoder(model.embedding(ids, None, None), mask)
        finally:
            for index, layer in enumerate(layers):
                encoder.layers[index] = layer
        hidden, *inputs = take.args
        hidden = hidden.detach().float().requires_grad_()  # [b, s, h]

        def embed() -> None:
            model.embedding(ids, None, None).float().sum().backward()

        costs: dict[str, Any] = {"embedding": timed(embed), "layers": []}
        for layer in layers:
            layer.to(device)
            costs["layers"].append(
                timed(lambda: layer(hidden, *inputs).float().sum().backward())  # noqa: B023
            )
            layer.to(home)
        model.targets.to(device)
        labels = {}
        for name, target in model.target_modules().items():
            if target.label_key == "labels":
                keep = torch.rand(rows, length, generator=generator) < (
                    0.15 if name == "mlm" else 1.0
                )
                labels[name] = torch.where(keep, ids.cpu(), IGNORE_INDEX).to(device)
            else:  # a label per sequence (NSP / SOP)
                labels[name] = torch.zeros(rows, dtype=torch.long, device=device)

        def head() -> None:
            states = encoder.final_norm(hidden) if encoder.final_norm is not None else hidden
            losses = [
                out.loss.float()
                for name, target in model.target_modules().items()
                if (out := target(states, mask, labels[name])).loss is not None
            ]
            torch.stack(losses).sum().backward()

        costs["head"] = timed(head)
    model.to(home)
    return costs


def keep_stage(model: Model, layers: Collection[int], first: bool, last: bool) -> None:
    """Drop, in place, every module of ``model`` that this process's stage(s) do not compute
    (``layers``: the layers of all of them, numbered along ``layer_slots``).

    An encoder-decoder model's encoder final norm stays with the encoder's last layer (it
    makes the memory every decoder layer reads), its target embedding with the decoder's first
    layer (which starts the decoder side) and the decoder's final norm on the last stage.
    """
    encoder = cast(TransformerEncoder, model.encoder)
    for index, (stack, local) in enumerate(layer_slots(model)):
        if index not in layers:
            stack.layers[local] = OnOtherStage()
    if not first:
        model.embedding = OnOtherStage()
    if model.decoder is not None:
        count = len(encoder.layers)
        if count not in layers:
            model.tgt_embedding = OnOtherStage()
        if count - 1 not in layers:
            encoder.final_norm = None
        if not last:
            cast(TransformerEncoder, model.decoder).final_norm = None
    elif not last:
        encoder.final_norm = None
    if not last:
        model.targets = nn.ModuleDict()


def label_count(target: nn.Module, labels: Tensor) -> Tensor:
    """The label entries ``target`` averages its loss over (causal LM: shifted by one)."""
    if getattr(target, "shift", False):
        labels = labels[:, 1:]
    return (labels != IGNORE_INDEX).sum()


def pad_batch(
    batch: dict[str, Tensor], length: int, decoder_length: int | None = None, pad_id: int = 0
) -> dict[str, Tensor]:
    """``batch`` with its per-token entries right-padded to ``length`` positions (and, in a
    sequence-to-sequence batch, its decoder side, ``labels`` included, to ``decoder_length``;
    ``decoder_input_ids`` with ``pad_id``).

    The stages exchange activations through buffers of one fixed shape; padding is masked out
    of attention (``attention_mask`` / ``decoder_attention_mask`` 0) and of the loss (labels
    -100).
    """
    ids = batch["input_ids"]
    rows, width = ids.shape
    masks = {"attention_mask": ids}
    if decoder_length is not None:
        masks["decoder_attention_mask"] = batch["labels"]
    batch = {**batch}
    for key, like in masks.items():
        if key not in batch:
            batch[key] = torch.ones_like(like)
    decoder_side = {"labels", *DECODER_INPUTS} if decoder_length is not None else set()
    padded = {}
    for key, value in batch.items():
        wanted = decoder_length if key in decoder_side else length
        if value.dim() >= 2 and value.shape[0] == rows and wanted is not None:
            if key in decoder_side or tuple(value.shape[:2]) == (rows, width):
                fill = IGNORE_INDEX if key == "labels" else 0
                fill = pad_id if key == "decoder_input_ids" else fill
                extra = value.new_full((rows, wanted - value.shape[1], *value.shape[2:]), fill)
                value = torch.cat((value, extra), dim=1)
        padded[key] = value
    return padded


def merge_optimizer_states(parts: list[dict[str, Any]], aliases: dict[str, str]) -> dict:
    """The stages' name-keyed optimizer states as one, as one process would hold it: tied
    copies (the last stage's head) left out, parameter groups joined by their settings."""
    state: dict[str, Any] = {}
    groups: list[dict[str, Any]] = []
    for part in parts:
        state.update((name, value) for name, value in part["state"].items() if name not in aliases)
        for group in part["param_groups"]:
            settings = {k: v for k, v in group.items() if k != "params"}
            match = next(
                (g for g in groups if {k: v for k, v in g.items() if k != "params"} == settings),
                None,
            )
            if match is None:
                match = {**settings, "params": []}
                groups.append(match)
            match["params"].extend(name for name in group["params"] if name not in aliases)
    return {"state": state, "param_groups": groups}


def stage_optimizer_state(
    full: dict[str, Any], names: list[str], aliases: dict[str, str]
) -> dict[str, Any]:
    """This stage's part of a name-keyed optimizer state (a tied copy takes its source's)."""
    source = {name: aliases.get(name, name) for name in names}
    state = {name: full["state"][source[name]] for name in names if source[name] in full["state"]}
    groups = []
    for group in full["param_groups"]:
        members = set(group["params"])
        params = [name for name in names if source[name] in members]
        if params:
            groups.append({**group, "params": params})
    return {"state": state, "param_groups": groups}

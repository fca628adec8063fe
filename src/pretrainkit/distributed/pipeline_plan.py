"""What a pipeline splits and how: the model checks, the stage split, a model cut down to its
stage, and the bookkeeping of the loss and the optimizer state (no communication here; the
engine is ``distributed.pipeline``)."""

from __future__ import annotations

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
PIPELINE_TARGETS = ("mlm", "lm", "nsp", "sop")
# Batch entries besides input_ids that the embedding and the encoder read (every stage gets
# them); labels are read by the loss on the last stage.
SIDE_INPUTS = ("attention_mask", "token_type_ids", "position_ids", "example_ids", "prefix_lengths")
# Only the objectives' inputs above: an image or speech batch has no input_ids.
BATCH_KEYS = ("input_ids", "labels", "pair_labels", *SIDE_INPUTS)


def check_pipeline(model: nn.Module, stages: int) -> None:
    """Fail before anything is written on a model ``stages`` pipeline stages cannot split.

    Raises:
        ConfigError: Naming what is not supported (yet) and what to use instead.
    """
    where = f"pipeline_parallel {stages}"
    if not isinstance(model, Model):
        raise ConfigError(
            f"{where}: {type(model).__name__} is not a pretrainkit Model (embedding → encoder → "
            "targets); models wrapped by a recipe train with pipeline_parallel 1"
        )
    if model.decoder is not None:
        raise ConfigError(
            f"{where}: encoder-decoder models (a decoder slot) are not supported yet; the "
            "pipeline splits encoder-only (BERT-like) and decoder-only (GPT/LLaMA-like) stacks"
        )
    encoder = model.encoder
    if not isinstance(encoder, TransformerEncoder):
        raise ConfigError(
            f"{where}: the encoder is a {type(encoder).__name__}, which has no layer stack to "
            "split; RNN and CNN encoders train with pipeline_parallel 1"
        )
    if len(encoder.layers) != encoder.num_layers:
        raise ConfigError(
            f"{where}: the encoder applies {len(encoder.layers)} block(s) {encoder.num_layers} "
            "times (share_layers / layer_groups); a shared block would live on several stages, "
            "which is not supported"
        )
    if encoder.relative_bias is not None:
        raise ConfigError(
            f"{where}: encoder.position 'relative' computes one bias table for all layers, "
            "which the stages would share; not supported yet (use rotary, absolute or alibi)"
        )
    if stages > encoder.num_layers:
        raise ConfigError(
            f"{where} exceeds the {encoder.num_layers} encoder layer(s): every stage needs at "
            f"least one layer; use pipeline_parallel ≤ {encoder.num_layers}"
        )
    token_part = getattr(model.embedding, "token_part", None)
    if token_part != "word":
        raise ConfigError(
            f"{where}: the embedding reads {token_part!r} inputs; the pipeline takes token ids "
            "(a 'word' embedding) only so far"
        )
    names = [entry.name for entry in model.config.targets]
    unsupported = [name for name in names if name not in PIPELINE_TARGETS]
    if unsupported:
        raise ConfigError(
            f"{where}: target(s) {', '.join(unsupported)} not supported yet: the last stage "
            "re-weights each target's micro-batch mean into the batch mean, which it knows how "
            f"to do for {', '.join(PIPELINE_TARGETS)}"
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
    count = len(sizes)
    prefix = [0]
    for size in sizes:
        prefix.append(prefix[-1] + size)

    def part(start: int, end: int) -> int:
        return prefix[end] - prefix[start]

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


class _OnOtherStage(nn.Module):
    """Stands in for a module that another stage holds: no parameters, passes its input on
    (the encoder calls every layer slot; the embedding and targets slots are never called)."""

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return x


def keep_stage(model: Model, layers: range, first: bool, last: bool) -> None:
    """Drop, in place, every module of ``model`` that this stage does not compute."""
    encoder = cast(TransformerEncoder, model.encoder)
    for index in range(len(encoder.layers)):
        if index not in layers:
            encoder.layers[index] = _OnOtherStage()
    if not first:
        model.embedding = _OnOtherStage()
    if not last:
        encoder.final_norm = None
        model.targets = nn.ModuleDict()


def label_count(target: nn.Module, labels: Tensor) -> Tensor:
    """The label entries ``target`` averages its loss over (causal LM: shifted by one)."""
    if getattr(target, "shift", False):
        labels = labels[:, 1:]
    return (labels != IGNORE_INDEX).sum()


def pad_batch(batch: dict[str, Tensor], length: int) -> dict[str, Tensor]:
    """``batch`` with its per-token entries right-padded to ``length`` positions.

    The stages exchange activations through buffers of one fixed shape; padding is masked out
    of attention (``attention_mask`` 0) and of the loss (labels -100).
    """
    ids = batch["input_ids"]
    rows, width = ids.shape
    if width == length and "attention_mask" in batch:
        return batch
    if "attention_mask" not in batch:
        batch = {**batch, "attention_mask": torch.ones_like(ids)}
    padded = {}
    for key, value in batch.items():
        if value.dim() >= 2 and tuple(value.shape[:2]) == (rows, width):
            fill = IGNORE_INDEX if key == "labels" else 0
            extra = value.new_full((rows, length - width, *value.shape[2:]), fill)
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

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
PIPELINE_TARGETS = ("mlm", "lm", "nsp", "sop")
# Batch entries besides input_ids that the embedding and the encoder read (every stage gets
# them); labels are read by the loss on the last stage.
SIDE_INPUTS = ("attention_mask", "token_type_ids", "position_ids", "example_ids", "prefix_lengths")
# Only the objectives' inputs above: an image or speech batch has no input_ids.
BATCH_KEYS = ("input_ids", "labels", "pair_labels", *SIDE_INPUTS)


def check_pipeline(model: nn.Module, stages: int, per_process: int = 1) -> None:
    """Fail before anything is written on a model ``stages`` pipeline stages (each process
    holding ``per_process`` of them, under the interleaved schedule) cannot split.

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
            f"least one layer; use at most {encoder.num_layers} stages in all"
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
    (``layers``: the layers of all of them)."""
    encoder = cast(TransformerEncoder, model.encoder)
    for index in range(len(encoder.layers)):
        if index not in layers:
            encoder.layers[index] = OnOtherStage()
    if not first:
        model.embedding = OnOtherStage()
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

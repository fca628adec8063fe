"""Sensitivity per layer and mode, candidate plans, measured latency, the accuracy/latency
frontier and the choice: within a tolerance, under a latency budget, or the frontier's knee."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pretrainkit.errors import ConfigError
from pretrainkit.model import Model
from pretrainkit.samp.data import TaskSet, divergence, outputs, score
from pretrainkit.samp.plan import Plan


@dataclass
class Candidate:
    """A plan with what was measured for it (metric in points on the selection split)."""

    plan: Plan
    metric: float = float("nan")
    drop: float = float("nan")
    latency_ms: float = float("nan")
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "plan": self.plan.name,
            "modes": self.plan.modes,
            "metric": round(self.metric, 4),
            "drop": round(self.drop, 4),
            "latency_ms": round(self.latency_ms, 3),
        }


def latency_inputs(model: Model, batch_size: int, seq_length: int) -> dict[str, torch.Tensor]:
    """A fixed batch of ``batch_size × seq_length`` real tokens (no padding), seeded."""
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch_size, seq_length), generator=generator)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
    }


def with_latency_head(model: Model) -> Model:
    """``model`` when it has a task head, else a copy with a two-label classification head
    (mean pooling) on the same embedding and encoder: what latency benchmarks time."""
    if model.targets:
        return model
    from pretrainkit.config import TargetConfig
    from pretrainkit.model import build_model

    head = TargetConfig("classification", {"labels": ["0", "1"], "pooling": "mean"})
    headed = build_model(model.config.with_targets([head]))
    headed.embedding.load_state_dict(model.embedding.state_dict())
    headed.encoder.load_state_dict(model.encoder.state_dict())
    return headed.eval()


def latency_model(folder: str | None = None, preset: str | None = None) -> Model:
    """What the latency benchmarks time: a model folder (with ``with_latency_head``) or a preset
    with random weights and a two-label classification head."""
    if (folder is None) == (preset is None):
        raise ConfigError("give a model folder or a preset, not both or neither")
    from pretrainkit.model import build_model, load

    if folder is not None:
        return with_latency_head(load(folder).eval())
    assert preset is not None
    targets = [{"name": "classification", "options": {"labels": ["0", "1"]}}]
    return build_model(preset, {"targets": targets}).eval()


@torch.no_grad()
def measure_latency(
    models: dict[str, Model],
    inputs: dict[str, torch.Tensor],
    rounds: int = 5,
    repeats: int = 3,
    warmup: int = 2,
) -> dict[str, list[float]]:
    """Milliseconds per forward pass of every model, measured in interleaved rounds.

    Each round times ``repeats`` calls of each model in turn, so background load hits every
    model alike; one value per round.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(**inputs)
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(repeats):
                model(**inputs)
            times[name].append((time.perf_counter() - start) / repeats * 1000.0)
    return times


def single_layer_plans(num_layers: int, base: Plan) -> list[tuple[int, str, Plan]]:
    """One plan per (layer, INT8 mode) with every other layer in float."""
    plans = []
    for i in range(num_layers):
        for mode in ("ffn", "full"):
            modes = ["float"] * num_layers
            modes[i] = mode
            plans.append((i, mode, _like(base, modes)))
    return plans


def _like(base: Plan, modes: list[str]) -> Plan:
    return Plan(modes, base.backend, base.float_dtype, base.kernel)


def sensitivity(
    build, num_layers: int, base: Plan, calib: TaskSet, reference: np.ndarray, metric: str
) -> list[dict[str, Any]]:
    """Quantize one layer at a time (FFN-only, then full) and score it on ``calib``.

    Args:
        build: plan → model running it.
        reference: the float model's outputs on ``calib``.

    Returns:
        One row per (layer, mode): the metric, its drop from float and the divergence (logit
        KL for classification, squared error for regression) from the float outputs.
    """
    float_metric = score(metric, reference, calib.gold)
    rows = []
    for layer, mode, plan in single_layer_plans(num_layers, base):
        out = outputs(build(plan), calib)
        value = score(metric, out, calib.gold)
        rows.append(
            {
                "layer": layer,
                "mode": mode,
                "metric": value,
                "drop": float_metric - value,
                "divergence": divergence(reference, out),
            }
        )
        gc.collect()
    return rows


def candidate_plans(num_layers: int, rows: list[dict[str, Any]], base: Plan) -> list[Plan]:
    """Plans along the precision decay: layers enter INT8 from the least sensitive up.

    Three families, each adding one layer at a time in sensitivity order (divergence, then
    metric drop): FFN-only INT8; full INT8; and every FFN in INT8 with attention following.
    """

    def order(mode: str) -> list[int]:
        chosen = [r for r in rows if r["mode"] == mode]
        chosen.sort(key=lambda r: (r["divergence"], r["drop"], r["layer"]))
        return [r["layer"] for r in chosen]

    plans: dict[str, Plan] = {}

    def add(modes: list[str]) -> None:
        plan = _like(base, modes)
        plans.setdefault(plan.name, plan)

    add(["float"] * num_layers)
    for start, mode in (("float", "ffn"), ("float", "full"), ("ffn", "full")):
        modes = [start] * num_layers
        add(list(modes))
        for layer in order(mode):
            modes[layer] = mode
            add(list(modes))
    return list(plans.values())


def frontier(candidates: list[Candidate]) -> list[Candidate]:
    """The Pareto set: no other candidate is both at least as fast and more accurate."""
    best: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.latency_ms, -c.metric)):
        if not best or c.metric > best[-1].metric:
            best.append(c)
    return best


def knee(points: list[Candidate]) -> Candidate:
    """The frontier point farthest above the chord from its fastest to its most accurate end,
    in normalised units: past it, each further speed-up costs more accuracy than before."""
    if len(points) <= 2:
        return (
            points[-1] if len(points) == 2 and points[0].drop > points[-1].drop + 1 else points[0]
        )
    fast, accurate = points[0], points[-1]
    span_t = (accurate.latency_ms - fast.latency_ms) or 1.0
    span_m = (accurate.metric - fast.metric) or 1.0

    def lift(c: Candidate) -> float:
        t = (c.latency_ms - fast.latency_ms) / span_t
        m = (c.metric - fast.metric) / span_m
        return m - t  # height above the chord m = t

    return max(points, key=lift)


def choose(
    candidates: list[Candidate], tolerance: float | None, budget_ms: float | None
) -> tuple[Candidate, str]:
    """The plan to ship and why."""
    if tolerance is None and budget_ms is None:
        points = frontier(candidates)
        chosen = knee(points)
        fastest = points[0]
        if len(points) == 1:
            return chosen, (
                f"no tolerance or budget given: {chosen.plan.name} is both the fastest measured "
                f"plan ({chosen.latency_ms:.1f} ms) and the most accurate on the selection split "
                f"(drop {chosen.drop:.2f} points), so it is the whole frontier"
            )
        return chosen, (
            f"no tolerance or budget given: recommending the knee of the accuracy/latency frontier "
            f"({len(points)} plans): {chosen.plan.name} at {chosen.latency_ms:.1f} ms with a drop of "
            f"{chosen.drop:.2f} points; the fastest plan {fastest.plan.name} "
            f"({fastest.latency_ms:.1f} ms) drops {fastest.drop:.2f} points"
        )
    feasible = [
        c
        for c in candidates
        if (tolerance is None or c.drop <= tolerance)
        and (budget_ms is None or c.latency_ms <= budget_ms)
    ]
    if not feasible:
        limits = []
        if tolerance is not None:
            limits.append(f"a drop within {tolerance} points")
        if budget_ms is not None:
            limits.append(f"a latency under {budget_ms} ms")
        best = min(candidates, key=lambda c: c.drop)
        raise ConfigError(
            f"no plan meets {' and '.join(limits)}; the most accurate plan {best.plan.name} drops "
            f"{best.drop:.2f} points at {best.latency_ms:.1f} ms, the fastest runs in "
            f"{min(c.latency_ms for c in candidates):.1f} ms"
        )
    if tolerance is not None:
        chosen = min(feasible, key=lambda c: (c.latency_ms, c.drop))
        why = f"the fastest measured plan whose drop ({chosen.drop:.2f}) is within {tolerance}"
    else:
        chosen = min(feasible, key=lambda c: (c.drop, c.latency_ms))
        why = "the most accurate plan"
    if budget_ms is not None:
        why += f" under the budget of {budget_ms} ms ({chosen.latency_ms:.1f} ms)"
    return chosen, why


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")

"""Sensitivity per layer and mode, candidate plans, measured latency, the accuracy/latency
frontier and the choice: within a tolerance, under a latency budget, or the frontier's knee.

Latency is measured in interleaved rounds; each plan gets the median over rounds and a 95 %
bootstrap interval of that median. Where the choice rests on latency, two plans whose
intervals overlap are not told apart by the measurement: a quiet-machine kernel estimate
(``kernel_estimate``: the INT8 share of the GEMM work and a benchmarked INT8/float ratio)
ranks them, and the reason says so — a loaded machine must not turn noise into a float plan."""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pretrainkit.errors import ConfigError
from pretrainkit.model import Model
from pretrainkit.samp.data import TaskSet, divergence, outputs, score
from pretrainkit.samp.plan import Plan, encoder_layers, layer_gemms

# What the kernel estimate rests on: whole-model latency with every encoder GEMM in INT8 and with
# every GEMM in the float partner, per (backend, float partner, INT8 kernel), in ms. bert-base
# shape, batch 1 x 128, one thread, on the project's CPU (2-core AMD EPYC with avx512_bf16 and
# VNNI): runs 1 and 2 of BENCHMARKS.md "12-layer latency" (benchmarks/samp_compare.py
# --latency-only --preset bert-base --threads 1 --rounds 8). The same table checks the linear
# interpolation ``kernel_estimate`` makes: its half full-INT8 / half FFN-only plan (83 % of the
# GEMM multiply-adds in INT8) is predicted at 43.8 and 42.5 ms and measured 44.4 and 42.6 ms
# (tests/test_samp.py replays this).
BENCHMARKED_MS: dict[tuple[str, str, str], tuple[tuple[float, float], tuple[float, float]]] = {
    # key: ((all-INT8 run 1, run 2), (all-float run 1, run 2))
    ("torch", "bf16", "fused"): ((39.02, 37.27), (69.01, 66.95)),
    ("torch", "bf16", "fbgemm"): ((46.71, 42.26), (69.01, 66.95)),
    ("torch", "bf16", "int_mm"): ((53.18, 50.06), (69.01, 66.95)),
    ("torch", "fp32", "fbgemm"): ((50.39, 45.34), (255.83, 247.87)),
    ("onnxruntime", "fp32", "*"): ((45.25, 44.68), (119.17, 117.88)),
}
# Combinations not benchmarked borrow the nearest measured one (same backend and float partner).
# The ranking only needs the ratio's side of 1: below it, the estimate orders plans by their INT8
# share of the GEMM work whatever the ratio's size.
NEAREST = {("torch", "fp32", "fused"): "fbgemm", ("torch", "fp32", "int_mm"): "fbgemm"}
CONFIDENCE = 0.95  # of the interval of each plan's median latency
RESAMPLES = 2000  # bootstrap resamples of the timing rounds


@dataclass
class Candidate:
    """A plan with what was measured for it (metric in points on the selection split).

    Attributes:
        latency_ms: median over the timing rounds of the per-round time of one forward pass.
        latencies_ms: one value per round (the mean of that round's calls).
        interval_ms: 95 % bootstrap interval of that median; None where no spread was measured
            (a single round, or numbers given without their rounds): such a plan's latency
            cannot be told apart from any other's.
        estimate: the kernel estimate: its time relative to the all-float plan, from the INT8
            share of its GEMM work and the benchmarked INT8/float ratio (``kernel_estimate``).
    """

    plan: Plan
    metric: float = float("nan")
    drop: float = float("nan")
    latency_ms: float = float("nan")
    latencies_ms: list[float] = field(default_factory=list)
    interval_ms: tuple[float, float] | None = None
    estimate: float = float("nan")

    def __post_init__(self):
        if math.isnan(self.estimate):
            self.estimate = kernel_estimate(self.plan)

    def timed(self, latencies_ms: list[float]) -> Candidate:
        """Set the rounds, their median and its interval."""
        self.latencies_ms = list(latencies_ms)
        self.latency_ms = median(self.latencies_ms)
        self.interval_ms = median_interval(self.latencies_ms)
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "plan": self.plan.name,
            "modes": self.plan.modes,
            "metric": round(self.metric, 4),
            "drop": round(self.drop, 4),
            "latency_ms": round(self.latency_ms, 3),
            # Unrounded: the choice compares these bounds, and the report must replay it.
            "latency_ci_ms": None if self.interval_ms is None else list(self.interval_ms),
            "latencies_ms": list(self.latencies_ms),
            "estimate": round(self.estimate, 4),
        }


def median_interval(
    values: list[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES
) -> tuple[float, float] | None:
    """The bootstrap percentile interval of the median of ``values`` (None for fewer than two).

    Seeded, so a report is reproducible from its rounds. With 5 rounds it spans about the
    smallest to the largest round; with 7 or more one slow round (a load spike) no longer
    widens it.
    """
    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=np.float64)
    picks = np.random.default_rng(0).integers(0, len(data), size=(resamples, len(data)))
    medians = np.median(data[picks], axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return float(low), float(high)


def overlap(a: Candidate, b: Candidate) -> bool:
    """Whether the latencies of ``a`` and ``b`` differ by less than the measured spread: their
    intervals overlap, or one of them has none."""
    if a.interval_ms is None or b.interval_ms is None:
        return True
    return a.interval_ms[0] <= b.interval_ms[1] and b.interval_ms[0] <= a.interval_ms[1]


def int8_ratio(plan: Plan) -> tuple[float, str]:
    """All-INT8 over all-float whole-model time for the plan's backend, float partner and
    kernel (mean of the benchmarked runs), and where it comes from."""
    kernel = "*" if plan.backend == "onnxruntime" else plan.kernel
    key = (
        plan.backend,
        plan.float_dtype,
        NEAREST.get((plan.backend, plan.float_dtype, kernel), kernel),
    )
    if key not in BENCHMARKED_MS:  # not a combination SAMP builds; rank as the fused default
        key = ("torch", "bf16", "fused")
    int8, floats = BENCHMARKED_MS[key]
    ratio = sum(i / f for i, f in zip(int8, floats)) / len(int8)
    where = "ONNX Runtime" if key[0] == "onnxruntime" else f"torch {key[2]} kernel"
    borrowed = "" if key[2] in (kernel, "*") else f" (the {kernel} kernel was not benchmarked)"
    source = (
        f"all-INT8 bert-base at {ratio:.2f}x the all-{key[1]} time ({where}{borrowed}; "
        "BENCHMARKS.md, 12-layer latency, 1 x 128, one thread, AMD EPYC with avx512_bf16 and "
        "VNNI), interpolated by each plan's INT8 share of the encoder's GEMM multiply-adds"
    )
    return ratio, source


def gemm_macs(model: Model) -> list[dict[str, int]]:
    """Per encoder layer, the multiply-adds per token of its attention and FFN GEMMs."""
    macs = []
    for block in encoder_layers(model):
        per_kind = {"attention": 0, "ffn": 0}
        for name, kind in layer_gemms(block).items():
            linear = block.get_submodule(name)
            assert isinstance(linear, torch.nn.Linear)  # what layer_gemms lists
            per_kind[kind] += linear.in_features * linear.out_features
        macs.append(per_kind)
    return macs


def kernel_estimate(plan: Plan, macs: list[dict[str, int]] | None = None) -> float:
    """The plan's time relative to the all-float plan as a quiet machine would run it:
    ``1 - s * (1 - r)``, ``s`` the INT8 share of the encoder's GEMM multiply-adds and ``r``
    the benchmarked all-INT8 / all-float ratio (``int8_ratio``).

    Args:
        macs: per layer, attention and FFN multiply-adds (``gemm_macs``); default BERT-shaped
            layers (FFN 4x the hidden size: FFN GEMMs twice the attention projections').
    """
    if macs is None:
        macs = [{"attention": 4, "ffn": 8}] * len(plan.modes)
    total = sum(m["attention"] + m["ffn"] for m in macs) or 1
    int8 = 0
    for mode, m in zip(plan.modes, macs):
        if mode == "full":
            int8 += m["attention"] + m["ffn"]
        elif mode == "ffn":
            int8 += m["ffn"]
    ratio, _ = int8_ratio(plan)
    return 1.0 - int8 / total * (1.0 - ratio)


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
    from pretrainkit.folders import load
    from pretrainkit.model import build_model

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
    model alike; one value per round (the rounds give the spread, ``median_interval``). Each
    round starts one model further on, so that no model always runs first in a round or right
    after the same neighbour.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(**inputs)
    names = list(models)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            model = models[name]
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
    build, num_layers: int, base: Plan, calib: TaskSet, reference: list, metric: str
) -> list[dict[str, Any]]:
    """Quantize one layer at a time (FFN-only, then full) and score it on ``calib``.

    Args:
        build: plan → model running it.
        reference: the float model's outputs on ``calib``.

    Returns:
        One row per (layer, mode): the metric, its drop from float and the divergence (logit
        KL for classification, squared error for regression) from the float outputs.
    """
    float_metric = score(metric, reference, calib)
    rows = []
    for layer, mode, plan in single_layer_plans(num_layers, base):
        out = outputs(build(plan), calib)
        value = score(metric, out, calib)
        rows.append(
            {
                "layer": layer,
                "mode": mode,
                "metric": value,
                "drop": float_metric - value,
                "divergence": divergence(reference, out, calib),
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


@dataclass
class Decision:
    """The chosen plan, why, and what decided it.

    Attributes:
        by: ``measurement`` (a latency difference beyond the measured spread, or none needed),
            ``kernel estimate`` (latencies within the spread) or ``accuracy``.
        tied: the plans whose latencies the measurement could not tell apart from the
            contender's (the chosen one included); empty when the measurement decided.
    """

    chosen: Candidate
    reason: str
    by: str
    tied: list[Candidate] = field(default_factory=list)


def _ci(c: Candidate) -> str:
    if c.interval_ms is None:
        return f"{c.latency_ms:.2f} ms"
    return f"{c.latency_ms:.2f} ms, 95 % interval {c.interval_ms[0]:.2f}-{c.interval_ms[1]:.2f}"


def _by_estimate(measured: Candidate, tied: list[Candidate], key) -> tuple[Candidate, str]:
    """Among ``tied`` (latencies within the spread of ``measured``, which the measurement
    alone would pick), the one ``key`` ranks first (kernel estimate, then accuracy), and the
    sentence that says so."""
    chosen = min(tied, key=key)
    # Name the plan the measurement would have taken instead, else the closest rival.
    rival = measured
    if chosen is measured:
        rival = min((c for c in tied if c is not chosen), key=lambda c: c.latency_ms)
    if chosen.interval_ms is None or rival.interval_ms is None:
        spread = "one timing round: no spread was measured, so the measurement cannot rank them"
    else:
        spread = "their 95 % intervals overlap"
    if len(tied) > 2:
        spread += f"; {len(tied)} plans are within it"
    agrees = ", which agrees with the measurement" if chosen is measured else ""
    return chosen, (
        f"latencies of plans {chosen.plan.name} ({_ci(chosen)}) and {rival.plan.name} "
        f"({_ci(rival)}) differ by less than the measured spread ({spread}); chose by kernel "
        f"estimate{agrees}: {chosen.plan.name} is estimated at {chosen.estimate:.2f}x the "
        f"all-float time, {rival.plan.name} at {rival.estimate:.2f}x"
    )


def _fastest(pool: list[Candidate]) -> tuple[Candidate, str, list[Candidate]]:
    """The plan of ``pool`` to take on speed, why, and the plans tied with it.

    The measured fastest wins only when its interval clears every other plan's; otherwise the
    plans whose latencies overlap it are ranked by the kernel estimate (then accuracy, then the
    measured median), never by a difference inside the noise.
    """
    measured = min(pool, key=lambda c: (c.latency_ms, c.drop))
    tied = [c for c in pool if c is measured or overlap(c, measured)]
    if len(tied) == 1:
        others = sorted((c for c in pool if c is not measured), key=lambda c: c.latency_ms)
        if not others:
            return measured, f"{measured.plan.name} ({_ci(measured)}) is the only such plan", []
        return (
            measured,
            (
                f"{measured.plan.name} ({_ci(measured)}) is measured faster than every other such "
                f"plan by more than the measured spread (next: {others[0].plan.name}, "
                f"{_ci(others[0])})"
            ),
            [],
        )
    chosen, why = _by_estimate(measured, tied, lambda c: (c.estimate, c.drop, c.latency_ms))
    return chosen, why, tied


def decide(
    candidates: list[Candidate], tolerance: float | None, budget_ms: float | None
) -> Decision:
    """The plan to ship and why.

    Within ``tolerance``: the fastest plan whose drop stays within it. Under ``budget_ms``: the
    most accurate plan whose median latency is within it (the fastest of equally accurate
    ones). With neither: the knee of the accuracy/latency frontier. Wherever the choice rests
    on latency, a difference inside the measured spread does not decide it (``_fastest``).
    """
    if tolerance is None and budget_ms is None:
        return _knee_decision(candidates)
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
        chosen, speed, tied = _fastest(feasible)
        why = f"the fastest plan whose drop ({chosen.drop:.2f}) is within {tolerance}: {speed}"
        # A single feasible plan was decided by the tolerance alone.
        by = "kernel estimate" if tied else "measurement" if len(feasible) > 1 else "accuracy"
    else:
        least = min(c.drop for c in feasible)
        equal = [c for c in feasible if c.drop == least]
        chosen, speed, tied = _fastest(equal)
        why = f"the most accurate plan (drop {chosen.drop:.2f})"
        if len(equal) > 1:  # speed decided among equally accurate plans
            why += f"; among the {len(equal)} equally accurate plans, {speed}"
        by = "kernel estimate" if tied else "measurement" if len(equal) > 1 else "accuracy"
    if budget_ms is not None:
        why += f"; under the budget of {budget_ms} ms ({chosen.latency_ms:.1f} ms median"
        if chosen.interval_ms is not None and chosen.interval_ms[1] > budget_ms:
            why += f", though its 95 % interval reaches {chosen.interval_ms[1]:.1f} ms"
        why += ")"
    return Decision(chosen, why, by, tied)


def _knee_decision(candidates: list[Candidate]) -> Decision:
    points = frontier(candidates)
    knee_point = knee(points)
    fastest = points[0]
    if len(points) == 1:
        why = (
            f"no tolerance or budget given: {knee_point.plan.name} is both the fastest measured "
            f"plan ({knee_point.latency_ms:.1f} ms) and the most accurate on the selection split "
            f"(drop {knee_point.drop:.2f} points), so it is the whole frontier"
        )
    else:
        why = (
            f"no tolerance or budget given: the knee of the accuracy/latency frontier "
            f"({len(points)} plans) is {knee_point.plan.name} at {knee_point.latency_ms:.1f} ms "
            f"with a drop of {knee_point.drop:.2f} points; the fastest plan "
            f"{fastest.plan.name} ({fastest.latency_ms:.1f} ms) drops {fastest.drop:.2f} points"
        )
    # The frontier ranks plans by median latency: a plan at least as accurate as the knee whose
    # latency is within the knee's spread lost to it only on noise, so the estimate decides.
    tied = [
        c
        for c in candidates
        if c is knee_point or (c.metric >= knee_point.metric and overlap(c, knee_point))
    ]
    if len(tied) == 1:
        return Decision(knee_point, why, "measurement")
    chosen, speed = _by_estimate(knee_point, tied, lambda c: (c.estimate, -c.metric, c.latency_ms))
    if chosen is knee_point:
        return Decision(chosen, f"{why}; {speed}", "kernel estimate", tied)
    return Decision(
        chosen,
        f"{why}; {chosen.plan.name} is at least as accurate (drop {chosen.drop:.2f}) and {speed}",
        "kernel estimate",
        tied,
    )


def choose(
    candidates: list[Candidate], tolerance: float | None, budget_ms: float | None
) -> tuple[Candidate, str]:
    """The plan to ship and why (``decide`` without the details)."""
    decision = decide(candidates, tolerance, budget_ms)
    return decision.chosen, decision.reason


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")

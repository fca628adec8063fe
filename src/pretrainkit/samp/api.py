"""``quantize``: the SAMP search from a float model to a mixed-precision one; save and load."""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.model import Model
from pretrainkit.samp import search
from pretrainkit.samp.backends import (
    build,
    cpu_features,
    float_partner,
    resolve_backend,
    resolve_kernel,
)
from pretrainkit.samp.data import (
    TaskSet,
    check_metric,
    default_metric,
    load_task_set,
    model_task,
    outputs,
    score,
)
from pretrainkit.samp.plan import Plan, encoder_layers

# The untouched float model is timed with the candidates, for the speed-up in the report.
FLOAT_REFERENCE = "float-fp32"
REPEATS = 3  # calls per model in each timing round; one value per round is their mean


def _task_set(model: Model, data: str | os.PathLike | TaskSet, seq_length: int | None) -> TaskSet:
    return data if isinstance(data, TaskSet) else load_task_set(model, Path(data), seq_length)


def quantize(
    model: Model,
    calib: str | os.PathLike | TaskSet,
    select: str | os.PathLike | TaskSet,
    tolerance: float | None = None,
    latency_budget: float | None = None,
    metric: str | None = None,
    backend: str = "auto",
    report: str | os.PathLike | TaskSet | None = None,
    float_dtype: str | None = None,
    kernel: str = "auto",
    seq_length: int | None = None,
    latency_shape: tuple[int, int] | None = None,
    rounds: int = 7,
    inplace: bool = False,
) -> Model:
    """Choose a precision per encoder layer and return the model running that plan.

    Sensitivity is measured on ``calib`` (one layer at a time, FFN-only and full INT8); the
    candidate plans are scored on ``select`` and timed (measured, interleaved); the choice is
    the fastest plan whose metric drop from the float model stays within ``tolerance`` points,
    the most accurate one under ``latency_budget`` ms, or — with neither — the knee of the
    accuracy/latency frontier. Latencies that differ by less than their measured spread (95 %
    bootstrap intervals of the median over the rounds) never decide: such plans are ranked by
    the kernel estimate instead (``search.kernel_estimate``), and the report says so.
    ``report``, a split disjoint from both, gets the final numbers.

    Args:
        model: a fine-tuned model with a classification or regression head and a tokenizer.
        calib, select, report: labelled files (or ``TaskSet``) with the head's label set.
        tolerance: allowed metric drop in points (accuracy 91.2 → 90.7 is 0.5).
        latency_budget: milliseconds per batch of ``latency_shape``.
        metric: accuracy | f1 (classification), spearman | pearson (regression).
        backend: auto | torch | onnxruntime.
        float_dtype: the float partner; default bf16 where the CPU has native bf16, else fp32.
        kernel: the torch backend's INT8 kernel: auto (fused where it builds, else fbgemm on
            x86), fused (SAMP's C++ kernels: per-token scales, fused epilogues and softmax),
            fbgemm (activation scale per call) or int_mm (per-token, eager PyTorch ops).
        seq_length: longest input when reading the splits (default: the length the model
            was fine-tuned with).
        latency_shape: (batch, tokens) of the timed batch; default 1 × 128 (or the model's
            position capacity when shorter).
        rounds: interleaved timing rounds per plan (their spread bounds the noise; with one
            round the measurement cannot rank plans and the kernel estimate does).
        inplace: change ``model`` itself instead of a copy.

    Returns:
        The quantized ``Model``; ``model.samp_plan`` is the ``Plan`` with its ``report``.
    """
    started = time.perf_counter()
    if tolerance is not None and tolerance < 0:
        raise ConfigError(f"--tolerance must be >= 0 (metric points), got {tolerance}")
    if latency_budget is not None and latency_budget <= 0:
        raise ConfigError(f"--latency-budget must be > 0 milliseconds, got {latency_budget}")
    device = next(model.parameters()).device
    if device.type != "cpu":
        # The search feeds CPU batches and times without device synchronisation, and the fused
        # kernels are CPU code; GPU plans (fp16/bf16 float partner) are not built or measured
        # here, so say so instead of timing asynchronous launches.
        raise ConfigError(
            f"SAMP quantizes CPU models; the model is on {device}. Move it to the CPU "
            "(model.cpu()) — GPU plans are not implemented yet"
        )
    task = model_task(model)
    metric = check_metric(metric or default_metric(task), task)
    backend = resolve_backend(backend)
    kernel = resolve_kernel(kernel)
    if float_dtype is None:
        float_dtype = "fp32" if backend == "onnxruntime" else float_partner()
    if float_dtype == "fp16":
        raise ConfigError("float_dtype fp16 is not offered on CPU (no fast fp16 kernels); use bf16")
    latency_shape = _latency_shape(model, latency_shape)
    was_training = model.training  # restored: the float model's mode is not ours to keep
    model.eval()
    try:
        num_layers = len(encoder_layers(model))
        base = Plan(["float"] * num_layers, backend, float_dtype, kernel)
        calib_set = _task_set(model, calib, seq_length)
        select_set = _task_set(model, select, seq_length)
        report_set = _task_set(model, report, seq_length) if report is not None else None

        with tempfile.TemporaryDirectory(prefix="samp-") as tmp:

            def candidate_model(plan: Plan) -> Model:
                return build(model, plan, Path(tmp), share_float=True)

            reference = outputs(model, calib_set)
            rows = search.sensitivity(
                candidate_model, num_layers, base, calib_set, reference, metric
            )
            float_select = score(metric, outputs(model, select_set), select_set)
            macs = search.gemm_macs(model)
            candidates, models = [], {FLOAT_REFERENCE: model}
            for plan in search.candidate_plans(num_layers, rows, base):
                built = candidate_model(plan)
                value = score(metric, outputs(built, select_set), select_set)
                estimate = search.kernel_estimate(plan, macs)
                candidates.append(
                    search.Candidate(plan, value, float_select - value, estimate=estimate)
                )
                models[plan.name] = built
            inputs = search.latency_inputs(model, *latency_shape)
            times = search.measure_latency(models, inputs, rounds=rounds, repeats=REPEATS)
            for c in candidates:
                c.timed(times[c.plan.name])
            del models
            gc.collect()
            decision = search.decide(candidates, tolerance, latency_budget)
            chosen = decision.chosen
            quantized = build(model, chosen.plan, Path(tmp), inplace=inplace)
            if backend == "onnxruntime":
                _keep_onnx_file(quantized)
        float_ms = search.median(times[FLOAT_REFERENCE])
        float_ci = search.median_interval(times[FLOAT_REFERENCE])
        ratio, source = search.int8_ratio(base)
        summary: dict[str, Any] = {
            "metric_name": metric,
            "task": task.name,
            "splits": {"calib": calib_set.path, "select": select_set.path},
            "float_metric_select": float_select,
            "chosen_metric_select": chosen.metric,
            "chosen_drop_select": chosen.drop,
            "latency_shape": list(latency_shape),
            "float_latency_ms": float_ms,
            "chosen_latency_ms": chosen.latency_ms,
            "float_latency_ci_ms": None if float_ci is None else list(float_ci),
            "chosen_latency_ci_ms": None
            if chosen.interval_ms is None
            else list(chosen.interval_ms),
            "speedup_vs_float": float_ms / chosen.latency_ms,
            "tolerance": tolerance,
            "latency_budget_ms": latency_budget,
            "reason": decision.reason,
            "decided_by": decision.by,
            "tied": [c.plan.name for c in decision.tied],
            "timing": {
                "rounds": rounds,
                "calls_per_round": REPEATS,
                "threads": torch.get_num_threads(),
                "statistic": (
                    "median over rounds of each round's mean call time; spread: 95 % bootstrap "
                    f"percentile interval of that median ({search.RESAMPLES} resamples, seeded)"
                ),
            },
            "kernel_estimate": {"int8_ratio": ratio, "source": source},
            "sensitivity": rows,
            "candidates": [c.summary() for c in candidates],
            "frontier": [c.plan.name for c in search.frontier(candidates)],
            "cpu": cpu_features(),
            "search_seconds": time.perf_counter() - started,
        }
        if report_set is not None:
            summary["splits"]["report"] = report_set.path
            summary["float_metric_report"] = score(metric, outputs(model, report_set), report_set)
            summary["chosen_metric_report"] = score(
                metric, outputs(quantized, report_set), report_set
            )
            summary["chosen_drop_report"] = (
                summary["float_metric_report"] - summary["chosen_metric_report"]
            )
        plan = Plan(chosen.plan.modes, backend, float_dtype, kernel, summary)
        setattr(quantized, "samp_plan", plan)  # noqa: B010 (not a Model field)
        return quantized
    finally:
        if not inplace:
            model.train(was_training)


def _latency_shape(model: Model, shape: tuple[int, int] | None) -> tuple[int, int]:
    from pretrainkit.workflows.embed import capacity

    limit = capacity(model)
    if shape is None:
        return (1, min(128, limit or 128))
    batch, tokens = shape
    if batch < 1 or tokens < 1 or (limit is not None and tokens > limit):
        raise ConfigError(
            f"latency shape {batch} x {tokens}: need batch >= 1 and 1 <= tokens <= {limit}"
        )
    return batch, tokens


def _keep_onnx_file(model: Model) -> None:
    """Move the session's ONNX file out of the search's temporary folder."""
    from pretrainkit.samp.onnx_backend import OrtEncoder

    encoder = model.encoder
    assert isinstance(encoder, OrtEncoder)
    keep = Path(tempfile.mkdtemp(prefix="samp-onnx-")) / encoder.path.name
    os.replace(encoder.path, keep)
    encoder.path = keep


def plan_of(model: Model) -> Plan:
    plan = getattr(model, "samp_plan", None)
    if not isinstance(plan, Plan):
        raise CheckpointError("not a SAMP-quantized model (no samp_plan); run samp.quantize first")
    return plan


def write_plan_files(model: Model, directory: Path) -> None:
    """What a quantized folder holds beyond a model folder: the plan JSON, the search report
    (JSON, Markdown, PNG) when there is one and, for ONNX Runtime, ``encoder.onnx``.

    ``Model.save`` calls it (inside its atomic folder) for models with a ``samp_plan``.
    """
    plan = plan_of(model)
    plan.save(directory)
    if plan.report:
        from pretrainkit.samp.report import write_report

        write_report(plan, directory)
    if plan.backend == "onnxruntime":
        from pretrainkit.samp.onnx_backend import save_onnx_encoder

        save_onnx_encoder(model, directory)


def save_quantized(model: Model, directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a quantized model folder (``Model.save`` plus the plan files); ``pretrainkit.load``
    reads it back without calibrating again. An existing folder is replaced only with
    ``overwrite``."""
    plan_of(model)  # a clear error for a float model
    return model.save(directory, overwrite=overwrite)

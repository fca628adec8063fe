"""SAMP against its peers on a fine-tuned model: metric on the dev halves and latency at
batch 1 x 128, every variant timed in interleaved rounds in this one process.

Variants: PyTorch fp32 eager, bf16 (every GEMM), naive full INT8 on every layer (torch, each
kernel), ONNX Runtime fp32 and full INT8 (quantize_dynamic, per-channel weights), and the
SAMP plans found at each tolerance (torch backend, bf16 float partner).

The dev file is split in two halves by a seeded shuffle: SAMP selects its plan on one half and
every variant reports on the other; sensitivity uses --calib-rows rows of the training file.

    python benchmarks/samp_compare.py --model RUN/model --train TRAIN --dev DEV \
        --tolerances 0.5 1.0 --out samp-sst2.json

Without --train/--dev (``--latency-only``) it times a random-weight model (e.g. bert-base).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

import pretrainkit
from pretrainkit import samp
from pretrainkit.data.batching import collate
from pretrainkit.samp import fused
from pretrainkit.samp.backends import build, resolve_kernel
from pretrainkit.samp.data import TaskSet, load_task_set, outputs, score
from pretrainkit.samp.plan import Plan
from pretrainkit.samp.search import latency_inputs, latency_model, measure_latency, median_interval


def subset(data: TaskSet, chosen: list[int], name: str, pad_id: int) -> TaskSet:
    """Rows ``chosen`` (in that order) of a split, re-batched by 32."""
    rows = [(b, i) for b in data.batches for i in range(len(b["input_ids"]))]
    batches = []
    for start in range(0, len(chosen), 32):
        instances = []
        for b, i in (rows[k] for k in chosen[start : start + 32]):
            length = int(b["attention_mask"][i].sum())
            instances.append(
                {k: b[k][i, :length].numpy() for k in ("input_ids", "token_type_ids") if k in b}
            )
        batches.append(collate(instances, pad_id))
    return TaskSet(f"{data.path}[{name}]", data.kind, batches, data.gold[chosen])


def halves(data: TaskSet, pad_id: int, seed: int = 0) -> tuple[TaskSet, TaskSet]:
    """Two disjoint halves of a split, rows chosen by a seeded shuffle."""
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    middle = len(order) // 2
    return (
        subset(data, sorted(order[:middle]), "select half", pad_id),
        subset(data, sorted(order[middle:]), "report half", pad_id),
    )


def variants(model, plans: dict[str, Plan], workdir: Path, ort: bool) -> dict:
    n = len(model.encoder.layers)
    built = {"pytorch-fp32": model}
    built["pytorch-bf16"] = build(model, Plan(["float"] * n, float_dtype="bf16"))
    built["torch-int8-full (int_mm)"] = build(model, Plan(["full"] * n, float_dtype="bf16"))
    built["torch-int8-full (fbgemm)"] = build(
        model, Plan(["full"] * n, float_dtype="fp32", kernel="fbgemm")
    )
    built["torch-int8-full (fbgemm, bf16 partner)"] = build(
        model, Plan(["full"] * n, float_dtype="bf16", kernel="fbgemm")
    )
    if fused.available():
        built["torch-int8-full (fused, bf16 partner)"] = build(
            model, Plan(["full"] * n, float_dtype="bf16", kernel="fused")
        )
    if ort:
        built["onnxruntime-fp32"] = build(model, Plan(["float"] * n, "onnxruntime"), workdir)
        built["onnxruntime-int8-full"] = build(model, Plan(["full"] * n, "onnxruntime"), workdir)
    for name, plan in plans.items():
        built[name] = build(model, plan)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="fine-tuned model folder")
    parser.add_argument("--preset", help="--latency-only: a preset with random weights")
    parser.add_argument("--train", help="labelled training file (calibration rows)")
    parser.add_argument("--dev", help="labelled dev file (halves: select / report)")
    parser.add_argument("--calib-rows", type=int, default=256)
    parser.add_argument("--tolerances", type=float, nargs="*", default=[0.5, 1.0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-onnxruntime", action="store_true")
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "shape": [args.batch, args.seq],
    }
    plans: dict[str, Plan] = {}
    if args.latency_only:
        model = latency_model(preset=args.preset or "bert-base")
        n = len(model.encoder.layers)
        half = ["full"] * (n // 2) + ["ffn"] * (n - n // 2)
        kernel = resolve_kernel("auto")  # what SAMP's plans use
        plans[f"samp-like: half full, half FFN-only (bf16, {kernel})"] = Plan(
            half, float_dtype="bf16", kernel=kernel
        )
    else:
        model = pretrainkit.load(args.model).eval()
        train = load_task_set(model, args.train)
        order = list(range(len(train)))
        random.Random(1).shuffle(order)
        pad_id = model.tokenizer.pad_id
        calib = subset(train, sorted(order[: args.calib_rows]), "calib", pad_id)
        select, report = halves(load_task_set(model, args.dev), pad_id)
        result["rows"] = {"calib": len(calib), "select": len(select), "report": len(report)}
        for tolerance in args.tolerances:
            started = time.perf_counter()
            q = samp.quantize(model, calib, select, tolerance=tolerance, report=report)
            plan = q.samp_plan
            name = f"SAMP tol {tolerance} ({plan.name})"
            plans[name] = plan
            result.setdefault("samp", {})[name] = {
                "reason": plan.report["reason"],
                "decided_by": plan.report["decided_by"],
                "search_seconds": time.perf_counter() - started,
                "frontier": plan.report["frontier"],
                "candidates": plan.report["candidates"],
                "sensitivity": plan.report["sensitivity"],
            }
    with tempfile.TemporaryDirectory() as tmp:
        built = variants(model, plans, Path(tmp), not args.no_onnxruntime)
        if not args.latency_only:
            metric = "accuracy" if select.kind == "classification" else "spearman"
            result["metric"] = metric
            for name, m in built.items():
                result.setdefault("quality", {})[name] = {
                    "select": score(metric, outputs(m, select), select.gold),
                    "report": score(metric, outputs(m, report), report.gold),
                }
        inputs = latency_inputs(model, args.batch, args.seq)
        times = measure_latency(built, inputs, rounds=args.rounds, repeats=args.repeats)
    result["latency_ms"] = {k: statistics.median(v) for k, v in times.items()}
    # The spread the SAMP search uses: 95 % bootstrap interval of each median over the rounds.
    result["latency_ci_ms"] = {k: median_interval(v) for k, v in times.items()}
    result["latency_rounds_ms"] = times
    ort = result["latency_ms"].get("onnxruntime-int8-full")
    fp32 = result["latency_ms"]["pytorch-fp32"]
    print(
        f"{'variant':48s} {'ms':>8s} {'95 % CI':>13s} {'vs fp32':>8s} {'vs ORT int8':>11s}  quality"
    )
    for name, ms in result["latency_ms"].items():
        quality = result.get("quality", {}).get(name, {})
        ci = result["latency_ci_ms"][name]
        spread = f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "-"
        print(
            f"{name:48s} {ms:8.2f} {spread:>13s} {fp32 / ms:7.2f}x "
            f"{(ms / ort if ort else float('nan')):10.2f}x  "
            + " ".join(f"{k} {v:.2f}" for k, v in quality.items())
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()

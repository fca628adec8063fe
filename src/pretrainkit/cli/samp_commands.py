"""The SAMP commands: ``quantize`` (mixed-precision search) and ``bench`` (latency, memory)."""

from __future__ import annotations

from pretrainkit.cli.commands import add_overwrite, command
from pretrainkit.errors import ConfigError


def _add_quantize(p):
    p.add_argument(
        "--model",
        required=True,
        help="fine-tuned model folder of any encoder task (its task.json gives the metric)",
    )
    p.add_argument("--calib", required=True, help="labelled file: per-layer sensitivity")
    p.add_argument("--select", required=True, help="labelled file: plan selection")
    p.add_argument("--report", help="labelled file disjoint from both: the final metric")
    p.add_argument(
        "--out", required=True, help="quantized model folder, written whole or not at all"
    )
    add_overwrite(p)
    p.add_argument(
        "--metric",
        help="the task metric to hold within the tolerance (default: the task's first, e.g. "
        "accuracy for classification, spearman for regression)",
    )
    p.add_argument(
        "--tolerance", type=float, help="allowed metric drop in points (0.5 = half a point)"
    )
    p.add_argument("--latency-budget", type=float, help="milliseconds per batch of --latency-shape")
    p.add_argument("--backend", default="auto", help="auto | torch | onnxruntime")
    p.add_argument("--float-dtype", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument(
        "--kernel",
        default="auto",
        choices=["auto", "fused", "fbgemm", "int_mm"],
        help="torch INT8 kernel: fused (SAMP's C++ kernels, built once; the default where a "
        "compiler is found), fbgemm (per-call activation scale) or int_mm (eager per-token)",
    )
    p.add_argument(
        "--seq-length", type=int, help="longest input of the splits (default: the fine-tuned one)"
    )
    p.add_argument("--latency-shape", default=None, help="BATCHxTOKENS timed (default 1x128)")
    p.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="interleaved timing rounds per plan; their spread decides which latency "
        "differences count (plans within it are ranked by the kernel estimate)",
    )


@command("quantize", "SAMP: choose INT8 / float per layer for a tolerance or latency budget")(
    _add_quantize
)
def quantize(args):
    from pretrainkit.fileio import check_output
    from pretrainkit.folders import load
    from pretrainkit.samp import quantize as run
    from pretrainkit.samp import save_quantized
    from pretrainkit.samp.report import markdown

    shape = None
    if args.latency_shape:
        parts = args.latency_shape.lower().split("x")
        if len(parts) != 2 or not all(x.isdigit() for x in parts):
            raise ConfigError(f"--latency-shape {args.latency_shape!r}: expected BATCHxTOKENS")
        shape = (int(parts[0]), int(parts[1]))
    if args.rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {args.rounds}")
    check_output(args.out, args.overwrite, folder=True)  # before the search, not after it
    model = load(args.model)
    if getattr(model, "samp_plan", None) is not None:
        raise ConfigError(f"--model {args.model} is already quantized; give the float model")
    q = run(
        model,
        args.calib,
        args.select,
        tolerance=args.tolerance,
        latency_budget=args.latency_budget,
        metric=args.metric,
        backend=args.backend,
        report=args.report,
        float_dtype=None if args.float_dtype == "auto" else args.float_dtype,
        kernel=args.kernel,
        seq_length=args.seq_length,
        latency_shape=shape,
        rounds=args.rounds,
    )
    out = save_quantized(q, args.out, overwrite=args.overwrite)
    print(markdown(q.samp_plan))
    report = q.samp_plan.report
    keys = ("float_metric_select", "chosen_metric_select", "chosen_drop_select")
    keys += ("float_metric_report", "chosen_metric_report", "chosen_drop_report")
    return {
        "out": str(out),
        "plan": q.samp_plan.name,
        "modes": q.samp_plan.modes,
        "backend": q.samp_plan.backend,
        "float_dtype": q.samp_plan.float_dtype,
        "reason": report["reason"],
        "decided_by": report["decided_by"],
        **{k: round(report[k], 4) for k in keys if k in report},
        "float_latency_ms": round(report["float_latency_ms"], 3),
        "chosen_latency_ms": round(report["chosen_latency_ms"], 3),
        "files": ["samp_plan.json", "samp_report.json", "samp_report.md", "samp_report.png"],
    }


def _add_bench(p):
    p.add_argument("--model", required=True, nargs="+", help="model folders (float or quantized)")
    p.add_argument("--batch", default="1,8,32", help="batch sizes, comma-separated")
    p.add_argument("--seq", default="32,128,384", help="sequence lengths, comma-separated")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--repeats", type=int, default=3, help="calls per model per round")


@command("bench", "latency p50/p90/p99, throughput, memory and size of model folders")(_add_bench)
def bench(args):
    import torch

    from pretrainkit.samp.bench import bench as run
    from pretrainkit.samp.bench import bench_table, parse_sizes

    if args.rounds < 1 or args.repeats < 1:
        raise ConfigError("--rounds and --repeats must be >= 1")
    rows = run(
        args.model,
        parse_sizes(args.batch, "--batch"),
        parse_sizes(args.seq, "--seq"),
        rounds=args.rounds,
        repeats=args.repeats,
    )
    print(bench_table(rows))
    # Threads are whatever the process has (the global --threads, else torch's default): bench
    # does not set them itself, so the number is reported next to the timings.
    return {"rows": rows, "threads": torch.get_num_threads()}

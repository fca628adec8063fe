"""What ``quantize`` shows and saves: the search report as JSON, a Markdown table and a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pretrainkit.samp.plan import Plan

REPORT_JSON, REPORT_MD, REPORT_PNG = "samp_report.json", "samp_report.md", "samp_report.png"


def markdown(plan: Plan) -> str:
    """Sensitivity per layer and mode, the frontier, and the chosen plan against float."""
    r: dict[str, Any] = plan.report
    metric = r["metric_name"]
    lines = [
        f"## SAMP plan `{plan.name}` ({plan.backend}, float partner {plan.float_dtype})",
        "",
        f"Chosen: {r['reason']}.",
        "",
        f"Modes: {', '.join(f'{i}:{m}' for i, m in enumerate(plan.modes))} "
        "(F float, f FFN-only INT8, Q full INT8).",
        "",
        "| split | float | SAMP | drop |",
        "|---|---:|---:|---:|",
        f"| select ({metric}) | {r['float_metric_select']:.2f} | {r['chosen_metric_select']:.2f} "
        f"| {r['chosen_drop_select']:.2f} |",
    ]
    if "chosen_metric_report" in r:
        lines.append(
            f"| report ({metric}) | {r['float_metric_report']:.2f} | "
            f"{r['chosen_metric_report']:.2f} | {r['chosen_drop_report']:.2f} |"
        )
    batch, tokens = r["latency_shape"]
    timing = r.get("timing", {})  # absent from reports written before the spread was measured
    how = "median of interleaved rounds"
    if timing:
        how = (
            f"{timing['threads']} thread(s), median of {timing['rounds']} interleaved rounds of "
            f"{timing['calls_per_round']} calls, 95 % bootstrap interval of the median"
        )
    lines += [
        "",
        f"Latency at batch {batch} x {tokens} tokens ({how}): float fp32 "
        f"{r['float_latency_ms']:.2f} ms{_interval(r.get('float_latency_ci_ms'))}, SAMP "
        f"{r['chosen_latency_ms']:.2f} ms{_interval(r.get('chosen_latency_ci_ms'))} "
        f"({r['speedup_vs_float']:.2f}x).",
    ]
    if "kernel_estimate" in r:
        lines += [
            "",
            "Plans whose latency intervals overlap are not ranked by their medians: the kernel "
            f"estimate ranks them instead ({r['kernel_estimate']['source']}). Decided by: "
            f"{r['decided_by']}.",
        ]
    lines += [
        "",
        f"### Sensitivity on the calibration split ({metric} drop in points; divergence from "
        "float: logit KL, or squared error for scores)",
        "",
        "| layer | FFN-only drop | FFN-only divergence | full drop | full divergence |",
        "|---:|---:|---:|---:|---:|",
    ]
    by_layer: dict[int, dict[str, dict]] = {}
    for row in r["sensitivity"]:
        by_layer.setdefault(row["layer"], {})[row["mode"]] = row
    for layer, modes in sorted(by_layer.items()):
        ffn, full = modes["ffn"], modes["full"]
        lines.append(
            f"| {layer} | {ffn['drop']:.2f} | {ffn['divergence']:.2e} | {full['drop']:.2f} "
            f"| {full['divergence']:.2e} |"
        )
    lines += [
        "",
        "### Candidate plans on the accuracy/latency frontier (selection split)",
        "",
        "With the chosen plan and the plans it was weighed against within the noise (tied); "
        "estimate: time relative to the all-float plan by the kernel estimate.",
        "",
        f"| plan | {metric} | drop | latency ms | 95 % interval ms | estimate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    tied = set(r.get("tied", []))
    shown = set(r["frontier"]) | tied | {plan.name}
    for c in sorted(
        (c for c in r["candidates"] if c["plan"] in shown), key=lambda c: c["latency_ms"]
    ):
        name = c["plan"]
        marks = [m for m, on in (("chosen", name == plan.name), ("tied", name in tied)) if on]
        if name not in r["frontier"]:
            marks.append("off the frontier")
        mark = f" **({', '.join(marks)})**" if marks else ""
        interval = c.get("latency_ci_ms")
        spread = f"{interval[0]:.2f}-{interval[1]:.2f}" if interval else "-"
        estimate = f"{c['estimate']:.2f}x" if "estimate" in c else "-"
        lines.append(
            f"| `{name}`{mark} | {c['metric']:.2f} | {c['drop']:.2f} | {c['latency_ms']:.2f} "
            f"| {spread} | {estimate} |"
        )
    return "\n".join(lines) + "\n"


def _interval(interval: list[float] | None) -> str:
    return "" if not interval else f" [{interval[0]:.2f}-{interval[1]:.2f}]"


def plot(plan: Plan, path: Path) -> Path:
    """Left: sensitivity per layer (FFN-only and full); right: every candidate's metric
    against its measured latency (with its 95 % interval), the frontier joined, the chosen
    plan circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = plan.report
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for offset, mode in ((-0.2, "ffn"), (0.2, "full")):
        rows = [x for x in r["sensitivity"] if x["mode"] == mode]
        left.bar(
            [x["layer"] + offset for x in rows], [x["divergence"] for x in rows], 0.4, label=mode
        )
    left.set(xlabel="layer", ylabel="divergence from float", title="sensitivity (calibration)")
    left.legend()
    cands = r["candidates"]
    right.scatter([c["latency_ms"] for c in cands], [c["metric"] for c in cands], s=12)
    spread = [c for c in cands if c.get("latency_ci_ms")]
    if spread:  # each plan's 95 % interval of the median latency
        right.errorbar(
            [c["latency_ms"] for c in spread],
            [c["metric"] for c in spread],
            xerr=[  # latency_ms is rounded: a bound can sit a rounding step inside it
                [max(0.0, c["latency_ms"] - c["latency_ci_ms"][0]) for c in spread],
                [max(0.0, c["latency_ci_ms"][1] - c["latency_ms"]) for c in spread],
            ],
            fmt="none",
            ecolor="gray",
            lw=0.8,
        )
    front = [c for name in r["frontier"] for c in cands if c["plan"] == name]
    right.plot([c["latency_ms"] for c in front], [c["metric"] for c in front], "-o", ms=4)
    chosen = next(c for c in cands if c["plan"] == plan.name)
    right.scatter(
        [chosen["latency_ms"]], [chosen["metric"]], s=160, facecolors="none", edgecolors="r"
    )
    right.axhline(r["float_metric_select"], ls="--", c="gray", lw=1)
    right.set(
        xlabel="latency ms (measured)", ylabel=r["metric_name"], title="candidates (selection)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(plan: Plan, directory: Path) -> list[Path]:
    paths = [directory / REPORT_JSON, directory / REPORT_MD, directory / REPORT_PNG]
    paths[0].write_text(json.dumps(plan.to_json(), indent=2, default=float) + "\n")
    paths[1].write_text(markdown(plan))
    plot(plan, paths[2])
    return paths

"""Where ONNX Runtime's time goes for SAMP's ONNX Runtime plan: per-operator-type totals from
ORT's own profiler (``SessionOptions.enable_profiling``), batch 1 x SEQ.

Usage: python benchmarks/samp_ort_profile.py (--model DIR | --preset bert-base) [--plan QQ..]
           [--threads 1] [--seq 128] [--calls 20]

The model's encoder is exported and quantized exactly as ``Plan(..., "onnxruntime")`` builds it
(``quantize_dynamic``, per-channel weights; ``Q`` every layer by default), then run in a
profiling session with the same options as SAMP's.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from pretrainkit.samp.backends import build
from pretrainkit.samp.plan import Plan
from pretrainkit.samp.search import latency_model

MODES = {"Q": "full", "f": "ffn", "F": "float"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (a head is added if none)")
    parser.add_argument("--preset", help="or a preset with random weights, e.g. bert-base")
    parser.add_argument("--plan", help="one letter per layer (default: Q for every layer)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    if bool(args.model) == bool(args.preset):
        parser.error("give one of --model or --preset")
    warnings.filterwarnings("ignore")
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    model = latency_model(args.model, args.preset)
    letters = args.plan or "Q" * len(model.encoder.layers)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        build(model, Plan([MODES[c] for c in letters], "onnxruntime"), workdir)
        path = workdir / f"encoder-{letters}.onnx"
        if not path.exists():
            raise SystemExit(f"expected {path}; found {sorted(p.name for p in workdir.iterdir())}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = str(workdir / "ort-profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {
            "hidden": np.random.default_rng(0)
            .standard_normal((1, args.seq, model.config.hidden_size))
            .astype(np.float32),
            "attention_mask": np.ones((1, args.seq), dtype=np.int64),
        }
        for _ in range(args.calls):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values())
    print(f"plan {letters}, {args.threads} thread(s), 1 x {args.seq}, {args.calls} calls")
    print("\n| operator | ms per call | share |\n|---|---:|---:|")
    for op, us in per_op.most_common(12):
        print(f"| {op} | {us / args.calls / 1000:.2f} | {100 * us / total:.1f} % |")
    print(f"| all operators | {total / args.calls / 1000:.2f} | 100 % |")


if __name__ == "__main__":
    main()

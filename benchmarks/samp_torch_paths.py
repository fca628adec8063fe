"""Which PyTorch INT8 path is fastest on this CPU: full INT8 on every encoder layer of a model
folder, batch 1 x 128, every variant timed in interleaved rounds in this one process.

Variants: fp32 eager; bf16 GEMMs; SAMP's Int8Linear with ``torch._int_mm`` (per-token scales)
and with fbgemm's dynamic linear (fp32 and bf16 float partner); ``torch.ao`` quantize_dynamic;
SAMP's fused kernels; torchao ``Int8DynamicActivationInt8WeightConfig`` with ``torch.compile``
(blocks compiled, inductor freezing); SAMP int_mm with ``torch.compile``; ONNX Runtime fp32 and
full INT8.

    python benchmarks/samp_torch_paths.py --model MODEL_DIR --threads 1
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import pretrainkit
from pretrainkit.samp.backends import build
from pretrainkit.samp.plan import Plan
from pretrainkit.samp.search import (
    latency_inputs,
    measure_latency,
    median_interval,
    with_latency_head,
)


def compiled(model):
    """Each encoder block compiled by inductor with freezing (weights folded as constants): the
    setting torchao's CPU int8 path is documented to need."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    for block in model.encoder.layers:
        block.compile()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder (a head is added if none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(".cache/inductor").resolve()))
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    model = pretrainkit.load(args.model).eval()
    model = with_latency_head(model)
    n = len(model.encoder.layers)
    workdir = Path(tempfile.mkdtemp())

    def ao_dynamic():
        m = copy.deepcopy(model)
        m.encoder = torch.ao.quantization.quantize_dynamic(
            m.encoder, {torch.nn.Linear}, dtype=torch.qint8
        )
        return m

    def torchao_compiled():
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        m = copy.deepcopy(model)
        quantize_(m.encoder, Int8DynamicActivationInt8WeightConfig())
        return compiled(m)

    makers = {
        "fp32 eager": lambda: model,
        "bf16 GEMMs": lambda: build(model, Plan(["float"] * n, float_dtype="bf16")),
        "SAMP int_mm (bf16 partner)": lambda: build(
            model, Plan(["full"] * n, float_dtype="bf16", kernel="int_mm")
        ),
        "SAMP fbgemm (fp32 partner)": lambda: build(
            model, Plan(["full"] * n, float_dtype="fp32", kernel="fbgemm")
        ),
        "SAMP fbgemm (bf16 partner)": lambda: build(
            model, Plan(["full"] * n, float_dtype="bf16", kernel="fbgemm")
        ),
        "SAMP fused (bf16 partner)": lambda: build(
            model, Plan(["full"] * n, float_dtype="bf16", kernel="fused")
        ),
        "torch.ao quantize_dynamic": ao_dynamic,
        "torchao int8 dyn + compile": torchao_compiled,
        "SAMP int_mm + compile": lambda: compiled(
            build(model, Plan(["full"] * n, float_dtype="bf16", kernel="int_mm"))
        ),
        "ONNX Runtime fp32": lambda: build(model, Plan(["float"] * n, "onnxruntime"), workdir),
        "ONNX Runtime INT8": lambda: build(model, Plan(["full"] * n, "onnxruntime"), workdir),
    }
    inputs = latency_inputs(model, 1, args.seq)
    variants = {}
    with torch.no_grad():
        reference = model(**inputs).logits
        for name, make in makers.items():
            start = time.perf_counter()
            variants[name] = make()
            variants[name](**inputs)  # compiles where it compiles
            error = (variants[name](**inputs).logits.float() - reference).abs().max().item()
            print(f"built {name} in {time.perf_counter() - start:.1f} s, max |Δlogit| {error:.4f}")
    times = measure_latency(variants, inputs, rounds=args.rounds, repeats=3)
    fp32 = statistics.median(times["fp32 eager"])
    ort = statistics.median(times["ONNX Runtime INT8"])
    print(
        f"\n| variant ({args.threads} thread(s), 1 x {args.seq}) | median ms | 95 % CI ms "
        "| vs fp32 | vs ORT INT8 |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        ms = statistics.median(values)
        ci = median_interval(values)  # the spread the SAMP search decides with
        spread = f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "-"
        print(f"| {name} | {ms:.2f} | {spread} | {fp32 / ms:.2f}x | {ms / ort:.2f}x |")


if __name__ == "__main__":
    main()

"""Pre-training tokens/s and model FLOPs utilisation (MFU) for single, FSDP and TP layouts.

For each model shape the script writes a synthetic corpus (pseudo-words, so that a tokenizer of
the model's full vocabulary size can be trained on it), trains that tokenizer with
``pretrainkit vocab`` and cuts token shards with ``pretrainkit preprocess`` once; then, for each
layout, it runs ``pretrainkit pretrain`` (``torchrun`` for more than one process) in bf16 for
``--warmup`` + ``--steps`` optimizer steps, one metrics record a step, and reads the throughput
of the timed steps from ``RUN/metrics.jsonl``.

Shapes (``--shapes``):

* ``bert-base``: the preset (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 30522 from
  the trained WordPiece tokenizer), MLM only (RoBERTa-style full windows), sequence 512: the
  length of BERT's second phase and of most encoder fine-tuning, whose larger matrices and
  attention share say more about the GPU than sequence 128 would.
* ``llama-1b``: the ``llama`` preset reshaped to hidden 2048, 16 layers, 16 heads, gated SiLU
  FFN 5504, vocabulary 32000 (trained byte-level BPE), untied head, causal LM at sequence 2048
  (about 0.94 B parameters, 0.88 B of them outside the input embedding).

Layouts (``--layouts``): ``single`` (one process), ``fsdp`` (``--strategy fsdp`` over all
processes), ``tp`` (``--tensor-parallel P`` over all P processes). On CUDA the process count is
``torch.cuda.device_count()`` (or ``--processes``); ``tp`` needs at least two and is skipped,
with the reason printed, on one GPU.

MFU (PaLM, Chowdhery et al. 2022, appendix B "model FLOPs utilization"; the same count as
torchtitan's): achieved FLOP/s = tokens/s × (6 × N + 12 × L × H × T), where L is the number of
layers, H the hidden size (heads × head size), T the sequence length, and N the parameters that
take part in matrix products for every token:

* counted: every encoder parameter, and the target heads' parameters (a tied output matrix is
  counted in the head, since its product is computed there);
* not counted: the input embedding tables (word, position, segment): a lookup is not a product;
* the MLM head runs only on the masked positions (pretrainkit scores only those), so its
  parameters are weighted by the expected masked share, 0.15 × (T - 2) / T; the LM head runs on
  every position (weight 1);
* the attention term counts the full T × T score and value products even for causal attention,
  as PaLM does.

MFU = achieved FLOP/s / (processes × peak FLOP/s of one device). The peak is ``--peak-tflops``;
on CUDA without it the dense bf16 peak of the device is taken from its name (H100/H200 SXM:
989 TFLOPS, A100: 312; an H100/H200 PCIe or NVL card has a lower peak and is treated as
unknown); an unknown device without ``--peak-tflops`` is an error.

Tokens/s are the trainer's own count (non-padding tokens over all processes; under TP every
process of a tensor-parallel group sees the same tokens and they are counted once), over the
timed steps: total tokens over total step seconds. Peak memory per process, on CUDA only, is
``torch.cuda.max_memory_allocated()`` read at exit of each training process: the script runs the
pretrainkit CLI inside a small wrapper (this file with ``--child-memory``) because pretrainkit
does not record it.

On a GPU machine (one JSON line per shape and layout, then a Markdown table):

    python benchmarks/gpu_mfu.py

CPU smoke check (tiny shapes, gloo, 2 processes; the numbers measure nothing, they show that the
script and every layout run):

    python benchmarks/gpu_mfu.py --device cpu --tiny --processes 2 --peak-tflops 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
MASK_PROB = 0.15  # pretrainkit's MLM masking share (data/masking.py)


@dataclass(frozen=True)
class Shape:
    """One model shape: the preset, its overrides, the objective and the batch per process."""

    name: str
    preset: str
    overrides: dict[str, str]
    objective: str  # preprocess objective == target name
    vocab_kind: str
    vocab_size: int
    seq_length: int
    batch_size: int  # sequences per micro-batch and data-parallel process
    words: int = 300_000  # corpus length, in pseudo-words
    distinct: int = 60_000  # distinct pseudo-words, enough for the vocabulary size
    extra: list[str] = field(default_factory=list)


LLAMA_1B = {
    "hidden_size": "2048",
    "encoder.num_layers": "16",
    "encoder.num_heads": "16",
    "encoder.ffn_size": "5504",
    "embedding.max_positions": "2048",
}
SHAPES = {
    "bert-base": Shape(
        "bert-base", "bert-base", {"targets": "[{name: mlm}]"}, "mlm", "wordpiece", 30522, 512, 32
    ),
    "llama-1b": Shape("llama-1b", "llama", LLAMA_1B, "lm", "bpe", 32000, 2048, 8),
}
TINY = {
    "bert-base": Shape(
        "bert-tiny-shape",
        "bert-base",
        {
            "targets": "[{name: mlm}]",
            "hidden_size": "64",
            "encoder.num_layers": "2",
            "encoder.num_heads": "2",
            "encoder.ffn_size": "256",
        },
        "mlm",
        "wordpiece",
        1000,
        64,
        4,
        words=20_000,
        distinct=3_000,
    ),
    "llama-1b": Shape(
        "llama-tiny-shape",
        "llama",
        {
            "hidden_size": "64",
            "encoder.num_layers": "2",
            "encoder.num_heads": "4",
            "encoder.ffn_size": "172",
            "embedding.max_positions": "64",
        },
        "lm",
        "bpe",
        1000,
        64,
        4,
        words=20_000,
        distinct=3_000,
    ),
}


def child_main(argv: list[str]) -> int:
    """Run the pretrainkit CLI in this process and write its peak CUDA memory at exit.

    ``argv`` is ``[folder, pretrainkit arguments...]``; the file is ``folder/rank<RANK>.json``.
    """
    import atexit

    import torch

    folder = Path(argv[0])

    def write_peak() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rank = os.environ.get("RANK", "0")
            peak = torch.cuda.max_memory_allocated()
            (folder / f"rank{rank}.json").write_text(json.dumps({"max_memory_allocated": peak}))

    atexit.register(write_peak)
    sys.argv = ["pretrainkit", *argv[1:]]
    from pretrainkit.cli.entry import run as pretrainkit_run

    return pretrainkit_run()


def write_corpus(path: Path, shape: Shape, seed: int = 0) -> None:
    """Documents of pseudo-words drawn uniformly, so every word recurs (vocab training needs it)."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < shape.distinct:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    vocabulary = sorted(words)
    written = 0
    with path.open("w", encoding="utf-8") as sink:
        while written < shape.words:
            for _ in range(rng.randint(3, 8)):
                length = rng.randint(8, 20)
                sink.write(" ".join(rng.choices(vocabulary, k=length)) + " .\n")
                written += length
            sink.write("\n")


def pretrainkit_cli(args: list[str], log: Path) -> None:
    """One pretrainkit command; a failure stops the script with its log's tail."""
    with log.open("wb") as sink:
        done = subprocess.run(
            [sys.executable, "-m", "pretrainkit", *args], stdout=sink, stderr=subprocess.STDOUT
        )
    if done.returncode:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"pretrainkit {args[0]} failed (exit {done.returncode}):\n{tail}")


def prepare(shape: Shape, folder: Path) -> Path:
    """Corpus → tokenizer → shards under ``folder``; reused when a previous run left them."""
    shards = folder / "shards"
    if (folder / "prepared").is_file():
        return shards
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    write_corpus(corpus, shape)
    tokenizer = folder / "tokenizer"
    pretrainkit_cli(
        ["vocab", "--corpus", str(corpus), "--kind", shape.vocab_kind, "--size",
         str(shape.vocab_size), "--out", str(tokenizer), "--overwrite"],
        folder / "vocab.log",
    )  # fmt: skip
    pretrainkit_cli(
        ["preprocess", "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--objective",
         shape.objective, "--seq-length", str(shape.seq_length), "--out", str(shards),
         "--overwrite"],
        folder / "preprocess.log",
    )  # fmt: skip
    (folder / "prepared").write_text("")  # marks a complete preparation for --work reuse
    return shards


def flops_per_token(model_dir: Path, shape: Shape) -> tuple[float, dict[str, int]]:
    """6 N + 12 L H T for the model the run saved (see the module docstring for N)."""
    import torch

    import pretrainkit

    config = pretrainkit.load_model_config(model_dir)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = pretrainkit.build_model(config)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    heads = 0.0
    head_params = 0
    for name, target in model.targets.items():
        count = sum(p.numel() for p in target.parameters())
        share = MASK_PROB * (shape.seq_length - 2) / shape.seq_length if name == "mlm" else 1.0
        heads += share * count
        head_params += count
    layers, hidden = config.encoder.num_layers, config.hidden_size
    flops = 6 * (encoder + heads) + 12 * layers * hidden * shape.seq_length
    total = sum(p.numel() for p in model.parameters())
    counts = {"parameters": total, "encoder_parameters": encoder, "head_parameters": head_params}
    return flops, counts


def timed_throughput(run_dir: Path, warmup: int) -> tuple[float, float]:
    """(tokens/s, median s/step) over the records after ``warmup`` (one record a step).

    Every step of a full-window objective has the same token count, so total tokens over total
    seconds is the harmonic mean of the per-step rates.
    """
    import statistics

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r and r["step"] > warmup]
    if not rates:
        raise SystemExit(f"{run_dir}/metrics.jsonl has no step after the {warmup} warm-up steps")
    elapsed = [r["elapsed"] for r in records if "tokens_per_s" in r]
    gaps = [b - a for a, b in zip(elapsed, elapsed[1:])][warmup:]
    return len(rates) / sum(1 / r for r in rates), statistics.median(gaps) if gaps else 0.0


def peak_tflops(args: argparse.Namespace, device_name: str) -> float:
    if args.peak_tflops is not None:
        return float(args.peak_tflops)
    # Only the SXM parts have these peaks: an H100/H200 PCIe or NVL card is lower, so it must
    # be given rather than guessed.
    other_form = any(tag in device_name for tag in ("PCIe", "NVL"))
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name and not (key != "A100" and other_form):
            return value
    raise SystemExit(
        f"no known bf16 peak for device {device_name!r}: give --peak-tflops "
        f"(known, SXM parts only: {', '.join(f'{k} {v:g}' for k, v in PEAK_BF16_TFLOPS.items())})"
    )


def layout_plan(layout: str, processes: int) -> tuple[int, list[str]] | str:
    """(processes, pretrain flags) for a layout, or the reason it cannot run here."""
    if layout == "single":
        return 1, ["--strategy", "single"]
    if layout == "fsdp":
        return processes, ["--strategy", "fsdp"]
    if layout == "tp":
        if processes < 2:
            return "tensor parallelism needs at least 2 processes (devices)"
        return processes, ["--strategy", "single", "--tensor-parallel", str(processes)]
    raise SystemExit(f"unknown layout {layout!r}: expected single, fsdp or tp")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-memory":
        sys.exit(child_main(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke check)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    layouts = ["single", "fsdp", "tp"]
    parser.add_argument("--layouts", nargs="+", default=layouts, choices=layouts)
    parser.add_argument("--processes", type=int, help="default: the CUDA device count; cpu: 2")
    parser.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s of one device")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--work", type=Path, help="keep shards here and reuse them (default: temp)")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run folders")
    args = parser.parse_args()

    import torch

    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible (use --device cpu --tiny)")
        device_name = torch.cuda.get_device_name(0)
        processes = args.processes or torch.cuda.device_count()
        if processes > torch.cuda.device_count():
            raise SystemExit(f"--processes {processes}: only {torch.cuda.device_count()} GPUs")
    else:
        if args.peak_tflops is None:
            raise SystemExit("--device cpu: give --peak-tflops (no CPU peak is assumed)")
        device_name = platform.processor() or platform.machine()
        processes = args.processes or 2
    peak = peak_tflops(args, device_name) * 1e12
    shapes = [(TINY if args.tiny else SHAPES)[name] for name in args.shapes]
    cores = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    temporary = tempfile.TemporaryDirectory() if args.work is None else None
    root = Path(temporary.name) if temporary else args.work
    try:
        for shape in shapes:
            shards = prepare(shape, root / f"{shape.name}-{shape.vocab_size}-{shape.seq_length}")
            for layout in args.layouts:
                plan = layout_plan(layout, processes)
                if isinstance(plan, str):
                    print(f"skipped {shape.name} {layout}: {plan}", flush=True)
                    continue
                count, flags = plan
                out = Path(tempfile.mkdtemp(prefix=f"{shape.name}-{layout}-", dir=root))
                run_dir, memory = out / "run", out / "memory"
                memory.mkdir()
                overrides = [x for k, v in shape.overrides.items() for x in (f"--model.{k}", v)]
                argv = [
                    "pretrain", "--model", shape.preset, *overrides, "--data", str(shards),
                    "--out", str(run_dir), "--steps", str(args.warmup + args.steps),
                    "--batch-size", str(shape.batch_size), "--log-every", "1",
                    "--precision", "bf16", "--device", args.device, "--no-progress", *flags,
                ]  # fmt: skip
                command = [sys.executable]
                if layout != "single":  # fsdp on one GPU still needs the launcher's env
                    command += ["-m", "torch.distributed.run", "--standalone"]
                    command += ["--nproc-per-node", str(count)]
                command += [str(Path(__file__).resolve()), "--child-memory", str(memory), *argv]
                env = {
                    **os.environ,
                    "OMP_NUM_THREADS": str(max(1, cores // count)),
                    "TOKENIZERS_PARALLELISM": "false",
                }
                log = out / "log.txt"
                with log.open("wb") as sink:
                    done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
                if done.returncode:
                    tail = log.read_text(errors="replace")[-3000:]
                    print(f"FAILED {shape.name} {layout} (exit {done.returncode}):\n{tail}")
                    continue
                tokens_per_s, step_s = timed_throughput(run_dir, args.warmup)
                flops, counts = flops_per_token(run_dir / "model", shape)
                achieved = tokens_per_s * flops
                row: dict[str, Any] = {
                    "shape": shape.name,
                    "layout": layout,
                    "processes": count,
                    "device": device_name,
                    "torch": torch.__version__,
                    "seq_length": shape.seq_length,
                    "batch_per_process": shape.batch_size,
                    **counts,
                    "flops_per_token": flops,
                    "tokens_per_s": round(tokens_per_s, 1),
                    "s_per_step_median": round(step_s, 4),
                    "achieved_tflops": round(achieved / 1e12, 3),
                    "peak_tflops_per_device": peak / 1e12,
                    "mfu": round(achieved / (count * peak), 4),
                }
                peaks = [json.loads(p.read_text()) for p in sorted(memory.glob("rank*.json"))]
                if peaks:
                    row["max_memory_allocated_gib"] = [
                        round(p["max_memory_allocated"] / 2**30, 2) for p in peaks
                    ]
                rows.append(row)
                print(json.dumps(row), flush=True)
                if not args.keep_runs:  # a 1B run writes ~16 GB of checkpoint: free the disk
                    shutil.rmtree(out)
    finally:
        if temporary:
            temporary.cleanup()
    print(f"\n{device_name}, torch {torch.__version__}, bf16, {args.steps} timed steps")
    print(
        "| shape | layout | processes | tokens/s | achieved TFLOP/s | MFU | peak memory / process |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        memory_text = ", ".join(f"{g} GiB" for g in r.get("max_memory_allocated_gib", [])) or "—"
        print(
            f"| {r['shape']} | {r['layout']} | {r['processes']} | {r['tokens_per_s']:,.0f} | "
            f"{r['achieved_tflops']:.3g} | {100 * r['mfu']:.1f} % | {memory_text} |"
        )


if __name__ == "__main__":
    main()

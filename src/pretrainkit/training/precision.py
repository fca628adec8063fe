"""Numeric precision: what the hardware supports, and the autocast / loss-scaling it implies."""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch

from pretrainkit.errors import ConfigError

log = logging.getLogger(__name__)

# Flags that mean the CPU computes bf16 dot products natively (x86: AVX-512 BF16, AMX;
# aarch64: the BF16 extension). Without one of them bf16 autocast is emulated and slower.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.lru_cache(maxsize=8)
def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """Feature flags of the first CPU, as listed by the kernel.

    Args:
        cpuinfo: Path of the cpuinfo file (a parameter so tests can pass a fixture).

    Returns:
        The lower-case flags (x86 ``flags`` line or aarch64 ``Features`` line); an empty set
        where the file does not exist (macOS, Windows) or has no such line.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.lower().split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions."""
    return bool(cpu_flags() & CPU_BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """Turn a requested precision into the one to use on ``device``.

    Args:
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        device: The training device.

    Returns:
        ``fp32``, ``bf16`` or ``fp16``. ``auto`` gives ``bf16`` on CPUs with native bf16
        instructions and on CUDA GPUs that support bf16, else ``fp32``.

    Raises:
        ConfigError: fp16 off CUDA, or bf16 on a GPU without bf16 support.
    """
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if kind == "cpu" and cpu_supports_bf16() else "fp32"
    if precision == "fp16" and kind != "cuda":
        raise ConfigError(
            f"precision 'fp16' needs a CUDA GPU (device is {kind!r}): fp16 training relies on "
            "loss scaling and fp16 kernels that CPUs do not provide; use 'bf16' or 'fp32'"
        )
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision 'bf16' is not supported by this GPU; use 'fp16' or 'fp32'")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"unknown precision {precision!r}; valid choices: auto, fp32, bf16, fp16")
    if precision == "bf16" and kind == "cpu" and not cpu_supports_bf16():
        warn_emulated_bf16()
    return precision


@functools.lru_cache(maxsize=1)
def warn_emulated_bf16() -> None:
    """Say once per process that bf16 was asked for on a CPU that emulates it: honoured as
    asked, but on an AVX2-only EPYC a bf16 GEMM ran 6.5x slower than fp32
    (benchmarks/gemm_precision.py)."""
    log.warning(
        "precision bf16 on a CPU without native bf16 instructions (%s): autocast is emulated "
        "and usually much slower than fp32; 'auto' would choose fp32 here",
        "/".join(sorted(CPU_BF16_FLAGS)),
    )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward-pass context for ``precision``; weights stay fp32 (the master copy)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (whose small range underflows gradients); None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)

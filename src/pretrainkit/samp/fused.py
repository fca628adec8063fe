"""SAMP's fused CPU kernels (``csrc/``), compiled on first use for the machine that runs them.

What they fuse, and why (BENCHMARKS.md, MiniLM-L6 full INT8 at 1 x 128, one thread): fbgemm's
dynamic linear quantizes each activation matrix in a separate pass with one scale per call and
hands back fp32, after which GELU, the cast to bf16 for attention and the residual add are more
passes over memory; PyTorch's softmax spends most of its time in an accurate ``exp``. Here each
INT8 linear is one call — per-token quantization, ``torch._int_mm`` (oneDNN, VNNI) and one
epilogue applying the per-channel and per-token scales, the bias, optionally the exact GELU and
writing fp32 or bf16 — and the attention softmax reads bf16 scores, applies the key-padding mask,
computes in fp32 with a vectorized ``exp`` and writes bf16 probabilities.

The build uses ``torch.utils.cpp_extension`` and the C++ compiler (``$CXX`` or ``c++``); it
takes ~30 s once, cached in ``$TORCH_EXTENSIONS_DIR`` under a name that hashes the sources, the
flags, the torch version and the CPU's features (the code is compiled with ``-march=native``).
Where no compiler is found or the build fails, ``available()`` is False, ``reason()`` says why,
and SAMP's ``auto`` kernel is fbgemm; asking for ``fused`` explicitly is then an error.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import sys
from pathlib import Path
from types import ModuleType

import torch

from pretrainkit.errors import ConfigError

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("bindings.cpp", "kernels.cpp")
# -ffast-math's parts that let loops vectorize (reassociated reductions, fused multiply-adds, no
# errno/trap/NaN bookkeeping), without -ffast-math itself: GCC < 13 links crtfastmath.o into a
# shared object built with it, which flushes denormals for the whole process at import.
FLAGS = (
    "-O3",
    "-march=native",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fno-signed-zeros",
    "-fassociative-math",
    "-ffinite-math-only",
    "-ffp-contract=fast",
)


def _build_name() -> str:
    from pretrainkit.training.precision import cpu_flags

    digest = hashlib.sha256()
    for name in (*SOURCES, "kernels.h"):
        digest.update((CSRC / name).read_bytes())
    digest.update(" ".join(FLAGS).encode())
    digest.update(torch.__version__.encode())
    digest.update(platform.machine().encode())
    digest.update(" ".join(sorted(cpu_flags())).encode())
    return "pretrainkit_samp_" + digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _load() -> ModuleType | str:
    """The compiled module, or the reason it could not be built."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler found ({compiler!r} is not on PATH; set $CXX)"
    name = _build_name()
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    build_dir = Path(root) / name
    try:
        from torch.utils.cpp_extension import load

        if not any(build_dir.glob("*.so")):
            print(
                f"building SAMP's fused CPU kernels in {build_dir} (once, ~30 s)", file=sys.stderr
            )
        build_dir.mkdir(parents=True, exist_ok=True)
        return load(
            name=name,
            sources=[str(CSRC / source) for source in SOURCES],
            extra_cflags=list(FLAGS),
            build_directory=str(build_dir),
            verbose=False,
        )
    except Exception as error:  # a failed build must not break the float paths
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"building {CSRC} failed: {first_line}"


def available() -> bool:
    """Whether the kernels are built (builds them on the first call)."""
    return not isinstance(_load(), str)


def reason() -> str:
    """Why the kernels are not available ('' when they are)."""
    loaded = _load()
    return loaded if isinstance(loaded, str) else ""


def kernels() -> ModuleType:
    """The compiled module; a ConfigError saying why when it cannot be built."""
    loaded = _load()
    if isinstance(loaded, str):
        raise ConfigError(
            f"SAMP's fused kernels are not available: {loaded}. "
            "Use --kernel fbgemm or int_mm (no compiler needed)."
        )
    return loaded

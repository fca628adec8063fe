"""Backends behind one interface: each turns (float model, plan) into a model that runs the plan,
and writes / reads it in a model folder.

A built model is always a ``pretrainkit.Model``: the embedding and the task head stay the float
model's own modules (in fp32); only what the plan changes is swapped — encoder GEMMs for the
torch backend, the whole encoder stack for ONNX Runtime. So ``model(**batch)`` returns the usual
``ModelOutput`` and ``evaluate`` / ``predict`` / ``embed`` take a quantized model like any other.
"""

from __future__ import annotations

import importlib.util
import warnings
from copy import deepcopy
from pathlib import Path

import torch
from torch import nn

from pretrainkit.errors import ConfigError, closest
from pretrainkit.layers.attention import MultiHeadAttention
from pretrainkit.layers.block import TransformerBlock
from pretrainkit.model import Model, build_model
from pretrainkit.samp import fused
from pretrainkit.samp.attention import InferenceAttention, InferenceBlock
from pretrainkit.samp.linear import KERNELS, FloatLinear, Int8Linear
from pretrainkit.samp.plan import FLOAT_DTYPES, Plan, check_plan_fits, encoder_layers, layer_gemms
from pretrainkit.training.precision import cpu_flags, cpu_supports_bf16

BACKENDS = ("torch", "onnxruntime")


def clone_model(model: Model, share_float: bool = False) -> Model:
    """A copy with the same weights, so that the float model is never changed in place.

    With ``share_float`` only the encoder is copied; the embedding and the heads (which no plan
    changes) are the same modules — what the search uses for its many candidates.
    """
    if share_float:
        copy = Model(
            model.config,
            model.embedding,
            deepcopy(model.encoder),
            model.target_modules(),
            model.tgt_embedding,
            model.decoder,
        )
    else:
        copy = build_model(model.config)
        copy.load_state_dict(model.state_dict())
    copy.tokenizer = model.tokenizer
    copy.encode_defaults = dict(model.encode_defaults)
    copy.whitening = model.whitening  # the same vectors, so the same fitted whitening
    # The task goes with the weights: the quantized folder is evaluated and predicted with it.
    copy.task_record = deepcopy(model.task_record)
    return copy.eval()


def float_partner(device: str = "cpu") -> str:
    """bf16 where the hardware computes it natively (CPU avx512_bf16/AMX, or a bf16 GPU), else
    fp32. fp16 is never chosen on CPU: it has no fast kernels there."""
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def cpu_features() -> dict[str, bool]:
    """The CPU features SAMP's choices depend on."""
    flags = cpu_flags()
    return {
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}),
        "bf16": cpu_supports_bf16(),
        "avx512": "avx512f" in flags,
    }


def backend_available(name: str) -> bool:
    if name == "torch":
        return True
    if name == "onnxruntime":
        return all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx"))
    return False


def resolve_backend(name: str) -> str:
    """``auto`` → torch (it keeps the bf16 float partner; ONNX Runtime's CPU float is fp32);
    a named backend that is not installed is an error."""
    if name == "auto":
        return "torch"
    if name not in BACKENDS:
        raise ConfigError(
            f"--backend {name!r}{closest(name, BACKENDS)}; valid: auto, {', '.join(BACKENDS)}"
        )
    if not backend_available(name):
        raise ConfigError(
            f"backend {name!r} is not installed: pip install onnx onnxruntime (or use --backend torch)"
        )
    return name


def resolve_kernel(kernel: str) -> str:
    """``auto`` → SAMP's fused kernel where it builds (a C++ compiler is needed once), else
    fbgemm where PyTorch has that engine (x86), else int_mm.

    Measured on the project's CPU (MiniLM-L6, full INT8, 1 x 128, 1 thread; BENCHMARKS.md):
    fused is the fastest and scales activations per token like int_mm; fbgemm scales them per
    call (per tensor). The plan search holds the metric whichever runs.
    """
    if kernel == "auto":
        if fused.available():
            return "fused"
        chosen = "fbgemm" if "fbgemm" in torch.backends.quantized.supported_engines else "int_mm"
        warnings.warn(f"SAMP uses the {chosen} kernel: {fused.reason()}", stacklevel=2)
        return chosen
    if kernel not in KERNELS:
        raise ConfigError(
            f"--kernel {kernel!r}{closest(kernel, KERNELS)}; valid: auto, {', '.join(KERNELS)}"
        )
    if kernel == "fused":
        fused.kernels()  # a clear error now, not at the first forward
    return kernel


def _swap(block: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = block.get_submodule(parent_name) if parent_name else block
    setattr(parent, child, new)


def apply_torch_plan(model: Model, plan: Plan) -> Model:
    """Swap the encoder GEMMs of ``model`` (in place) for INT8 / float-partner modules."""
    check_plan_fits(plan, model)
    if plan.kernel == "fused":
        fused.kernels()  # a saved plan on a machine that cannot build them: say so at load
    dtype = FLOAT_DTYPES[plan.float_dtype]
    # fbgemm computes in and out of fp32: casting its output to the partner's dtype only for the
    # next GEMM (or LayerNorm) to cast it back cost 8 % of full-INT8 MiniLM (10.63 → 9.77 ms,
    # 1 x 128, 1 thread); GELU between two INT8 GEMMs then runs in fp32. The fused kernel writes
    # either dtype itself: fp32 into the residual stream, the partner's dtype where the output
    # feeds attention or the next GEMM (InferenceAttention / InferenceBlock ask for it).
    int8_out = torch.float32 if plan.kernel in ("fbgemm", "fused") else dtype
    layers = encoder_layers(model)
    for i, (block, mode) in enumerate(zip(layers, plan.modes)):
        for name, kind in layer_gemms(block).items():
            linear = block.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            if mode == "full" or (mode == "ffn" and kind == "ffn"):
                _swap(block, name, Int8Linear.from_linear(linear, int8_out, plan.kernel))
            elif dtype != torch.float32:
                _swap(block, name, FloatLinear.from_linear(linear, dtype))
        attention = getattr(block, "attention", None)
        if type(attention) is MultiHeadAttention:
            block.attention = InferenceAttention.adopt(attention, dtype, plan.kernel == "fused")
        if type(block) is TransformerBlock:
            layers[i] = InferenceBlock.adopt(block, dtype)
    return model.eval()


def build(
    model: Model,
    plan: Plan,
    workdir: Path | None = None,
    share_float: bool = False,
    inplace: bool = False,
) -> Model:
    """A model running ``plan``; ``model`` is left as it was unless ``inplace``."""
    target = model if inplace else clone_model(model, share_float)
    if plan.backend == "torch":
        return apply_torch_plan(target, plan)
    if plan.backend == "onnxruntime":
        from pretrainkit.samp.onnx_backend import build_onnx

        return build_onnx(target, plan, workdir)
    raise ConfigError(f"plan backend {plan.backend!r} is not one of {', '.join(BACKENDS)}")


def prepare_quantized(skeleton: Model, directory: Path) -> Model:
    """Shape a freshly built float model like the saved quantized one, before its weights load.

    Called by ``pretrainkit.load`` for folders with a plan; no calibration runs again.
    """
    plan = Plan.load(directory)
    if plan.backend == "onnxruntime":
        from pretrainkit.samp.onnx_backend import attach_saved_encoder

        model = attach_saved_encoder(skeleton, plan, directory)
    else:
        model = apply_torch_plan(skeleton, plan)
    setattr(model, "samp_plan", plan)  # noqa: B010 (not a Model field)
    return model

"""The two replacements for an encoder ``nn.Linear``: INT8 with dynamic per-token activation
scales and per-channel weight scales, and a float GEMM in the float partner's dtype (bf16 on
CPUs with native bf16).

Both keep the state-dict names of ``nn.Linear`` (``weight``, ``bias``), so a quantized model's
keys are the float model's plus ``weight_scale`` for every INT8 layer, and a folder written with
``save_file`` loads back without pickle.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

from pretrainkit.errors import ConfigError
from pretrainkit.samp import fused

KERNELS = ("int_mm", "fbgemm", "fused")


@functools.lru_cache(maxsize=1)
def _reduce_range() -> bool:
    """fbgemm: 7-bit activations unless the CPU has VNNI (whose int8 dot products do not
    saturate the int16 intermediate that AVX2's vpmaddubsw does)."""
    from pretrainkit.training.precision import cpu_flags

    return not cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric INT8 per output channel: ``weight ≈ q * scale[:, None]``.

    Returns:
        ``q`` int8 ``[out, in]`` in [-127, 127] and ``scale`` fp32 ``[out]``.
    """
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric INT8 per row of ``x`` ``[t, in]``: returns int8 ``[t, in]`` and fp32 ``[t, 1]``."""
    # Few, fused-friendly ops: this runs before every INT8 GEMM. |x / scale| <= 127 by
    # construction, so rounding needs no clamp.
    # (linalg.vector_norm with ord=inf is ~10x slower than abs().amax() here.)
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-8).div_(127.0)
    return torch.round(x / scale).to(torch.int8), scale


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with both operands in INT8 and an int32 accumulator.

    Activations are quantized at run time, one scale per token (row); weights once, one scale
    per output channel. Three kernels compute the same quantized weights:

    - ``fused``: SAMP's own C++ kernel (``samp.fused``): per-token quantization, ``_int_mm`` and
      one epilogue (scales, bias, optional GELU and residual, fp32 or bf16 out) in one call.
    - ``int_mm``: the same arithmetic in eager PyTorch ops (no compiler needed).
    - ``fbgemm``: PyTorch's quantized dynamic linear (``torch.ops.quantized.linear_dynamic``),
      whose activation scale is one per call (per tensor) — coarser.

    Args:
        in_features, out_features: as ``nn.Linear``.
        bias: whether there is a bias (kept in fp32).
        out_dtype: dtype of the output (the float partner's, so the next op runs in it).
        kernel: ``fused``, ``int_mm`` or ``fbgemm``.
    """

    weight: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        out_dtype: torch.dtype = torch.float32,
        kernel: str = "int_mm",
    ):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel {kernel!r} is not one of {', '.join(KERNELS)}")
        self.in_features, self.out_features = in_features, out_features
        self.out_dtype, self.kernel = out_dtype, kernel
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed: object | None = None  # fbgemm's packed weight, built on first use
        # _int_mm reads the weight as [in, out]; a contiguous copy is faster than a strided view.
        self._weight_t: torch.Tensor | None = None

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, out_dtype: torch.dtype = torch.float32, kernel: str = "int_mm"
    ) -> Int8Linear:
        module = cls(
            linear.in_features, linear.out_features, linear.bias is not None, out_dtype, kernel
        )
        q, scale = quantize_per_channel(linear.weight)
        module.weight.copy_(q)
        module.weight_scale.copy_(scale)
        if linear.bias is not None and module.bias is not None:
            module.bias.copy_(linear.bias.detach().float())
        return module

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = self._weight_t = None  # new weights: drop the cached layouts
        super()._load_from_state_dict(*args, **kwargs)

    def _fbgemm(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            with warnings.catch_warnings():  # quantized tensor types are deprecated, not gone
                warnings.simplefilter("ignore")
                self._packed = self._prepack()
        return torch.ops.quantized.linear_dynamic(x.float(), self._packed, _reduce_range())

    def _prepack(self) -> object:
        qweight = torch.quantize_per_channel(
            self.weight.float() * self.weight_scale[:, None],
            self.weight_scale.double(),
            torch.zeros(self.out_features, dtype=torch.long),
            axis=0,
            dtype=torch.qint8,
        )
        return torch.ops.quantized.linear_prepack(qweight, self.bias)

    def _fused(self, x, gelu, residual, out_dtype, norm):
        if not x.is_cpu:
            raise ConfigError(f"SAMP's fused kernel runs on the CPU; the input is on {x.device}")
        # (this runs 4 times a layer: the checks below skip no-op tensor calls, ~1 us each)
        if residual is not None and (
            residual.dtype != torch.float32 or not residual.is_contiguous()
        ):
            residual = residual.float().contiguous()
        ln = norm if not gelu and isinstance(norm, nn.LayerNorm) else None
        if ln is not None and not fusable_layer_norm(ln, self.out_features):
            ln = None
        y = fused.kernels().int8_linear(
            x,
            self._weight_t,
            self.weight_scale,
            self.bias,
            gelu,
            residual,
            out_dtype == torch.bfloat16 and (norm is None or ln is not None),
            None if ln is None else ln.weight,
            None if ln is None else ln.bias,
            0.0 if ln is None else ln.eps,
        )
        if norm is not None and ln is None:
            y = norm(y)
        return y if y.dtype == out_dtype else y.to(out_dtype)

    def forward(
        self,
        x: torch.Tensor,
        gelu: bool = False,
        residual: torch.Tensor | None = None,
        out_dtype: torch.dtype | None = None,
        norm: nn.Module | None = None,
    ) -> torch.Tensor:
        """``norm(gelu(x W^T + b) + residual)`` in ``out_dtype`` (default: the module's
        ``out_dtype``), each part optional; the ``fused`` kernel does all of it in one pass over
        the GEMM's output (a LayerNorm with weight and bias; another norm runs after it)."""
        out_dtype = out_dtype or self.out_dtype
        if self._weight_t is None and self.kernel != "fbgemm":
            self._weight_t = self.weight.t().contiguous()
        if self.kernel == "fused":
            return self._fused(x, gelu, residual, out_dtype, norm)
        shape = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # [t, in]
        if self.kernel == "fbgemm":
            y = self._fbgemm(x2)
        else:
            assert self._weight_t is not None
            q, scale = quantize_per_token(x2)
            acc = torch._int_mm(q, self._weight_t)  # [t, out] int32
            y = acc * self.weight_scale  # int32 x fp32 → fp32, no separate cast
            y = y.mul_(scale) if self.bias is None else torch.addcmul(self.bias, y, scale)
        y = y.reshape(*shape, self.out_features)
        if gelu:
            y = nn.functional.gelu(y)
        if residual is not None:
            y = y + residual
        if norm is not None:
            y = norm(y)
        return y.to(out_dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"kernel={self.kernel}, out_dtype={self.out_dtype}"
        )


def fusable_layer_norm(norm: nn.LayerNorm, size: int) -> bool:
    """Whether the fused epilogue computes ``norm``: fp32, over the last ``size`` features,
    with a weight and a bias."""
    return (
        tuple(norm.normalized_shape) == (size,)
        and norm.weight is not None
        and norm.bias is not None
        and norm.weight.dtype == torch.float32
    )


class FloatLinear(nn.Module):
    """``nn.Linear`` with its weight stored in ``dtype`` (bf16): the float partner's GEMM.

    The input is cast to ``dtype`` and the output stays in it; LayerNorm and the residual sum
    around it promote back to fp32, so only the GEMMs (and what sits between two of them:
    GELU, attention) run in bf16.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, dtype=torch.bfloat16
    ):
        super().__init__()
        self.in_features, self.out_features, self.dtype = in_features, out_features, dtype
        self.weight = nn.Parameter(
            torch.zeros(out_features, in_features, dtype=dtype), requires_grad=False
        )
        self.bias = (
            nn.Parameter(torch.zeros(out_features, dtype=dtype), requires_grad=False)
            if bias
            else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype) -> FloatLinear:
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype)
        module.weight.data.copy_(linear.weight.detach())
        if linear.bias is not None and module.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x.to(self.dtype), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.dtype}"

"""Inference attention for quantized models: one fused query/key/value GEMM and the attention
core as two bf16 matmuls around an fp32 softmax (SAMP's fused softmax kernel where the plan's
kernel is ``fused``: bf16 in and out, mask and fp32 arithmetic inside, 244 → 69 us for MiniLM; benchmarks/samp_kernels.py).

Measured on the project's CPU (1 thread, 12 heads x 128 tokens x 32): PyTorch's CPU flash
kernel takes ~560 us in fp32 and ~670 us in bf16 for one layer, matmul → fp32 softmax → matmul
in bf16 ~290 us. Softmax stays in fp32, as SAMP keeps it in float.

The module keeps ``MultiHeadAttention``'s submodules and state-dict names; the fused projection
is built from them on first use and never saved.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pretrainkit.layers.attention import MultiHeadAttention
from pretrainkit.layers.block import TransformerBlock
from pretrainkit.layers.feed_forward import FeedForward
from pretrainkit.samp import fused as fused_kernels
from pretrainkit.samp.linear import FloatLinear, Int8Linear


def fuse_projections(parts: list[nn.Module], first_scale: float = 1.0) -> nn.Module | None:
    """One module computing the concatenated outputs of ``parts`` (same kind and input), or
    None when they differ (an FFN-only layer mixes float attention with nothing to fuse).

    ``first_scale`` multiplies the first part's output (the query's attention scale, folded
    into its per-channel weight scales and bias instead of a multiply per call).
    """
    if all(isinstance(p, Int8Linear) for p in parts):
        int8 = [p for p in parts if isinstance(p, Int8Linear)]
        first = int8[0]
        has_bias = all(p.bias is not None for p in int8)
        if not has_bias and any(p.bias is not None for p in int8):
            return None
        fused = Int8Linear(
            first.in_features,
            sum(p.out_features for p in int8),
            has_bias,
            first.out_dtype,
            first.kernel,
        )
        first_rows = first.out_features
        fused.weight = torch.cat([p.weight for p in int8])
        fused.weight_scale = torch.cat([p.weight_scale for p in int8])
        fused.weight_scale[:first_rows] *= first_scale
        if has_bias:
            fused.bias = torch.cat([p.bias for p in int8 if p.bias is not None])
            fused.bias[:first_rows] *= first_scale
        return fused
    if all(isinstance(p, FloatLinear) for p in parts):
        floats = [p for p in parts if isinstance(p, FloatLinear)]
        has_bias = all(p.bias is not None for p in floats)
        if not has_bias and any(p.bias is not None for p in floats):
            return None
        merged = FloatLinear(
            floats[0].in_features, sum(p.out_features for p in floats), has_bias, floats[0].dtype
        )
        rows = floats[0].out_features
        merged.weight.data = torch.cat([p.weight.data for p in floats])
        merged.weight.data[:rows] *= first_scale
        if has_bias and merged.bias is not None:
            merged.bias.data = torch.cat([p.bias.data for p in floats if p.bias is not None])
            merged.bias.data[:rows] *= first_scale
        return merged
    return None


class InferenceAttention(MultiHeadAttention):
    """``MultiHeadAttention`` for eval-mode inference; other cases use the parent's path."""

    dtype: torch.dtype
    fused_softmax: bool

    @classmethod
    def adopt(
        cls, attention: MultiHeadAttention, dtype: torch.dtype, fused_softmax: bool = False
    ) -> InferenceAttention:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name in ("num_heads", "num_kv_heads", "head_dim", "scale", "dropout", "recorder"):
            setattr(new, name, getattr(attention, name))
        for name in ("query", "key", "value", "output"):
            new.add_module(name, getattr(attention, name))
        new.dtype = dtype
        new.fused_softmax = fused_softmax and dtype == torch.bfloat16
        new._forget_fused()
        return new

    def _forget_fused(self) -> None:
        # A plain attribute, not a submodule: the fused copy must stay out of the state dict.
        object.__setattr__(self, "_fused", None)

    def _load_from_state_dict(self, *args, **kwargs):
        self._forget_fused()  # rebuilt from the loaded projections on the next call
        super()._load_from_state_dict(*args, **kwargs)

    def _projections(self, x: torch.Tensor, scale: float) -> tuple[torch.Tensor, ...]:
        """Query (already multiplied by ``scale``), key and value."""
        fused = self.__dict__["_fused"]
        if fused is None:
            parts: list[nn.Module] = [self.query, self.key, self.value]
            fused = fuse_projections(parts, first_scale=scale) or False
            object.__setattr__(self, "_fused", fused)
        if fused is False:
            return self.query(x) * scale, self.key(x), self.value(x)
        # One cast of the fused output instead of three of its parts (none: an INT8 GEMM writes
        # the partner's dtype itself).
        out = fused(x, out_dtype=self.dtype) if isinstance(fused, Int8Linear) else fused(x)
        return out.to(self.dtype).split(self.num_heads * self.head_dim, dim=-1)

    def _softmax(self, scores: torch.Tensor, mask: torch.Tensor | None, is_causal: bool):
        """Attention probabilities in the partner's dtype from scores in it."""
        b, _, s, c = scores.shape
        padding_only = mask is None or (mask.dtype == torch.bool and mask.shape == (b, 1, 1, c))
        if self.fused_softmax and padding_only and not is_causal:
            keep = None if mask is None else mask.reshape(b, c)
            return fused_kernels.kernels().softmax_bf16(scores, keep)
        if mask is not None and mask.dtype != torch.bool:
            scores = scores.float() + mask.float()  # an additive bias is added in fp32
        elif mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        if is_causal:
            causal = torch.ones(s, c, dtype=torch.bool, device=scores.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        # Softmax stays in fp32 (SAMP keeps it in float); the upcast happens inside the kernel,
        # which is also faster here than a bf16 softmax (121 vs 163 us for 12 x 128 x 128).
        return torch.softmax(scores, -1, dtype=torch.float32).to(self.dtype)

    def fast(self, rotary: object = None) -> bool:
        """Whether this call takes the inference path (else the parent's)."""
        return not self.training and rotary is None and self.num_kv_heads == self.num_heads

    def core(self, x: torch.Tensor, mask=None, is_causal: bool = False) -> torch.Tensor:
        """Attention before the output projection: ``[b, s, heads * head_dim]`` in the partner's
        dtype."""
        b, s, _ = x.shape
        # The scale is folded into the fused query projection (no multiply per call).
        scale = self.scale if self.scale is not None else self.head_dim**-0.5
        q, k, v = (
            t.to(self.dtype).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
            for t in self._projections(x, scale)
        )  # [b, h, s, d], strided views of the fused projection's output
        # Contiguous copies first: the bf16 batched matmul on the strided views took 203 us for
        # 12 heads x 128 x 64 here, on contiguous ones 82 us (+ 2 x 5 us for the copies).
        q, k = q.contiguous(), k.contiguous()
        scores = torch.matmul(q, k.transpose(-1, -2))  # [b, h, s, s], in the partner's dtype
        out = torch.matmul(self._softmax(scores, mask, is_causal), v)  # [b, h, s, d]
        return out.transpose(1, 2).reshape(b, s, -1)

    def forward(self, x, mask=None, rotary=None, is_causal=False):
        if not self.fast(rotary):
            return super().forward(x, mask, rotary, is_causal)
        return self.output(self.core(x, mask, is_causal))


def project(
    linear: nn.Module, x: torch.Tensor, residual: torch.Tensor, norm: nn.Module | None = None
) -> torch.Tensor:
    """``norm(residual + linear(x))`` (no norm: pre-norm blocks), in the residual's dtype; an
    INT8 linear does the sum and the norm in its epilogue."""
    if isinstance(linear, Int8Linear):
        return linear(x, residual=residual, out_dtype=residual.dtype, norm=norm)
    y = residual + linear(x)
    return y if norm is None else norm(y)


class InferenceBlock(TransformerBlock):
    """``TransformerBlock`` for eval-mode inference with SAMP's layers, written out flat: the
    attention core, then the output projection with the residual and (post-norm) the LayerNorm
    in its epilogue; the FFN's INT8 up-projection applies the exact GELU in its epilogue and
    hands the partner's dtype to the down-projection, which again adds the residual and norms.
    Per MiniLM layer that is 4 kernel calls where the module path made ~15 (BENCHMARKS.md).

    Same submodules and state-dict names as the block it adopts; training, rotary/GQA
    attention and blocks it was not built for run the parent's path.
    """

    dtype: torch.dtype
    fused_gelu: bool

    @classmethod
    def adopt(cls, block: TransformerBlock, dtype: torch.dtype) -> nn.Module:
        """The inference version of ``block``, or ``block`` itself when its parts are not the
        ones this path knows (cross-attention, gated FFN, attention not adopted)."""
        feed_forward = block.feed_forward
        if (
            block.cross_attention is not None
            or not isinstance(block.attention, InferenceAttention)
            or type(feed_forward) is not FeedForward
        ):
            return block
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.cross_attention = new.cross_norm = None
        for name, child in block.named_children():
            new.add_module(name, child)
        new.pre_norm = block.pre_norm
        new.dtype = dtype
        act, up = feed_forward.act, feed_forward.up
        exact_gelu = isinstance(act, nn.GELU) and act.approximate == "none"
        new.fused_gelu = isinstance(up, Int8Linear) and exact_gelu
        return new

    def _feed_forward_inner(self, x: torch.Tensor) -> torch.Tensor:
        ff: Any = self.feed_forward
        if not self.fused_gelu:
            return ff.act(ff.up(x))  # eval: dropout is the identity
        # The fused kernel writes the partner's dtype for the down-projection to read; the
        # others keep their own output dtype (fbgemm reads fp32: a bf16 round trip would cost).
        out_dtype = self.dtype if ff.up.kernel == "fused" else None
        return ff.up(x, gelu=True, out_dtype=out_dtype)

    def forward(self, x, mask=None, rotary=None, is_causal=False, memory=None, memory_mask=None):
        attention: Any = self.attention
        if self.training or not attention.fast(rotary):
            return super().forward(x, mask, rotary, is_causal, memory, memory_mask)
        down = self.feed_forward.down
        if self.pre_norm:
            x = project(
                attention.output, attention.core(self.attention_norm(x), mask, is_causal), x
            )
            return project(down, self._feed_forward_inner(self.ffn_norm(x)), x)
        x = project(attention.output, attention.core(x, mask, is_causal), x, self.attention_norm)
        return project(down, self._feed_forward_inner(x), x, self.ffn_norm)

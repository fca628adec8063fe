"""The gated convolutional encoder (Dauphin et al. 2017, "Language Modeling with Gated
Convolutional Networks"): 1-D convolutions whose outputs pass a GLU gate, with residuals."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pretrainkit.encoders.transformer import ENCODERS
from pretrainkit.errors import ConfigError


class GatedCNNEncoder(nn.Module):
    """Convolutions applied in order, each ``h → 2h`` channels halved by a GLU gate
    (``a * sigmoid(b)``), with a residual connection around every ``block_size`` of them.

    Padding positions are zeroed before every convolution, so they reach a real position only
    as zeros, the same zeros a shorter batch gets from the convolution's own padding: outputs at
    real positions do not depend on how much padding a row has. Outputs at padding positions are
    zero.

    Args:
        convolutions: ``nn.Conv1d(h, 2 * h, kernel_size)`` without padding (added here).
        kernel_size: the convolutions' width.
        causal: pad on the left only, so that position t sees positions ≤ t; otherwise the
            window is centred (odd kernel_size).
        block_size: a residual connection around every ``block_size`` convolutions.
        dropout: on every gated output.
    """

    def __init__(
        self,
        convolutions: Sequence[nn.Conv1d],
        kernel_size: int,
        causal: bool,
        block_size: int,
        dropout: float,
    ):
        super().__init__()
        # Not called `layers`: SAMP and the distributed engines read `encoder.layers` as the
        # blocks of a transformer stack.
        self.convolutions = nn.ModuleList(convolutions)
        self.causal = causal
        self.block_size = block_size
        width = kernel_size - 1
        self.padding = (width, 0) if causal else (width // 2, width - width // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[b, s, h]`` → ``[b, s, h]``; attention_mask ``[b, s]``, 1 for real tokens."""
        return self._run(x, attention_mask, keep_all=False)[-1]

    def layer_outputs(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Every convolution's output ``[b, s, h]`` (after its residual, where there is one)."""
        return self._run(x, attention_mask, keep_all=True)

    def _run(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, keep_all: bool
    ) -> list[torch.Tensor]:
        keep = None
        if attention_mask is not None and not bool(attention_mask.all()):
            keep = attention_mask[..., None].to(x.dtype)  # [b, s, 1]
        residual = x
        outputs = []
        for i, convolution in enumerate(self.convolutions):
            if keep is not None:
                x = x * keep
            h = F.pad(x.transpose(1, 2), self.padding)  # [b, h, s + kernel_size - 1]
            x = self.dropout(F.glu(convolution(h), dim=1).transpose(1, 2))  # [b, s, h]
            if (i + 1) % self.block_size == 0:
                x = x + residual
                residual = x
            if keep_all or i == len(self.convolutions) - 1:
                outputs.append(x if keep is None else x * keep)
        return outputs


@ENCODERS.register("gatedcnn")
def build_gated_cnn_encoder(
    hidden_size: int,
    num_layers: int,
    kernel_size: int,
    block_size: int,
    causal: bool,
    dropout: float,
) -> GatedCNNEncoder:
    """``num_layers`` gated convolutions of width ``kernel_size`` (options:
    ``GatedCNNEncoderConfig``)."""
    if not causal and kernel_size % 2 == 0:
        raise ConfigError(f"kernel_size: {kernel_size} is even; a centred window needs an odd one")
    convolutions = [nn.Conv1d(hidden_size, 2 * hidden_size, kernel_size) for _ in range(num_layers)]
    return GatedCNNEncoder(convolutions, kernel_size, causal, block_size, dropout)

"""Speech as tokens (Speech2Text, TencentPretrain's ``speech`` embedding) and its positions.

The ``speech`` part turns log-mel filterbank frames ``[b, frames, num_mel_bins]`` (computed by
``pretrainkit.data.audio``) into a shorter sequence ``[b, frames', size]``: one strided 1-D
convolution per kernel size, each followed by a gated linear unit, halves the frame rate every
time. The encoder then needs the padding mask of that shorter sequence; the part computes it from
the frame-level mask with the same arithmetic as the convolutions (``output_mask``), which
``Embedding.output_mask`` and ``Model.encoder_mask`` pass on, so the model itself stays generic.

``sinusoidal_fairseq`` is the fixed position table Speech2Text (fairseq) adds to both stacks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pretrainkit.embeddings.embedding import EMBEDDING_PARTS

STRIDE = 2  # every convolution halves the frame rate


@EMBEDDING_PARTS.register("speech")
class SpeechEmbedding(nn.Module):
    """Log-mel frames → vectors: strided Conv1d + GLU layers (Speech2Text's subsampler).

    Every layer but the last widens to ``conv_channels`` (halved again by its GLU); the last
    produces ``2 * size`` channels, which its GLU halves to the model width. Padding of
    ``kernel // 2`` frames on both sides keeps ``frames' = ceil(frames / 2)`` per layer. As in
    Speech2Text, the last real output frames of a padded row see some of its padding frames
    through the kernels, so a row's output depends slightly on how it was padded.

    Args:
        size: width of the output vectors.
        num_mel_bins: features per frame.
        conv_channels: output channels of every layer but the last (even: the GLU halves them).
        conv_kernel_sizes: one odd kernel size per layer.
    """

    def __init__(
        self,
        size: int,
        num_mel_bins: int | None = None,
        conv_channels: int = 1024,
        conv_kernel_sizes: Sequence[int] = (5, 5),
        **_: object,
    ):
        super().__init__()
        if num_mel_bins is None:
            raise ValueError("the speech part needs num_mel_bins")
        if not conv_kernel_sizes or any(k < 1 or k % 2 == 0 for k in conv_kernel_sizes):
            # An even kernel would make the output one frame longer than the mask arithmetic.
            raise ValueError(f"conv_kernel_sizes must be odd, got {list(conv_kernel_sizes)}")
        if conv_channels < 2 or conv_channels % 2:
            raise ValueError(f"conv_channels must be even (a GLU halves it), got {conv_channels}")
        self.num_mel_bins = num_mel_bins
        self.kernel_sizes = tuple(conv_kernel_sizes)
        last = len(conv_kernel_sizes) - 1
        self.convolutions = nn.ModuleList(
            nn.Conv1d(
                num_mel_bins if i == 0 else conv_channels // 2,
                2 * size if i == last else conv_channels,
                kernel_size=kernel,
                stride=STRIDE,
                padding=kernel // 2,
            )
            for i, kernel in enumerate(conv_kernel_sizes)
        )

    def forward(
        self, features: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        if features.dim() != 3 or features.shape[-1] != self.num_mel_bins:
            raise ValueError(
                f"expected input features [batch, frames, {self.num_mel_bins}], "
                f"got {tuple(features.shape)}"
            )
        dtype = next(self.parameters()).dtype
        x = features.to(dtype).transpose(1, 2)  # [b, mel, frames]: Conv1d slides on time
        for convolution in self.convolutions:
            x = nn.functional.glu(convolution(x), dim=1)  # [b, channels, frames / 2]
        return x.transpose(1, 2)  # [b, frames', size]

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames after the convolutions for ``lengths`` input frames (any integer tensor)."""
        for kernel in self.kernel_sizes:
            padded = lengths + 2 * (kernel // 2) - kernel  # Conv1d's length arithmetic
            lengths = torch.div(padded, STRIDE, rounding_mode="floor") + 1
        return lengths

    def output_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The padding mask ``[b, frames']`` of the output for a frame mask ``[b, frames]``.

        The frames of a row are its first ``attention_mask.sum()`` ones (right padding), as in
        HF's ``_get_feature_vector_attention_mask``; the result has the mask's dtype.
        """
        if attention_mask.dim() != 2:
            raise ValueError(
                f"expected a frame mask [batch, frames], got {tuple(attention_mask.shape)}"
            )
        width = int(self.output_lengths(torch.tensor(attention_mask.shape[1])))
        lengths = self.output_lengths(attention_mask.long().sum(-1))  # [b]
        steps = torch.arange(width, device=attention_mask.device)
        return (steps[None] < lengths[:, None]).to(attention_mask.dtype)  # [b, frames']


@EMBEDDING_PARTS.register("sinusoidal_fairseq")
class FairseqSinusoidalPositionEmbedding(nn.Module):
    """Fixed positions as fairseq and Speech2Text compute them; nothing to learn.

    Sines of every frequency in the first half, cosines in the second, frequencies
    ``10000 ** (-i / (size / 2 - 1))`` (not the Transformer's ``2i / size``: see
    ``sinusoidal_halves``). HF numbers real positions from ``pad_token_id + 1``; the config's
    ``position_offset`` says so. HF gives padding slots a zero vector instead; here they get
    their position's row, and as they are masked out of attention no real position changes.
    """

    table: torch.Tensor

    def __init__(self, max_positions: int, size: int, **_: object):
        super().__init__()
        if size < 4:
            raise ValueError(f"sinusoidal_fairseq needs a width of at least 4, got {size}")
        half = size // 2
        # float32 and the same operations as HF, so the table is bit for bit theirs: HF computes
        # it on the fly and never stores it, hence a non-persistent buffer here too.
        step = math.log(10000) / (half - 1)
        frequencies = torch.exp(torch.arange(half, dtype=torch.int64).float() * -step)
        angles = torch.arange(max_positions, dtype=torch.int64).float().unsqueeze(1)
        angles = angles * frequencies.unsqueeze(0)  # [n, size / 2]
        table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
        if size % 2:
            table = torch.cat([table, torch.zeros(max_positions, 1)], dim=1)
        self.register_buffer("table", table, persistent=False)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        if positions.numel() and int(positions.max()) >= self.table.shape[0]:
            raise ValueError(
                f"position {int(positions.max())} exceeds max_positions {self.table.shape[0]} "
                "of the sinusoidal table"
            )
        out = self.table[positions]
        return out[None] if positions.dim() == 1 else out

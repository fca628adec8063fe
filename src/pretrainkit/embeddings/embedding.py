"""Embedding parts (word, positions, segment) summed into one embedding module."""

from __future__ import annotations

import math

import torch
from torch import nn

from pretrainkit.errors import ConfigError
from pretrainkit.layers.norms import make_norm
from pretrainkit.registry import Registry

EMBEDDING_PARTS: Registry[type[nn.Module]] = Registry("embedding part")


@EMBEDDING_PARTS.register("word")
class WordEmbedding(nn.Module):
    def __init__(self, vocab_size: int, size: int, **_: object):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, size))

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        return nn.functional.embedding(input_ids, self.weight)


@EMBEDDING_PARTS.register("position")
class LearnedPositionEmbedding(nn.Module):
    def __init__(self, max_positions: int, size: int, **_: object):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_positions, size))

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        if positions.numel() and int(positions.max()) >= self.weight.shape[0]:
            raise ValueError(
                f"sequence of length {positions.shape[-1]} exceeds max_positions "
                f"{self.weight.shape[0]} of the position embedding"
            )
        out = nn.functional.embedding(positions, self.weight)
        # Shared positions [s] broadcast over the batch; per-row positions [b, s] already have it.
        return out[None] if positions.dim() == 1 else out


@EMBEDDING_PARTS.register("sinusoidal")
class SinusoidalPositionEmbedding(nn.Module):
    """Fixed sine/cosine positions (Transformer, 2017); nothing to learn.

    Sines and cosines of the same frequency interleave (dims 0, 2, 4 … sine; 1, 3, 5 … cosine).
    """

    table: torch.Tensor
    interleaved = True

    def __init__(self, max_positions: int, size: int, **_: object):
        super().__init__()
        # Angles in float64: at position 500 a float32 product is off by ~3e-5 radians, which
        # would show in parity with checkpoints whose tables were computed in float64.
        position = torch.arange(max_positions, dtype=torch.float64)[:, None]
        half = (size + 1) // 2
        freq = 10000.0 ** (-torch.arange(half, dtype=torch.float64) * 2 / size)
        angles = position * freq  # [n, ceil(size / 2)]
        table = torch.zeros(max_positions, size, dtype=torch.float64)
        if self.interleaved:
            table[:, 0::2] = torch.sin(angles)
            table[:, 1::2] = torch.cos(angles)[:, : size // 2]
        else:
            table[:, :half] = torch.sin(angles)
            table[:, half:] = torch.cos(angles)[:, : size // 2]
        # Saved with the weights although it is computed: checkpoints that store theirs
        # (PEGASUS) then convert bit for bit, and a saved model never depends on this code.
        self.register_buffer("table", table.float())

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


@EMBEDDING_PARTS.register("sinusoidal_halves")
class SinusoidalHalvesPositionEmbedding(SinusoidalPositionEmbedding):
    """Sines of every frequency in the first half, cosines in the second (tensor2tensor,
    PEGASUS); the frequencies are the Transformer's."""

    interleaved = False


@EMBEDDING_PARTS.register("patch")
class PatchEmbedding(nn.Module):
    """Images as tokens (ViT): non-overlapping patches projected by a strided convolution, behind
    a learned [CLS] vector. ``[b, channels, image_size, image_size]`` → ``[b, 1 + patches, size]``.
    """

    def __init__(
        self,
        size: int,
        image_size: int | None = None,
        patch_size: int | None = None,
        channels: int = 3,
        mask_patches: bool = False,
        **_: object,
    ):
        super().__init__()
        if image_size is None or patch_size is None:
            raise ValueError("the patch part needs image_size and patch_size")
        self.image_size = image_size
        self.projection = nn.Conv2d(channels, size, kernel_size=patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.empty(1, size).normal_(std=0.02))
        # Masked-patch pre-training (SimMIM/BEiT): one learned vector stands in for every masked
        # patch, so the encoder sees where a patch is missing but nothing of its pixels. Only
        # built when asked for: HF ViT checkpoints have none, and conversion is key for key.
        self.mask = nn.Parameter(torch.zeros(1, size)) if mask_patches else None

    def mask_patches(self, x: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``[b, 1 + patches, size]`` with the patches where ``patch_mask`` ``[b, patches]``
        is true replaced by the mask vector ([CLS] is never masked)."""
        if self.mask is None:
            raise ConfigError(
                "patch_mask given, but this patch embedding has no mask vector; build the model "
                "with embedding.mask_patches: true"
            )
        if tuple(patch_mask.shape) != (x.shape[0], x.shape[1] - 1):
            raise ValueError(
                f"patch_mask must be [batch, {x.shape[1] - 1}], got {tuple(patch_mask.shape)}"
            )
        keep = ~patch_mask.bool()[..., None]  # [b, patches, 1]
        patches = torch.where(keep, x[:, 1:], self.mask.to(x.dtype))  # [b, patches, size]
        return torch.cat((x[:, :1], patches), dim=1)

    def forward(
        self, pixels: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        expected = (self.projection.in_channels, self.image_size, self.image_size)
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(
                f"expected pixel values [batch, {expected[0]}, {expected[1]}, {expected[2]}], "
                f"got {tuple(pixels.shape)}"
            )
        patches = self.projection(pixels.to(self.projection.weight.dtype))  # [b, size, h', w']
        patches = patches.flatten(2).transpose(1, 2)  # [b, patches, size], row by row
        return torch.cat((self.cls.expand(len(pixels), 1, -1), patches), dim=1)


# The part that turns the input into a sequence (``speech`` lives in embeddings/speech.py).
TOKEN_PARTS = ("word", "patch", "speech")


@EMBEDDING_PARTS.register("segment")
class SegmentEmbedding(nn.Module):
    def __init__(self, num_segments: int, size: int, **_: object):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_segments, size))

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        return nn.functional.embedding(token_type_ids, self.weight)


class Embedding(nn.Module):
    """Sum of parts → optional norm → dropout → optional projection up to the hidden size.

    Args:
        parts: named part modules, summed in order; ``word`` must be among them.
        norm: applied to the sum (None = no norm).
        dropout: dropout probability after the norm.
        project: ALBERT's factorised embedding, a linear from the part size to hidden.
    """

    def __init__(
        self,
        parts: dict[str, nn.Module],
        norm: nn.Module | None,
        dropout: float,
        project: nn.Module | None = None,
        position_offset: int = 0,
        word_scale: float = 1.0,
    ):
        super().__init__()
        tokens = [name for name in parts if name in TOKEN_PARTS]
        if len(tokens) != 1:
            raise ValueError(f"the embedding needs one of {TOKEN_PARTS}, got {list(parts)}")
        self.token_part = tokens[0]
        self.parts = nn.ModuleDict(parts)
        self.norm = norm
        self.dropout = nn.Dropout(dropout)
        self.project = project
        self.position_offset = position_offset
        self.word_scale = word_scale

    @property
    def word_weight(self) -> nn.Parameter:
        weight = self.parts["word"].weight
        assert isinstance(weight, nn.Parameter)
        return weight

    def output_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The padding mask of the output sequence for the input's ``attention_mask``: the same,
        unless the token part shortens its input and says how (``speech``: strided convolutions).
        """
        shorten = getattr(self.parts[self.token_part], "output_mask", None)
        if attention_mask is None or shorten is None:
            return attention_mask
        return shorten(attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        patch_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed ``input_ids`` ``[b, s]`` (or images, for a ``patch`` part) into ``[b, s, h]``.

        Args:
            input_ids: token ids ``[b, s]``, or pixel values ``[b, c, H, W]`` for ``patch``, or
                log-mel features ``[b, frames, num_mel_bins]`` for ``speech``.
            token_type_ids: segment ids ``[b, s]``; None = all zeros.
            positions: 0-based positions ``[s]`` or per row ``[b, s]`` (cached generation and
                left-padded prompts); None = ``0 .. s-1``. ``position_offset`` is added either way.
            patch_mask: ``patch`` part with ``mask_patches``: ``[b, patches]``, true where a patch
                is replaced by the mask vector before positions are added (masked-patch
                pre-training).
        """
        # The token part (word ids or image patches) fixes the sequence; the others add to it.
        x = self.parts[self.token_part](input_ids, token_type_ids, positions)
        if patch_mask is not None:
            if self.token_part != "patch":
                raise ConfigError("patch_mask is for models with a 'patch' embedding part")
            x = self.parts["patch"].mask_patches(x, patch_mask)  # type: ignore[operator]
        if self.token_part in ("word", "speech") and self.word_scale != 1.0:
            x = x * self.word_scale
        length = x.shape[1]
        if token_type_ids is None:
            token_type_ids = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        if positions is None:
            positions = torch.arange(length, device=x.device)
        if self.position_offset:
            positions = positions + self.position_offset
        for name, part in self.parts.items():
            if name != self.token_part:
                x = x + part(input_ids, token_type_ids, positions)
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        if self.project is not None:
            x = self.project(x)
        return x  # [b, s, h]


def build_embedding(
    vocab_size: int,
    hidden_size: int,
    parts: list[str],
    max_positions: int,
    num_segments: int,
    factorized_size: int | None,
    layer_norm: bool,
    norm: str,
    norm_eps: float,
    dropout: float,
    position_offset: int = 0,
    scale_word: bool = False,
    image_size: int | None = None,
    patch_size: int | None = None,
    channels: int = 3,
    num_mel_bins: int | None = None,
    conv_channels: int = 1024,
    conv_kernel_sizes: tuple[int, ...] = (5, 5),
    mask_patches: bool = False,
) -> Embedding:
    size = factorized_size or hidden_size
    modules = {
        name: EMBEDDING_PARTS.get(name)(
            vocab_size=vocab_size,
            max_positions=max_positions,
            num_segments=num_segments,
            size=size,
            image_size=image_size,
            patch_size=patch_size,
            channels=channels,
            num_mel_bins=num_mel_bins,
            conv_channels=conv_channels,
            conv_kernel_sizes=conv_kernel_sizes,
            mask_patches=mask_patches,
        )
        for name in parts
    }
    if not any(name in TOKEN_PARTS for name in parts):
        raise ConfigError(
            f"embedding.parts: one of {', '.join(TOKEN_PARTS)} is needed, got {parts}"
        )
    project = nn.Linear(size, hidden_size) if factorized_size else None
    return Embedding(
        modules,
        make_norm(norm, size, norm_eps) if layer_norm else None,
        dropout,
        project,
        position_offset,
        math.sqrt(size) if scale_word else 1.0,
    )

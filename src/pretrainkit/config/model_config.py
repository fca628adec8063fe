"""The typed model configuration: one section per slot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pretrainkit.config.encoder_options import (
    ENCODER_OPTIONS,
    NORMS,
    DecoderConfig,
    EncoderConfig,
    EncoderSection,
    GatedCNNEncoderConfig,
    RNNEncoderConfig,
    encoder_options,
)
from pretrainkit.config.typed import (
    check_choice,
    check_range,
    from_dict,
    read_yaml_file,
    to_dict,
)
from pretrainkit.errors import ConfigError, closest

INITS = ("bert", "t5")


@dataclass
class EmbeddingConfig:
    """Embedding slot: the listed parts are summed, then optionally normalised and dropped out."""

    parts: list[str] = field(default_factory=lambda: ["word", "position", "segment"])
    max_positions: int = 512
    # Added to every position index before the table lookup. RoBERTa's table starts real tokens
    # at padding_idx + 1 = 2; keeping its rows 0-1 (and this offset) makes import/export exact.
    position_offset: int = 0
    num_segments: int = 2
    # ALBERT's factorised embedding: parts live in this smaller size, a linear maps up to hidden.
    factorized_size: int | None = None
    # Multiply word vectors by sqrt(width) before the sum (Transformer, BART with
    # scale_embedding, PEGASUS).
    scale_word: bool = False
    # Images (the "patch" part, ViT): square images of image_size pixels cut into
    # patch_size x patch_size patches, each a token, behind a learned [CLS] vector.
    image_size: int | None = None
    patch_size: int | None = None
    channels: int = 3
    # A learned vector that replaces masked patches (objective masked_patch; patch part only).
    mask_patches: bool = False
    # Speech (the "speech" part, Speech2Text): log-mel frames of num_mel_bins features pass one
    # strided Conv1d + GLU per (odd) kernel size, each halving the frame rate; conv_channels is
    # the width between them (even: the GLU halves it).
    num_mel_bins: int | None = None
    conv_channels: int = 1024
    conv_kernel_sizes: list[int] = field(default_factory=lambda: [5, 5])
    layer_norm: bool = True
    norm: str = "layernorm"
    norm_eps: float = 1e-12
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_choice(self.norm, NORMS, "norm")
        check_range(self.dropout, "dropout", 0.0, 1.0)
        check_range(self.max_positions, "max_positions", 1)
        check_range(self.position_offset, "position_offset", 0, self.max_positions - 1)
        check_range(self.norm_eps, "norm_eps", 0.0)
        if "segment" in self.parts:
            check_range(self.num_segments, "num_segments", 1)
        if self.factorized_size is not None:
            check_range(self.factorized_size, "factorized_size", 1)
        if not self.parts:
            raise ConfigError("parts: at least one embedding part is needed")
        # None at all is reported by the builder, which knows every part name (and suggests).
        if len([p for p in self.parts if p in ("word", "patch", "speech")]) > 1:
            raise ConfigError(
                f"parts: exactly one of 'word' (token ids) or 'patch' (images) or 'speech' "
                f"(audio frames) is needed, got {self.parts}"
            )
        if "speech" in self.parts:
            if self.num_mel_bins is None:
                raise ConfigError("the 'speech' part needs num_mel_bins (features per frame)")
            check_range(self.num_mel_bins, "num_mel_bins", 1)
            check_range(self.conv_channels, "conv_channels", 2)
            if self.conv_channels % 2:
                raise ConfigError(f"conv_channels ({self.conv_channels}) must be even")
            kernels = self.conv_kernel_sizes
            if not kernels or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernels):
                # Even kernels change the output length the frame mask arithmetic assumes.
                raise ConfigError(
                    f"conv_kernel_sizes: one odd kernel size per convolution, got {kernels}"
                )
        if self.mask_patches and "patch" not in self.parts:
            raise ConfigError("mask_patches needs the 'patch' embedding part (images)")
        if "patch" in self.parts:
            if self.image_size is None or self.patch_size is None:
                raise ConfigError("the 'patch' part needs image_size and patch_size")
            check_range(self.image_size, "image_size", 1)
            check_range(self.patch_size, "patch_size", 1)
            check_range(self.channels, "channels", 1)
            if self.image_size % self.patch_size:
                raise ConfigError(
                    f"image_size ({self.image_size}) must be a multiple of patch_size "
                    f"({self.patch_size})"
                )
            tokens_per_image = (self.image_size // self.patch_size) ** 2 + 1
            if self.max_positions < tokens_per_image:
                raise ConfigError(
                    f"max_positions ({self.max_positions}) < {tokens_per_image}, the patches of "
                    "one image plus [CLS]"
                )


@dataclass
class TargetConfig:
    """Target slot entry: a registered target name plus its keyword arguments."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """A whole model: shared sizes plus one section per slot."""

    hidden_size: int
    # Token ids the word part embeds; 0 for models without one (ViT reads pixels).
    vocab_size: int = 0
    name: str = "custom"
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    # The options of the encoder it names (EncoderConfig for the transformer).
    encoder: EncoderSection = field(default_factory=EncoderConfig)
    # Sequence-to-sequence models (T5, BART, PEGASUS) add both; encoder-only and decoder-only
    # models (a causal `encoder`) leave them out.
    tgt_embedding: EmbeddingConfig | None = None
    decoder: DecoderConfig | None = None
    # The target embedding's word table is the source one (one copy; T5, BART, PEGASUS).
    share_embedding: bool = True
    targets: list[TargetConfig] = field(default_factory=list)
    # How build_model draws fresh weights: "bert" (every matrix N(0, 0.02)) or "t5" (T5's
    # scheme: unit-variance word tables and LM head, projections scaled by their fan-in). A T5
    # shape trained from scratch with BERT's init barely moves: its tied head rescales the
    # logits by hidden^-0.5, so 0.02-sized word vectors give near-zero logits and gradients.
    init: str = "bert"

    def __post_init__(self) -> None:
        check_choice(self.init, INITS, "init")
        check_range(self.vocab_size, "vocab_size", 0)
        check_range(self.hidden_size, "hidden_size", 1)
        embeddings = [self.embedding, *([self.tgt_embedding] if self.tgt_embedding else [])]
        if self.vocab_size < 1 and any("word" in e.parts for e in embeddings):
            raise ConfigError("vocab_size: the 'word' embedding part needs vocab_size >= 1")
        transformer = self.encoder if isinstance(self.encoder, EncoderConfig) else None
        stacks = {"encoder": transformer, "decoder": self.decoder}
        for name, stack in stacks.items():
            if stack is not None and stack.head_dim is None and self.hidden_size % stack.num_heads:
                raise ConfigError(
                    f"hidden_size ({self.hidden_size}) must be divisible by "
                    f"{name}.num_heads ({stack.num_heads}), or set {name}.head_dim"
                )
        if (self.tgt_embedding is None) != (self.decoder is None):
            given = "decoder" if self.decoder is not None else "tgt_embedding"
            missing = "tgt_embedding" if self.decoder is not None else "decoder"
            raise ConfigError(f"{given} is set but {missing} is not: a seq2seq model needs both")
        encoder = self.encoder
        if isinstance(encoder, RNNEncoderConfig) and encoder.bidirectional and self.hidden_size % 2:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be even for a bidirectional "
                f"{encoder.name}: each direction has hidden_size / 2 units"
            )
        if self.decoder is not None and transformer is not None and transformer.causal:
            raise ConfigError("encoder.causal must be false when the model has a decoder")
        tgt = self.tgt_embedding
        if self.share_embedding and tgt is not None and "word" not in self.embedding.parts:
            raise ConfigError(
                "share_embedding: the source embedding has no word table to share (its input "
                "is not token ids); set share_embedding: false"
            )
        if self.share_embedding and tgt is not None and "word" in tgt.parts:
            source_size = self.embedding.factorized_size or self.hidden_size
            if (tgt.factorized_size or self.hidden_size) != source_size:
                raise ConfigError(
                    "share_embedding: the source and target word tables differ in width; "
                    "set share_embedding: false"
                )

    @property
    def is_seq2seq(self) -> bool:
        return self.decoder is not None

    @classmethod
    def from_dict(cls, data: Any, where: str = "model config") -> ModelConfig:
        if isinstance(data, dict) and isinstance(data.get("targets"), list):
            data = dict(data)
            data["targets"] = [
                _target_entry(t, f"{where}.targets[{i}]") for i, t in enumerate(data["targets"])
            ]
        if isinstance(data, dict) and "encoder" in data:
            data = {**data, "encoder": encoder_options(data["encoder"], f"{where}.encoder")}
        return from_dict(cls, data, where)

    def to_dict(self) -> dict:
        data = to_dict(self)
        if self.decoder is None:  # encoder-only and decoder-only configs stay as they were
            for key in ("tgt_embedding", "decoder", "share_embedding"):
                del data[key]
        if self.init == "bert":  # the default: configs written before the option stay the same
            del data["init"]
        data["targets"] = [{"name": t.name, **t.options} for t in self.targets]
        return data

    def save(self, path: str | Path) -> None:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        Path(path).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        return cls.from_dict(read_yaml_file(path), where=str(path))

    def encoder_only(self) -> ModelConfig:
        """A sequence-to-sequence model's embedding and encoder alone (its targets kept): the
        body of a task whose head reads the encoder, such as a classifier on T5's encoder."""
        data = self.to_dict()
        for key in ("tgt_embedding", "decoder", "share_embedding"):
            data.pop(key, None)
        return ModelConfig.from_dict(data)

    def with_targets(self, targets: list[TargetConfig]) -> ModelConfig:
        """The same model with another target: how a pre-trained model becomes a task model."""
        return ModelConfig.from_dict(
            {**self.to_dict(), "targets": [{"name": t.name, **t.options} for t in targets]}
        )


def _target_entry(entry: Any, where: str) -> dict:
    # YAML writes a target as {name: mlm, <options>...}; the options are checked by the builder
    # against the target's typed signature.
    if isinstance(entry, str):
        return {"name": entry, "options": {}}
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(f"{where}: expected a target name or a mapping with a 'name' key")
    if "options" in entry and len(entry) == 2:
        return entry
    return {"name": entry["name"], "options": {k: v for k, v in entry.items() if k != "name"}}


__all__ = [
    "EmbeddingConfig",
    "EncoderConfig",
    "RNNEncoderConfig",
    "GatedCNNEncoderConfig",
    "ENCODER_OPTIONS",
    "encoder_options",
    "DecoderConfig",
    "TargetConfig",
    "ModelConfig",
    "closest",
]

"""The encoder slot's options: one typed section per registered encoder.

``ModelConfig.encoder`` is the section of the encoder it names (``encoder_options``): the
transformer's ``EncoderConfig`` (which ``DecoderConfig`` extends), or the options of an LSTM /
GRU or gated CNN stack. A new encoder adds its options class here and to ``ENCODER_OPTIONS``:
config files are read without importing torch (the CLI's ``--help`` stays fast), so the options
cannot live beside the modules.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pretrainkit.config.typed import check_choice, check_range, from_dict
from pretrainkit.errors import ConfigError, closest

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("absolute", "rotary", "alibi", "relative", "none")


@dataclass
class EncoderConfig:
    """Encoder slot: a stack of transformer blocks."""

    name: str = "transformer"
    num_layers: int = 2
    num_heads: int = 2
    # Grouped-query attention when smaller than num_heads (must divide it).
    num_kv_heads: int | None = None
    # Width of one head; None = hidden_size / num_heads. T5 sets it (d_kv) independently.
    head_dim: int | None = None
    # Factor on query·key; None = 1/sqrt(head_dim). T5 uses 1.0 (folded into its init).
    attention_scale: float | None = None
    ffn_size: int = 512
    ffn: str = "dense"  # dense | gated (SwiGLU / GeGLU)
    activation: str = "gelu"
    norm: str = "layernorm"
    norm_position: str = "post"  # post (BERT) | pre (GPT-2, LLaMA)
    norm_eps: float = 1e-12
    position: str = "absolute"  # absolute lives in the embedding slot
    rotary_base: float = 10000.0
    relative_buckets: int = 32
    relative_max_distance: int = 128
    causal: bool = False
    share_layers: bool = False  # ALBERT: one block applied num_layers times
    # Parameter recurrence: this many distinct blocks, each applied num_layers / layer_groups
    # times in a row (HF ALBERT's hidden groups; distilled students). None = every layer its
    # own block (share_layers: true is one group).
    layer_groups: int | None = None
    bias: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.1
    # Dropout inside the feed-forward, after the activation (BART's activation_dropout, T5).
    ffn_dropout: float = 0.0
    # Norm after the last block; pre-norm stacks need it (None = on for pre-norm, off for post).
    final_norm: bool | None = None

    def __post_init__(self) -> None:
        check_choice(self.ffn, ("dense", "gated"), "ffn")
        check_choice(self.activation, ACTIVATIONS, "activation")
        check_choice(self.norm, NORMS, "norm")
        check_choice(self.norm_position, ("post", "pre"), "norm_position")
        check_choice(self.position, POSITIONS, "position")
        check_range(self.num_layers, "num_layers", 1)
        check_range(self.num_heads, "num_heads", 1)
        check_range(self.ffn_size, "ffn_size", 1)
        check_range(self.dropout, "dropout", 0.0, 1.0)
        check_range(self.attention_dropout, "attention_dropout", 0.0, 1.0)
        check_range(self.ffn_dropout, "ffn_dropout", 0.0, 1.0)
        check_range(self.norm_eps, "norm_eps", 0.0)
        check_range(self.rotary_base, "rotary_base", 1.0)
        check_range(self.relative_buckets, "relative_buckets", 1)
        check_range(self.relative_max_distance, "relative_max_distance", 1)
        groups = self.layer_groups
        if groups is not None:
            check_range(groups, "layer_groups", 1, self.num_layers)
            if self.num_layers % groups:
                raise ConfigError(
                    f"layer_groups: {groups} must divide num_layers ({self.num_layers}); every "
                    "group is applied the same number of times"
                )
            if self.share_layers and groups != 1:
                raise ConfigError(
                    f"layer_groups: {groups} contradicts share_layers: true (one shared block)"
                )
        kv = self.num_kv_heads
        if kv is not None and (kv < 1 or self.num_heads % kv):
            raise ConfigError(f"num_kv_heads: {kv} must divide num_heads ({self.num_heads})")
        if self.head_dim is not None:
            check_range(self.head_dim, "head_dim", 1)
        if self.attention_scale is not None:
            check_range(self.attention_scale, "attention_scale", 0.0)
        if self.final_norm is None:
            self.final_norm = self.norm_position == "pre"


@dataclass
class DecoderConfig(EncoderConfig):
    """Decoder slot: a causal stack whose blocks also attend to the encoder's output.

    Its input is the target sequence shifted right: ``start_id`` first, then the labels with
    ignored positions (-100) replaced by ``pad_id`` (how HF's seq2seq models build it).
    """

    causal: bool = True
    start_id: int = 0
    pad_id: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.causal:
            raise ConfigError("decoder.causal: a decoder predicts left to right; it must be true")
        check_range(self.start_id, "start_id", 0)
        check_range(self.pad_id, "pad_id", 0)


class EncoderOptionError(ConfigError, AttributeError):
    """Code written for transformer stacks asked an encoder of another kind for an option it
    does not have (an AttributeError too, so ``getattr(options, key, default)`` still works)."""


class _OtherEncoderOptions:
    """Base of the options of encoders other than the transformer.

    Much of the toolkit (conversion, SAMP, generation) reads transformer options such as
    ``config.encoder.num_heads``; asked of an LSTM, one clear error names the encoder instead of
    a bare AttributeError (and the type checker sees these reads as legal, as they are for the
    transformer).
    """

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):  # copy/pickle probes: the ordinary answer
            raise AttributeError(key)
        name = self.__dict__.get("name", type(self).__name__)
        valid = ", ".join(f.name for f in fields(self))  # type: ignore[arg-type]
        raise EncoderOptionError(
            f"encoder.{key}: the {name!r} encoder has no such option (it is a transformer "
            f"option; this needs encoder.name: transformer); its options: {valid}"
        )


@dataclass
class RNNEncoderConfig(_OtherEncoderOptions):
    """Encoder slot: a stack of LSTM or GRU layers (``name: lstm`` or ``name: gru``).

    Uni-directional stacks are causal (each position sees only earlier ones); bidirectional ones
    run hidden_size / 2 units per direction, so hidden_size must be even.
    """

    name: str = "lstm"
    num_layers: int = 1
    bidirectional: bool = False
    # Between layers, as nn.LSTM's own dropout (none after the last layer).
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_choice(self.name, ("lstm", "gru"), "name")
        check_range(self.num_layers, "num_layers", 1)
        check_range(self.dropout, "dropout", 0.0, 1.0)


@dataclass
class GatedCNNEncoderConfig(_OtherEncoderOptions):
    """Encoder slot: stacked 1-D convolutions with GLU gates (Dauphin et al. 2017).

    ``causal`` pads on the left only (each position sees the kernel_size - 1 before it, as the
    paper's language model); otherwise the window is centred, which needs an odd kernel_size.
    """

    name: str = "gatedcnn"
    num_layers: int = 2
    kernel_size: int = 3
    # A residual connection around every block_size convolutions.
    block_size: int = 1
    causal: bool = False
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_choice(self.name, ("gatedcnn",), "name")
        check_range(self.num_layers, "num_layers", 1)
        check_range(self.kernel_size, "kernel_size", 1)
        check_range(self.block_size, "block_size", 1, self.num_layers)
        check_range(self.dropout, "dropout", 0.0, 1.0)
        if not self.causal and self.kernel_size % 2 == 0:
            raise ConfigError(
                f"kernel_size: {self.kernel_size} is even; a centred (causal: false) window "
                "needs an odd kernel_size"
            )


EncoderSection = EncoderConfig | RNNEncoderConfig | GatedCNNEncoderConfig
# Each encoder name and the dataclass of its options.
ENCODER_OPTIONS: dict[str, type[EncoderSection]] = {
    "transformer": EncoderConfig,
    "lstm": RNNEncoderConfig,
    "gru": RNNEncoderConfig,
    "gatedcnn": GatedCNNEncoderConfig,
}


def encoder_options(data: Any, where: str) -> EncoderSection:
    """The encoder section ``data`` checked against the options of the encoder it names
    (``name``, default transformer): unknown keys are errors with a suggestion."""
    if not isinstance(data, dict):
        return from_dict(EncoderConfig, data, where)  # an instance, or the usual type error
    name = data.get("name", "transformer")
    if not isinstance(name, str) or name not in ENCODER_OPTIONS:
        raise ConfigError(
            f"{where}.name: unknown encoder {name!r}{closest(str(name), ENCODER_OPTIONS)}; "
            f"valid choices: {', '.join(ENCODER_OPTIONS)}"
        )
    cls = ENCODER_OPTIONS[name]
    try:
        return from_dict(cls, data, where)
    except ConfigError as error:
        transformer_only = set(data) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if cls is EncoderConfig or not transformer_only <= {f.name for f in fields(EncoderConfig)}:
            raise
        # A dotted override (--model.encoder.name lstm) keeps the preset's transformer keys.
        raise ConfigError(
            f"{error}; to switch a preset to the {name!r} encoder give the whole section, "
            f"e.g. --model.encoder '{{name: {name}}}'"
        ) from None

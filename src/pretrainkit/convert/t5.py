"""T5 (v1.0: dense ReLU feed-forward, tied and rescaled LM head; v1.1: gated-GELU, untied).

Tying and the v1.0 rescaling are two settings, as in transformers 5 (``scale_decoder_outputs``;
transformers 4 derived the scaling from ``tie_word_embeddings``): ``complete_config`` reads
either form, and export writes both flags.

Pre-RMSNorm encoder and decoder without biases, query·key unscaled (T5 folds the factor into its
initialisation: ``attention_scale: 1.0``), one learned relative-position bias per stack kept in
its first block, and one word table shared by both stacks and, in v1.0, the LM head.
"""

from __future__ import annotations

from typing import Any

from pretrainkit.config import ModelConfig, TargetConfig
from pretrainkit.convert import common
from pretrainkit.convert.spec import Family, Head, KeyMap, need, register

ENC = "encoder.layers.{i}"
DEC = "decoder.layers.{j}"


def _attention(ours: str, hf: str) -> KeyMap:
    return tuple(
        (f"{ours}.{mine}.weight", f"{hf}.{theirs}.weight")
        for mine, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("output", "o"))
    )


def _ffn(ours: str, hf: str, gated: bool) -> KeyMap:
    names = (("gate", "wi_0"), ("up", "wi_1")) if gated else (("up", "wi"),)
    return tuple(
        (f"{ours}.{mine}.weight", f"{hf}.{theirs}.weight")
        for mine, theirs in (*names, ("down", "wo"))
    )


def body(config: ModelConfig) -> KeyMap:
    """Tensor names of T5's body; the feed-forward's depend on dense or gated."""
    gated = config.encoder.ffn == "gated"
    bias = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    keys: KeyMap = (
        ("embedding.parts.word.weight", "shared.weight"),
        ("encoder.relative_bias.bias.weight", f"encoder.{bias}"),
        *_attention(f"{ENC}.attention", "encoder.block.{i}.layer.0.SelfAttention"),
        (f"{ENC}.attention_norm.weight", "encoder.block.{i}.layer.0.layer_norm.weight"),
        *_ffn(f"{ENC}.feed_forward", "encoder.block.{i}.layer.1.DenseReluDense", gated),
        (f"{ENC}.ffn_norm.weight", "encoder.block.{i}.layer.1.layer_norm.weight"),
        ("encoder.final_norm.weight", "encoder.final_layer_norm.weight"),
    )
    if config.decoder is None:
        return keys
    return keys + (
        ("decoder.relative_bias.bias.weight", f"decoder.{bias}"),
        *_attention(f"{DEC}.attention", "decoder.block.{j}.layer.0.SelfAttention"),
        (f"{DEC}.attention_norm.weight", "decoder.block.{j}.layer.0.layer_norm.weight"),
        *_attention(f"{DEC}.cross_attention", "decoder.block.{j}.layer.1.EncDecAttention"),
        (f"{DEC}.cross_norm.weight", "decoder.block.{j}.layer.1.layer_norm.weight"),
        *_ffn(f"{DEC}.feed_forward", "decoder.block.{j}.layer.2.DenseReluDense", gated),
        (f"{DEC}.ffn_norm.weight", "decoder.block.{j}.layer.2.layer_norm.weight"),
        ("decoder.final_norm.weight", "decoder.final_layer_norm.weight"),
    )


# Copies of `shared` that older checkpoints store; checked equal on import, never written.
EMBED_COPIES = (
    ("encoder.embed_tokens.weight", "shared.weight"),
    ("decoder.embed_tokens.weight", "shared.weight"),
)
HEADS = (
    Head("T5Model", (), tied=EMBED_COPIES),
    Head(
        "T5ForConditionalGeneration",
        ("seq2seq_lm",),
        keys=(("targets.seq2seq_lm.decoder.weight", "lm_head.weight"),),
        tied=(("lm_head.weight", "shared.weight"), *EMBED_COPIES),
    ),
)
# A cross-attention bias some old checkpoints carry; T5 never uses it.
IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
REQUIRED = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")


def _feed_forward(hf: dict[str, Any]) -> tuple[str, str]:
    """(dense | gated, our activation) from ``feed_forward_proj`` (``relu``, ``gated-gelu``)."""
    proj = str(hf.get("feed_forward_proj", "relu"))
    parts = proj.split("-")
    need(
        len(parts) == 1 or (len(parts) == 2 and parts[0] == "gated"),
        f"feed_forward_proj {proj!r}: expected ACT or gated-ACT",
    )
    # HF reads gated-gelu as the tanh approximation (gelu_new), for compatibility with v1.1.
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    return ("gated" if len(parts) == 2 else "dense"), common.activation_from_hf(act)


def _stack(hf: dict[str, Any], layers: int, causal: bool) -> dict[str, Any]:
    ffn, activation = _feed_forward(hf)
    dropout = hf.get("dropout_rate", 0.1)
    return {
        "num_layers": layers,
        "num_heads": hf["num_heads"],
        "head_dim": hf["d_kv"],
        "attention_scale": 1.0,
        "ffn_size": hf["d_ff"],
        "ffn": ffn,
        "activation": activation,
        "norm": "rmsnorm",
        "norm_position": "pre",
        "norm_eps": hf.get("layer_norm_epsilon", 1e-6),
        "position": "relative",
        "relative_buckets": hf.get("relative_attention_num_buckets", 32),
        "relative_max_distance": hf.get("relative_attention_max_distance", 128),
        "causal": causal,
        "bias": False,
        "dropout": dropout,
        "attention_dropout": dropout,
        "ffn_dropout": dropout,  # DenseReluDense drops out after its activation
        "final_norm": True,
    }


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """Our model config (no targets) for a HF T5 config.json."""
    missing = [key for key in REQUIRED if key not in hf]
    need(not missing, f"config.json lacks {', '.join(missing)}")
    embedding = {
        "parts": ["word"],
        # No position table (relative bias); the length generation may run to.
        "max_positions": hf.get("n_positions", 512),
        "layer_norm": False,
        "dropout": hf.get("dropout_rate", 0.1),
    }
    decoder_layers = hf.get("num_decoder_layers") or hf["num_layers"]
    return {
        "name": "t5",
        "vocab_size": hf["vocab_size"],
        "hidden_size": hf["d_model"],
        "embedding": embedding,
        "encoder": _stack(hf, hf["num_layers"], causal=False),
        "tgt_embedding": dict(embedding),
        "decoder": {
            **_stack(hf, decoder_layers, causal=True),
            "start_id": hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)) or 0,
            "pad_id": hf.get("pad_token_id", 0) or 0,
        },
        "share_embedding": True,
    }


def complete_config(hf: dict[str, Any]) -> dict[str, Any]:
    """What transformers 5 reads a T5 config.json as: the v1.0 output scaling is its own flag
    (transformers 4 wrote only ``tie_word_embeddings`` and scaled exactly when tied), and the
    head is tied unless the file holds an ``lm_head`` of its own (which the converter then
    finds different from ``shared`` and unties)."""
    scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
    return {**hf, "scale_decoder_outputs": bool(scaled), "tie_word_embeddings": True}


def target_from_hf(name: str, hf: dict[str, Any]) -> dict[str, Any]:
    need(name == "seq2seq_lm", f"target {name!r} has no T5 head")
    tied = bool(hf.get("tie_word_embeddings", True))
    scaled = bool(hf.get("scale_decoder_outputs", tied))
    return {"bias": False, "tied": tied, "scale": hf["d_model"] ** -0.5 if scaled else 1.0}


def target_to_hf(entry: TargetConfig, config: ModelConfig) -> dict[str, Any]:
    """Tying and scaling as two flags: v1.0 has both, v1.1 neither, and transformers 5 reads
    the mixtures too (a v1.1 built from its config is tied, a v1.0 head may be fine-tuned
    apart). transformers 4 reads only the first two right: it scales exactly when tied."""
    options = common.target_options(entry)
    need(not options["bias"], "target seq2seq_lm cannot be written to T5 with bias: true")
    rescaled = config.hidden_size**-0.5
    tied, scale = bool(options["tied"]), float(options["scale"])
    scaled = abs(scale - rescaled) <= 1e-12 * rescaled
    need(
        scaled or scale == 1.0,
        f"target seq2seq_lm: T5 scales the decoder output by d_model ** -0.5 ({rescaled!r}) or "
        f"not at all (1.0); got scale {scale!r}",
    )
    return {"tie_word_embeddings": tied, "scale_decoder_outputs": scaled}


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """HF T5 config keys; refuses what T5 cannot compute."""
    enc, dec, emb, tgt = config.encoder, config.decoder, config.embedding, config.tgt_embedding
    need(dec is not None and tgt is not None, "T5 is an encoder-decoder; this model has no decoder")
    assert dec is not None and tgt is not None
    expected = {
        "name": "transformer",
        "norm": "rmsnorm",
        "norm_position": "pre",
        "position": "relative",
        "bias": False,
        "attention_scale": 1.0,
        "share_layers": False,
        "final_norm": True,
    }
    checks: dict[str, tuple[Any, Any]] = {
        "embedding.parts": (emb.parts, ["word"]),
        "embedding.layer_norm": (emb.layer_norm, False),
        "embedding.scale_word": (emb.scale_word, False),
        "embedding.factorized_size": (emb.factorized_size, None),
        "tgt_embedding.parts": (tgt.parts, ["word"]),
        "tgt_embedding.layer_norm": (tgt.layer_norm, False),
        "tgt_embedding.scale_word": (tgt.scale_word, False),
        "share_embedding": (config.share_embedding, True),
        "encoder.causal": (enc.causal, False),
    }
    for name, stack in (("encoder", enc), ("decoder", dec)):
        checks.update({f"{name}.{k}": (getattr(stack, k), v) for k, v in expected.items()})
        checks[f"{name}.num_kv_heads"] = (stack.num_kv_heads or stack.num_heads, stack.num_heads)
    # One set of sizes for both stacks in T5's config.
    for key in ("num_heads", "head_dim", "ffn_size", "ffn", "activation", "norm_eps"):
        checks[f"decoder.{key}"] = (getattr(dec, key), getattr(enc, key))
    for key in ("relative_buckets", "relative_max_distance"):
        checks[f"decoder.{key}"] = (getattr(dec, key), getattr(enc, key))
    common.refuse_mismatches(checks, "t5")
    need(
        enc.activation in common.ACTIVATIONS_TO_HF, f"activation {enc.activation!r} has no HF name"
    )
    act = common.ACTIVATIONS_TO_HF[enc.activation]
    if enc.ffn == "gated":
        need(enc.activation != "gelu", "T5 reads gated-gelu as the tanh GELU; use gelu_tanh")
        act = "gelu" if enc.activation == "gelu_tanh" else act
    return {
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.hidden_size,
        "d_kv": enc.head_dim or config.hidden_size // enc.num_heads,
        "d_ff": enc.ffn_size,
        "num_layers": enc.num_layers,
        "num_decoder_layers": dec.num_layers,
        "num_heads": enc.num_heads,
        "relative_attention_num_buckets": enc.relative_buckets,
        "relative_attention_max_distance": enc.relative_max_distance,
        "dropout_rate": enc.dropout,
        "layer_norm_epsilon": enc.norm_eps,
        "feed_forward_proj": f"gated-{act}" if enc.ffn == "gated" else act,
        "is_encoder_decoder": True,
        "pad_token_id": dec.pad_id,
        "decoder_start_token_id": dec.start_id,
        "tie_word_embeddings": True,
    }


register(
    Family(
        model_type="t5",
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        target_from_hf=target_from_hf,
        target_to_hf=target_to_hf,
        body=body,
        heads=HEADS,
        unsupported=(
            "T5EncoderModel",
            "T5ForSequenceClassification",
            "T5ForTokenClassification",
            "T5ForQuestionAnswering",
        ),
        ignored=IGNORED,
        tokenizer_class="T5TokenizerFast",
        complete_config=complete_config,
    )
)

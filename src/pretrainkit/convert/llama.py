"""LLaMA: pre-RMSNorm causal decoder with rotary positions, a gated SiLU FFN and GQA.

HF keeps q/k projections in the rotate-half layout our ``apply_rotary`` uses (checked
numerically by the parity test), so every tensor maps one to one, untransformed.
"""

from __future__ import annotations

from typing import Any

from pretrainkit.config import ModelConfig
from pretrainkit.convert import common
from pretrainkit.convert.spec import Family, Head, need, params, register

LAYER = "encoder.layers.{i}"
BODY = (
    ("embedding.parts.word.weight", "embed_tokens.weight"),
    *params(
        (f"{LAYER}.attention.query", "layers.{i}.self_attn.q_proj"),
        (f"{LAYER}.attention.key", "layers.{i}.self_attn.k_proj"),
        (f"{LAYER}.attention.value", "layers.{i}.self_attn.v_proj"),
        (f"{LAYER}.attention.output", "layers.{i}.self_attn.o_proj"),
        (f"{LAYER}.feed_forward.gate", "layers.{i}.mlp.gate_proj"),
        (f"{LAYER}.feed_forward.up", "layers.{i}.mlp.up_proj"),
        (f"{LAYER}.feed_forward.down", "layers.{i}.mlp.down_proj"),
        (f"{LAYER}.attention_norm", "layers.{i}.input_layernorm"),
        (f"{LAYER}.ffn_norm", "layers.{i}.post_attention_layernorm"),
        ("encoder.final_norm", "norm"),
        kinds=("weight",),  # no biases anywhere (attention_bias and mlp_bias are refused)
    ),
)
# Rotary frequencies older checkpoints saved; recomputed from rope_theta.
IGNORED = ("layers.{i}.self_attn.rotary_emb.inv_freq",)
HEADS = (
    Head("LlamaModel", ()),
    Head(
        "LlamaForCausalLM",
        ("lm",),
        "model.",
        # Dropped by the converter when the head is tied to the word embedding.
        (("targets.lm.decoder.weight", "lm_head.weight"),),
        tied=(("lm_head.weight", "model.embed_tokens.weight"),),
    ),
)
REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


def _rope_theta(hf: dict[str, Any]) -> float:
    # transformers 5 nests rope settings in rope_parameters; 4.x has rope_theta + rope_scaling.
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    need(kind == "default", f"rope_type {kind!r} (scaled rotary) is not supported yet")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """Our model config (no targets) for a HF LLaMA config.json."""
    missing = [key for key in REQUIRED if key not in hf]
    need(not missing, f"config.json lacks {', '.join(missing)}")
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hidden // heads
    biases = [k for k in ("attention_bias", "mlp_bias") if hf.get(k)]
    need(not biases, f"{', '.join(biases)}: true is not supported yet")
    kv_heads = hf.get("num_key_value_heads") or heads
    return {
        "name": "llama",
        "vocab_size": hf["vocab_size"],
        "hidden_size": hidden,
        "embedding": {
            "parts": ["word"],
            "max_positions": hf.get("max_position_embeddings", 2048),
            "layer_norm": False,
            "dropout": 0.0,  # LLaMA has no embedding or residual dropout
        },
        "encoder": {
            "num_layers": hf["num_hidden_layers"],
            "num_heads": heads,
            "num_kv_heads": kv_heads if kv_heads != heads else None,
            # Only where it is not hidden / heads (some checkpoints widen the heads).
            "head_dim": head_dim if head_dim * heads != hidden else None,
            "ffn_size": hf.get("intermediate_size", 11008),
            "ffn": "gated",
            "activation": common.activation_from_hf(hf.get("hidden_act", "silu")),
            "norm": "rmsnorm",
            "norm_position": "pre",
            "norm_eps": hf.get("rms_norm_eps", 1e-6),
            "position": "rotary",
            "rotary_base": _rope_theta(hf),
            "causal": True,
            "bias": False,
            "final_norm": True,
            "dropout": 0.0,
            "attention_dropout": hf.get("attention_dropout", 0.0),
        },
    }


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """HF LLaMA config keys of the body; refuses what LLaMA cannot compute."""
    emb, enc = config.embedding, config.encoder
    checks = {
        "embedding.parts": (emb.parts, ["word"]),
        "embedding.layer_norm": (emb.layer_norm, False),
        "embedding.factorized_size": (emb.factorized_size, None),
        "embedding.scale_word": (emb.scale_word, False),
        **common.stack_checks(
            "encoder",
            enc,
            norm_position="pre",
            norm="rmsnorm",
            ffn="gated",
            position="rotary",
            bias=False,
            causal=True,
            share_layers=False,
            final_norm=True,
            attention_scale=None,
        ),  # fmt: skip
    }
    # Grouped-query attention is LLaMA's own: the shared check wants full multi-head attention.
    del checks["encoder.num_kv_heads"]
    common.refuse_mismatches(checks, "llama")
    need(
        enc.activation in common.ACTIVATIONS_TO_HF, f"activation {enc.activation!r} has no HF name"
    )
    return {
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": enc.num_layers,
        "num_attention_heads": enc.num_heads,
        "num_key_value_heads": enc.num_kv_heads or enc.num_heads,
        "head_dim": enc.head_dim or config.hidden_size // enc.num_heads,
        "intermediate_size": enc.ffn_size,
        "hidden_act": common.ACTIVATIONS_TO_HF[enc.activation],
        "max_position_embeddings": emb.max_positions,
        "rms_norm_eps": enc.norm_eps,
        # Both spellings: transformers 5 reads rope_parameters, 4.x rope_theta.
        "rope_theta": enc.rotary_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": enc.rotary_base},
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": enc.attention_dropout,
        "tie_word_embeddings": False,
    }


register(
    Family(
        model_type="llama",
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        target_from_hf=common.lm_from_hf,
        target_to_hf=common.lm_to_hf,
        body=BODY,
        heads=HEADS,
        unsupported=("LlamaForSequenceClassification", "LlamaForTokenClassification"),
        ignored=IGNORED,
        tokenizer_class="LlamaTokenizerFast",
    )
)

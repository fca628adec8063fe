"""GPT-2: pre-norm causal decoder with learned positions, Conv1D layers and a fused ``c_attn``.

HF's Conv1D keeps weights as ``[in, out]`` (the transpose of our Linear) and computes query, key
and value with one ``[h, 3h]`` matrix; the table says so with transforms, and the generic
converter splits on import and concatenates on export.
"""

from __future__ import annotations

from typing import Any

from pretrainkit.config import ModelConfig
from pretrainkit.convert import common
from pretrainkit.convert.spec import Family, Head, conv1d, fused_conv1d, need, params, register

LAYER = "encoder.layers.{i}"
BODY = (
    ("embedding.parts.word.weight", "wte.weight"),
    ("embedding.parts.position.weight", "wpe.weight"),
    *fused_conv1d(
        (f"{LAYER}.attention.query", f"{LAYER}.attention.key", f"{LAYER}.attention.value"),
        "h.{i}.attn.c_attn",
    ),
    *conv1d(
        (f"{LAYER}.attention.output", "h.{i}.attn.c_proj"),
        (f"{LAYER}.feed_forward.up", "h.{i}.mlp.c_fc"),
        (f"{LAYER}.feed_forward.down", "h.{i}.mlp.c_proj"),
    ),
    *params(
        (f"{LAYER}.attention_norm", "h.{i}.ln_1"),
        (f"{LAYER}.ffn_norm", "h.{i}.ln_2"),
        ("encoder.final_norm", "ln_f"),
    ),
)
# Causal-mask buffers older checkpoints saved (the hub's ``gpt2``); they hold no weights.
IGNORED = ("h.{i}.attn.bias", "h.{i}.attn.masked_bias")
HEADS = (
    Head("GPT2Model", ()),
    Head(
        "GPT2LMHeadModel",
        ("lm",),
        "transformer.",
        # Used only when the head is untied; a tied lm_head is the word embedding.
        (("targets.lm.decoder.weight", "lm_head.weight"),),
        tied=(("lm_head.weight", "transformer.wte.weight"),),
    ),
)


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """Our model config (no targets) for a HF GPT-2 config.json."""
    missing = [k for k in ("vocab_size", "n_embd", "n_layer", "n_head") if k not in hf]
    need(not missing, f"config.json lacks {', '.join(missing)}")
    need(hf.get("scale_attn_weights", True), "scale_attn_weights: false is not supported")
    need(
        not hf.get("scale_attn_by_inverse_layer_idx"),
        "scale_attn_by_inverse_layer_idx: true is not supported",
    )
    need(not hf.get("add_cross_attention"), "cross-attention layers are not supported yet")
    hidden = hf["n_embd"]
    eps = hf.get("layer_norm_epsilon", 1e-5)
    return {
        "name": "gpt2",
        "vocab_size": hf["vocab_size"],
        "hidden_size": hidden,
        "embedding": {
            "parts": ["word", "position"],
            "max_positions": hf.get("n_positions", 1024),
            "layer_norm": False,
            "norm_eps": eps,
            "dropout": hf.get("embd_pdrop", 0.1),
        },
        "encoder": {
            "num_layers": hf["n_layer"],
            "num_heads": hf["n_head"],
            "ffn_size": hf.get("n_inner") or 4 * hidden,
            "activation": common.activation_from_hf(hf.get("activation_function", "gelu_new")),
            "norm_position": "pre",
            "norm_eps": eps,
            "position": "absolute",
            "causal": True,
            "final_norm": True,
            "dropout": hf.get("resid_pdrop", 0.1),
            "attention_dropout": hf.get("attn_pdrop", 0.1),
        },
    }


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """HF GPT-2 config keys of the body; refuses what GPT-2 cannot compute."""
    emb, enc = config.embedding, config.encoder
    checks = {
        "embedding.parts": (emb.parts, ["word", "position"]),
        "embedding.layer_norm": (emb.layer_norm, False),
        "embedding.position_offset": (emb.position_offset, 0),
        "embedding.factorized_size": (emb.factorized_size, None),
        "embedding.scale_word": (emb.scale_word, False),
        **common.stack_checks(
            "encoder",
            enc,
            norm_position="pre",
            norm="layernorm",
            ffn="dense",
            position="absolute",
            bias=True,
            causal=True,
            share_layers=False,
            final_norm=True,
            head_dim=None,
            attention_scale=None,
        ),  # fmt: skip
    }
    common.refuse_mismatches(checks, "gpt2")
    need(
        enc.activation in common.ACTIVATIONS_TO_HF, f"activation {enc.activation!r} has no HF name"
    )
    return {
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_embd": config.hidden_size,
        "n_layer": enc.num_layers,
        "n_head": enc.num_heads,
        "n_inner": enc.ffn_size,
        "n_positions": emb.max_positions,
        "activation_function": common.ACTIVATIONS_TO_HF[enc.activation],
        "layer_norm_epsilon": enc.norm_eps,
        "resid_pdrop": enc.dropout,
        "embd_pdrop": emb.dropout,
        "attn_pdrop": enc.attention_dropout,
        "tie_word_embeddings": True,
    }


register(
    Family(
        model_type="gpt2",
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        target_from_hf=common.lm_from_hf,
        target_to_hf=common.lm_to_hf,
        body=BODY,
        heads=HEADS,
        unsupported=("GPT2DoubleHeadsModel", "GPT2ForSequenceClassification"),
        ignored=IGNORED,
        tokenizer_class="GPT2Tokenizer",
    )
)

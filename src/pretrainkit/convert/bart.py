"""BART and PEGASUS: encoder-decoders with the same tensor layout, different wiring.

BART: learned positions numbered from 2 (``position_offset: 2`` with the full table), a
LayerNorm on the embedding sum, post-norm blocks. PEGASUS: fixed sinusoidal positions (sines in
the first half, cosines in the second: the ``sinusoidal_halves`` part, recomputed, never
stored), pre-norm blocks and a final LayerNorm per stack. Both share one word table between the
stacks and the LM head and add HF's ``final_logits_bias`` (stored ``[1, vocab]``).

PEGASUS checkpoints store their sinusoidal tables; our ``sinusoidal_halves`` part keeps its table
as a buffer in the state, so both directions copy it like any tensor (bit for bit), and a
checkpoint without it gets the table the part computes, as in HF.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pretrainkit.config import ModelConfig, TargetConfig
from pretrainkit.convert import common
from pretrainkit.convert.spec import Family, Head, KeyMap, Transform, need, params, register

ENC = "encoder.layers.{i}"
DEC = "decoder.layers.{j}"
BART_OFFSET = 2  # BartLearnedPositionalEmbedding numbers positions from 2


def _attention(ours: str, hf: str) -> KeyMap:
    return params(
        *((f"{ours}.{mine}", f"{hf}.{theirs}_proj") for mine, theirs in
          (("query", "q"), ("key", "k"), ("value", "v"), ("output", "out")))
    )  # fmt: skip


def _body(pegasus: bool) -> KeyMap:
    keys: KeyMap = (("embedding.parts.word.weight", "shared.weight"),)
    for ours, hf, side, index in (("embedding", "encoder", ENC, "{i}"), ("tgt_embedding", "decoder", DEC, "{j}")):  # fmt: skip
        layer = f"{hf}.layers.{index}"
        if pegasus:
            keys += params((f"{hf}.final_norm", f"{hf}.layer_norm"))
            keys += ((f"{ours}.parts.sinusoidal_halves.table", f"{hf}.embed_positions.weight"),)
        else:
            keys += ((f"{ours}.parts.position.weight", f"{hf}.embed_positions.weight"),)
            keys += params((f"{ours}.norm", f"{hf}.layernorm_embedding"))
        keys += _attention(f"{side}.attention", f"{layer}.self_attn")
        keys += params(
            (f"{side}.attention_norm", f"{layer}.self_attn_layer_norm"),
            (f"{side}.feed_forward.up", f"{layer}.fc1"),
            (f"{side}.feed_forward.down", f"{layer}.fc2"),
            (f"{side}.ffn_norm", f"{layer}.final_layer_norm"),
        )
        if hf == "decoder":
            keys += _attention(f"{side}.cross_attention", f"{layer}.encoder_attn")
            keys += params((f"{side}.cross_norm", f"{layer}.encoder_attn_layer_norm"))
    return keys


def _heads(model: str, pegasus: bool) -> tuple[Head, ...]:
    tables = tuple(f"{side}.embed_positions.weight" for side in ("encoder", "decoder"))
    optional = tables if pegasus else ()
    copies = (
        ("encoder.embed_tokens.weight", "shared.weight"),
        ("decoder.embed_tokens.weight", "shared.weight"),
    )
    return (
        Head(f"{model}Model", (), tied=copies, optional=optional),
        Head(
            f"{model}ForConditionalGeneration",
            ("seq2seq_lm",),
            "model.",
            (("targets.seq2seq_lm.decoder.bias", "final_logits_bias", Transform(unsqueeze=True)),),
            tied=(
                ("lm_head.weight", "model.shared.weight"),
                *((f"model.{alias}", f"model.{original}") for alias, original in copies),
            ),
            optional=("final_logits_bias", *(f"model.{name}" for name in optional)),
        ),
    )


REQUIRED = (
    "vocab_size",
    "d_model",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "max_position_embeddings",
)


def _config_from_hf(hf: dict[str, Any], pegasus: bool) -> dict[str, Any]:
    missing = [key for key in REQUIRED if key not in hf]
    need(not missing, f"config.json lacks {', '.join(missing)}")
    refused = [k for k in ("normalize_before", "add_final_layer_norm") if hf.get(k) and not pegasus]
    need(not refused, f"{', '.join(refused)}: true (mBART-style) is not supported yet")
    dropout = hf.get("dropout", 0.1)
    max_positions = hf["max_position_embeddings"]
    embedding = {
        "parts": ["word", "sinusoidal_halves"] if pegasus else ["word", "position"],
        "max_positions": max_positions if pegasus else max_positions + BART_OFFSET,
        "position_offset": 0 if pegasus else BART_OFFSET,
        "scale_word": bool(hf.get("scale_embedding", False)),
        "layer_norm": not pegasus,
        "norm_eps": 1e-5,  # nn.LayerNorm's default, which BART and PEGASUS use
        "dropout": dropout,
    }

    def stack(side: str, causal: bool) -> dict[str, Any]:
        return {
            "num_layers": hf[f"{side}_layers"],
            "num_heads": hf[f"{side}_attention_heads"],
            "ffn_size": hf[f"{side}_ffn_dim"],
            "activation": common.activation_from_hf(hf.get("activation_function", "gelu")),
            "norm_position": "pre" if pegasus else "post",
            "norm_eps": 1e-5,
            "position": "absolute",
            "causal": causal,
            "bias": True,
            "dropout": dropout,
            "attention_dropout": hf.get("attention_dropout", 0.0),
            "ffn_dropout": hf.get("activation_dropout", 0.0),
            "final_norm": pegasus,
        }

    pad = hf.get("pad_token_id", 0 if pegasus else 1)
    return {
        "name": hf["model_type"],
        "vocab_size": hf["vocab_size"],
        "hidden_size": hf["d_model"],
        "embedding": embedding,
        "encoder": stack("encoder", causal=False),
        "tgt_embedding": dict(embedding),
        "decoder": {
            **stack("decoder", causal=True),
            "start_id": hf.get("decoder_start_token_id", pad),
            "pad_id": pad,
        },
        "share_embedding": True,
    }


UNTIED = (
    "an LM head untied from the word embedding (tie_word_embeddings: false) is not supported "
    "for {}: transformers 5 then unties the encoder's and decoder's word tables as well"
)


def target_from_hf(name: str, hf: dict[str, Any]) -> dict[str, Any]:
    need(name == "seq2seq_lm", f"target {name!r} has no {hf['model_type']} head")
    need(hf.get("tie_word_embeddings", True), UNTIED.format(hf["model_type"]))
    return {"bias": True, "tied": True}


def target_to_hf(entry: TargetConfig, config: ModelConfig) -> dict[str, Any]:
    options = common.target_options(entry)
    need(
        options["bias"] and options["scale"] == 1.0,
        "target seq2seq_lm is written to BART/PEGASUS only with bias: true and scale: 1.0 "
        f"(got bias {options['bias']!r}, scale {options['scale']!r})",
    )
    need(options["tied"], UNTIED.format(config.name))
    return {"tie_word_embeddings": True}


def _config_to_hf(config: ModelConfig, pegasus: bool) -> dict[str, Any]:
    model_type = "pegasus" if pegasus else "bart"
    enc, dec, emb, tgt = config.encoder, config.decoder, config.embedding, config.tgt_embedding
    need(
        dec is not None and tgt is not None, f"{model_type} is an encoder-decoder; no decoder here"
    )
    assert dec is not None and tgt is not None
    parts = ["word", "sinusoidal_halves"] if pegasus else ["word", "position"]
    checks: dict[str, tuple[Any, Any]] = {
        "share_embedding": (config.share_embedding, True),
        "encoder.causal": (enc.causal, False),
        "tgt_embedding": (tgt, emb),  # one embedding description for both stacks in HF
    }
    checks.update({
        "embedding.parts": (emb.parts, parts),
        "embedding.position_offset": (emb.position_offset, 0 if pegasus else BART_OFFSET),
        "embedding.layer_norm": (emb.layer_norm, not pegasus),
        "embedding.factorized_size": (emb.factorized_size, None),
    })  # fmt: skip
    if not pegasus:
        checks["embedding.norm"] = (emb.norm, "layernorm")
        checks["embedding.norm_eps"] = (emb.norm_eps, 1e-5)
    for name, stack in (("encoder", enc), ("decoder", dec)):
        expected = {
            "name": "transformer",
            "ffn": "dense",
            "norm": "layernorm",
            "norm_eps": 1e-5,
            "norm_position": "pre" if pegasus else "post",
            "position": "absolute",
            "bias": True,
            "share_layers": False,
            "final_norm": pegasus,
            "head_dim": None,
            "attention_scale": None,
            "num_kv_heads": None,
        }
        checks.update({f"{name}.{k}": (getattr(stack, k), v) for k, v in expected.items()})
    for key in ("activation", "dropout", "attention_dropout", "ffn_dropout"):
        checks[f"decoder.{key}"] = (getattr(dec, key), getattr(enc, key))
    common.refuse_mismatches(checks, model_type)
    need(
        enc.activation in common.ACTIVATIONS_TO_HF, f"activation {enc.activation!r} has no HF name"
    )
    return {
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "d_model": config.hidden_size,
        "encoder_layers": enc.num_layers,
        "decoder_layers": dec.num_layers,
        "encoder_attention_heads": enc.num_heads,
        "decoder_attention_heads": dec.num_heads,
        "encoder_ffn_dim": enc.ffn_size,
        "decoder_ffn_dim": dec.ffn_size,
        "activation_function": common.ACTIVATIONS_TO_HF[enc.activation],
        "max_position_embeddings": emb.max_positions - (0 if pegasus else BART_OFFSET),
        "scale_embedding": emb.scale_word,
        "dropout": enc.dropout,
        "attention_dropout": enc.attention_dropout,
        "activation_dropout": enc.ffn_dropout,
        "is_encoder_decoder": True,
        "pad_token_id": dec.pad_id,
        "decoder_start_token_id": dec.start_id,
        "tie_word_embeddings": True,
    }


for _pegasus, _model_type, _name in ((False, "bart", "Bart"), (True, "pegasus", "Pegasus")):
    register(
        Family(
            model_type=_model_type,
            config_from_hf=partial(_config_from_hf, pegasus=_pegasus),
            config_to_hf=partial(_config_to_hf, pegasus=_pegasus),
            target_from_hf=target_from_hf,
            target_to_hf=target_to_hf,
            body=_body(_pegasus),
            heads=_heads(_name, _pegasus),
            unsupported=tuple(
                f"{_name}{suffix}"
                for suffix in ("ForSequenceClassification", "ForQuestionAnswering", "ForCausalLM")
            ),
            tokenizer_class="PegasusTokenizerFast" if _pegasus else "BartTokenizer",
        )
    )

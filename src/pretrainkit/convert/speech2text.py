"""Speech2Text (fairseq S2T, HF ``speech_to_text``): log-mel frames in, tokens out.

The encoder's input is the ``speech`` part (strided Conv1d + GLU subsampler, scaled by
sqrt(d_model) with ``scale_embedding``) plus fixed ``sinusoidal_fairseq`` positions numbered from
``pad_token_id + 1``; the decoder embeds tokens with the same kind of positions. Both stacks are
pre-norm with a final LayerNorm (as PEGASUS). There is no source word table, so the LM head ties
to the decoder's (``share_embedding: false``), without a bias. The position tables are computed
on both sides and never stored.
"""

from __future__ import annotations

from typing import Any

from pretrainkit.config import ModelConfig, TargetConfig
from pretrainkit.convert import common
from pretrainkit.convert.spec import Family, Head, KeyMap, need, params, register

ENC = "encoder.layers.{i}"
DEC = "decoder.layers.{j}"
HEAD_KEY = (("targets.seq2seq_lm.decoder.weight", "lm_head.weight"),)
TIED_HEAD = (("lm_head.weight", "model.decoder.embed_tokens.weight"),)
SOURCE_PARTS = ["speech", "sinusoidal_fairseq"]
TARGET_PARTS = ["word", "sinusoidal_fairseq"]
REQUIRED = (
    "vocab_size",
    "d_model",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "max_source_positions",
    "max_target_positions",
    "conv_kernel_sizes",
    "conv_channels",
    "input_feat_per_channel",
)


def _attention(ours: str, hf: str) -> KeyMap:
    names = (("query", "q"), ("key", "k"), ("value", "v"), ("output", "out"))
    return params(*((f"{ours}.{mine}", f"{hf}.{theirs}_proj") for mine, theirs in names))


def _body(config: ModelConfig) -> KeyMap:
    kernels = config.embedding.conv_kernel_sizes
    keys: KeyMap = params(
        *(
            (f"embedding.parts.speech.convolutions.{k}", f"encoder.conv.conv_layers.{k}")
            for k in range(len(kernels))
        ),
        ("encoder.final_norm", "encoder.layer_norm"),
        ("decoder.final_norm", "decoder.layer_norm"),
    )
    keys += (("tgt_embedding.parts.word.weight", "decoder.embed_tokens.weight"),)
    for side, hf in ((ENC, ENC), (DEC, DEC)):
        keys += _attention(f"{side}.attention", f"{hf}.self_attn")
        keys += params(
            (f"{side}.attention_norm", f"{hf}.self_attn_layer_norm"),
            (f"{side}.feed_forward.up", f"{hf}.fc1"),
            (f"{side}.feed_forward.down", f"{hf}.fc2"),
            (f"{side}.ffn_norm", f"{hf}.final_layer_norm"),
        )
    keys += _attention(f"{DEC}.cross_attention", f"{DEC}.encoder_attn")
    keys += params((f"{DEC}.cross_norm", f"{DEC}.encoder_attn_layer_norm"))
    return keys


HEADS = (
    Head("Speech2TextModel", ()),
    Head(
        "Speech2TextForConditionalGeneration",
        ("seq2seq_lm",),
        "model.",
        keys=HEAD_KEY,  # dropped when tied: the decoder's word table is then the head
        tied=TIED_HEAD,
    ),
)


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    missing = [key for key in REQUIRED if key not in hf]
    need(not missing, f"config.json lacks {', '.join(missing)}")
    kernels = list(hf["conv_kernel_sizes"])
    need(
        hf.get("num_conv_layers", len(kernels)) == len(kernels),
        f"num_conv_layers ({hf.get('num_conv_layers')}) differs from the {len(kernels)} "
        "conv_kernel_sizes",
    )
    need(
        hf.get("input_channels", 1) == 1,
        f"input_channels {hf.get('input_channels')!r}: only one feature channel is supported",
    )
    pad = hf.get("pad_token_id", 1)
    need(pad is not None, "config.json: pad_token_id null; Speech2Text numbers positions from it")
    start = hf.get("decoder_start_token_id", 2)
    # HF gives a pad token no position (a zero vector), the start token included then.
    need(start != pad, f"decoder_start_token_id equal to pad_token_id ({pad}) is not supported")
    offset = pad + 1  # fairseq numbers real positions from padding_idx + 1
    dropout = hf.get("dropout", 0.1)
    scale = bool(hf.get("scale_embedding", True))

    def embedding(parts: list[str], positions: int) -> dict[str, Any]:
        return {
            "parts": parts,
            "max_positions": positions + offset,
            "position_offset": offset,
            "scale_word": scale,
            "layer_norm": False,
            "dropout": dropout,
        }

    def stack(side: str, causal: bool) -> dict[str, Any]:
        return {
            "num_layers": hf[f"{side}_layers"],
            "num_heads": hf[f"{side}_attention_heads"],
            "ffn_size": hf[f"{side}_ffn_dim"],
            "activation": common.activation_from_hf(hf.get("activation_function", "relu")),
            "norm_position": "pre",
            "norm_eps": 1e-5,  # nn.LayerNorm's default, which Speech2Text uses
            "position": "absolute",
            "causal": causal,
            "bias": True,
            "dropout": dropout,
            "attention_dropout": hf.get("attention_dropout", 0.0),
            "ffn_dropout": hf.get("activation_dropout", 0.0),
            "final_norm": True,
        }

    source = embedding(SOURCE_PARTS, hf["max_source_positions"])
    source.update(
        num_mel_bins=hf["input_feat_per_channel"],
        conv_channels=hf["conv_channels"],
        conv_kernel_sizes=kernels,
    )
    return {
        "name": "speech_to_text",
        "vocab_size": hf["vocab_size"],
        "hidden_size": hf["d_model"],
        "embedding": source,
        "encoder": stack("encoder", causal=False),
        "tgt_embedding": embedding(TARGET_PARTS, hf["max_target_positions"]),
        "decoder": {**stack("decoder", causal=True), "start_id": start, "pad_id": pad},
        "share_embedding": False,  # no source word table
    }


def target_from_hf(name: str, hf: dict[str, Any]) -> dict[str, Any]:
    need(name == "seq2seq_lm", f"target {name!r} has no Speech2Text head")
    return {"bias": False, "tied": bool(hf.get("tie_word_embeddings", True))}


def target_to_hf(entry: TargetConfig, config: ModelConfig) -> dict[str, Any]:
    options = common.target_options(entry)
    need(
        not options["bias"] and options["scale"] == 1.0,
        "target seq2seq_lm is written to Speech2Text only with bias: false and scale: 1.0 "
        f"(got bias {options['bias']!r}, scale {options['scale']!r})",
    )
    return {"tie_word_embeddings": bool(options["tied"])}


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """HF Speech2Text config keys; refuses what Speech2Text cannot compute."""
    enc, dec, emb, tgt = config.encoder, config.decoder, config.embedding, config.tgt_embedding
    need(dec is not None and tgt is not None, "Speech2Text is an encoder-decoder; no decoder here")
    assert dec is not None and tgt is not None
    offset = dec.pad_id + 1
    checks: dict[str, tuple[Any, Any]] = {
        "share_embedding": (config.share_embedding, False),
        "encoder.causal": (enc.causal, False),
        "embedding.parts": (emb.parts, SOURCE_PARTS),
        "tgt_embedding.parts": (tgt.parts, TARGET_PARTS),
        "decoder.start_id != pad_id": (dec.start_id != dec.pad_id, True),
    }
    for name, side in (("embedding", emb), ("tgt_embedding", tgt)):
        checks[f"{name}.position_offset (decoder.pad_id + 1)"] = (side.position_offset, offset)
        checks[f"{name}.layer_norm"] = (side.layer_norm, False)
        checks[f"{name}.factorized_size"] = (side.factorized_size, None)
        checks[f"{name}.scale_word"] = (side.scale_word, emb.scale_word)
        checks[f"{name}.dropout"] = (side.dropout, enc.dropout)
    for name, stack in (("encoder", enc), ("decoder", dec)):
        expected = {
            "name": "transformer",
            "ffn": "dense",
            "norm": "layernorm",
            "norm_eps": 1e-5,
            "norm_position": "pre",
            "position": "absolute",
            "bias": True,
            "share_layers": False,
            "final_norm": True,
            "head_dim": None,
            "attention_scale": None,
            "num_kv_heads": None,
        }
        checks.update({f"{name}.{k}": (getattr(stack, k), v) for k, v in expected.items()})
    for key in ("activation", "dropout", "attention_dropout", "ffn_dropout"):
        checks[f"decoder.{key}"] = (getattr(dec, key), getattr(enc, key))
    common.refuse_mismatches(checks, "speech_to_text")
    need(
        enc.activation in common.ACTIVATIONS_TO_HF, f"activation {enc.activation!r} has no HF name"
    )
    return {
        "model_type": "speech_to_text",
        "vocab_size": config.vocab_size,
        "d_model": config.hidden_size,
        "encoder_layers": enc.num_layers,
        "decoder_layers": dec.num_layers,
        "encoder_attention_heads": enc.num_heads,
        "decoder_attention_heads": dec.num_heads,
        "encoder_ffn_dim": enc.ffn_size,
        "decoder_ffn_dim": dec.ffn_size,
        "activation_function": common.ACTIVATIONS_TO_HF[enc.activation],
        "max_source_positions": emb.max_positions - offset,
        "max_target_positions": tgt.max_positions - offset,
        "num_conv_layers": len(emb.conv_kernel_sizes),
        "conv_kernel_sizes": list(emb.conv_kernel_sizes),
        "conv_channels": emb.conv_channels,
        "input_feat_per_channel": emb.num_mel_bins,
        "input_channels": 1,
        "scale_embedding": emb.scale_word,
        "dropout": enc.dropout,
        "attention_dropout": enc.attention_dropout,
        "activation_dropout": enc.ffn_dropout,
        "is_encoder_decoder": True,
        "pad_token_id": dec.pad_id,
        "decoder_start_token_id": dec.start_id,
    }


register(
    Family(
        model_type="speech_to_text",
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        target_from_hf=target_from_hf,
        target_to_hf=target_to_hf,
        body=_body,
        heads=HEADS,
        tokenizer_class="Speech2TextTokenizer",
    )
)

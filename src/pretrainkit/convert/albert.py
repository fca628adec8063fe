"""ALBERT: factorised embedding (parts at ``embedding_size``, then a projection) and parameter
recurrence: HF's ``num_hidden_groups`` blocks, block g applied ``num_hidden_layers / groups`` times
in a row, are our ``encoder.layer_groups`` (one group: ``share_layers``)."""

from __future__ import annotations

from typing import Any

from pretrainkit.config import ModelConfig, TargetConfig
from pretrainkit.convert import common
from pretrainkit.convert.bert import token_heads
from pretrainkit.convert.spec import Family, Head, need, params, register

# {i} runs over the blocks our model stores (one per group), not over the applied layers: HF
# stores group g's one layer (inner_group_num 1) where we store block g.
_LAYER = "encoder.albert_layer_groups.{i}.albert_layers.0"
BODY = (
    ("embedding.parts.word.weight", "embeddings.word_embeddings.weight"),
    ("embedding.parts.position.weight", "embeddings.position_embeddings.weight"),
    ("embedding.parts.segment.weight", "embeddings.token_type_embeddings.weight"),
    *params(
        ("embedding.norm", "embeddings.LayerNorm"),
        ("embedding.project", "encoder.embedding_hidden_mapping_in"),
        ("encoder.layers.{i}.attention.query", f"{_LAYER}.attention.query"),
        ("encoder.layers.{i}.attention.key", f"{_LAYER}.attention.key"),
        ("encoder.layers.{i}.attention.value", f"{_LAYER}.attention.value"),
        ("encoder.layers.{i}.attention.output", f"{_LAYER}.attention.dense"),
        ("encoder.layers.{i}.attention_norm", f"{_LAYER}.attention.LayerNorm"),
        ("encoder.layers.{i}.feed_forward.up", f"{_LAYER}.ffn"),
        ("encoder.layers.{i}.feed_forward.down", f"{_LAYER}.ffn_output"),
        ("encoder.layers.{i}.ffn_norm", f"{_LAYER}.full_layer_layer_norm"),
    ),
)
_MLM = params(
    ("targets.mlm.dense", "predictions.dense"),
    ("targets.mlm.norm", "predictions.LayerNorm"),
) + (("targets.mlm.decoder.bias", "predictions.bias"),)
_TIED = (
    ("predictions.decoder.weight", "albert.embeddings.word_embeddings.weight"),
    ("predictions.decoder.bias", "predictions.bias"),
)
HEADS = (
    Head("AlbertModel", (), passthrough=("pooler.weight", "pooler.bias")),
    Head("AlbertForMaskedLM", ("mlm",), "albert.", _MLM, _TIED),
    Head(
        "AlbertForPreTraining",
        ("mlm", "sop"),
        "albert.",
        _MLM
        + params(
            ("targets.sop.pooler", "albert.pooler"),
            ("targets.sop.classifier", "sop_classifier.classifier"),
        ),
        _TIED,
    ),
    Head(
        "AlbertForSequenceClassification",
        ("classification",),
        "albert.",
        params(
            ("targets.classification.pooler", "albert.pooler"),
            ("targets.classification.classifier", "classifier"),
        ),
    ),
    *token_heads("albert.", "Albert"),
)


def _from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    groups, inner = hf.get("num_hidden_groups", 1), hf.get("inner_group_num", 1)
    need(
        inner == 1,
        f"ALBERT with inner_group_num {inner} is not supported yet (one layer per group only)",
    )
    hf = {
        "hidden_act": "gelu_new",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        **hf,
    }  # AlbertConfig's defaults
    config = common.bert_like_from_hf(hf, factorized_size=hf.get("embedding_size", 128))
    layers = config["encoder"]["num_layers"]
    need(isinstance(layers, int), f"num_hidden_layers {layers!r} must be an integer")
    need(
        isinstance(groups, int) and not isinstance(groups, bool) and 1 <= groups <= layers,
        f"num_hidden_groups {groups!r} must be an integer from 1 to num_hidden_layers {layers}",
    )
    # HF's int(i / (layers / groups)) picks the same group as our i * groups // layers; our
    # stacks apply every group equally often, so the groups must divide the layers.
    need(
        layers % groups == 0,
        f"num_hidden_groups {groups} does not divide num_hidden_layers {layers}: groups applied "
        "unequally often are not supported",
    )
    # One group stays share_layers (what the albert presets say); more are layer_groups.
    config["encoder"]["share_layers"] = groups == 1
    if groups > 1:
        config["encoder"]["layer_groups"] = groups
    return config


def _to_hf(config: ModelConfig) -> dict[str, Any]:
    hf = common.bert_like_to_hf(config, "albert", albert=True)
    need(config.embedding.factorized_size is not None, "ALBERT needs embedding.factorized_size")
    enc = config.encoder
    # The blocks our model stores: each is one HF group (a model with a block per layer is
    # ALBERT with as many groups as layers).
    groups = 1 if enc.share_layers else enc.layer_groups or enc.num_layers
    return {
        **hf,
        "embedding_size": config.embedding.factorized_size,
        "num_hidden_groups": groups,
        "inner_group_num": 1,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }


def _target(name: str, hf: dict[str, Any]) -> dict[str, Any]:
    if name == "mlm":
        return common.mlm_from_hf(hf, common.activation_from_hf(hf.get("hidden_act", "gelu_new")))
    if name == "classification":
        return common.classification_from_hf(hf, "classifier_dropout_prob")
    if name == "token_classification":
        return common.token_classification_from_hf(hf, "classifier_dropout_prob")
    if name == "span_extraction":
        return common.span_extraction_from_hf(hf)
    return {}


def _target_to_hf(entry: TargetConfig, config: ModelConfig) -> dict[str, Any]:
    if entry.name == "mlm":
        common.check_mlm(entry, config, config.encoder.activation)
    if entry.name == "classification":
        return common.classification_to_hf(entry, "classifier_dropout_prob")
    if entry.name == "token_classification":
        return common.token_classification_to_hf(entry, "classifier_dropout_prob")
    if entry.name == "span_extraction":
        return common.span_extraction_to_hf()
    return {}


register(
    Family(
        model_type="albert",
        config_from_hf=_from_hf,
        config_to_hf=_to_hf,
        target_from_hf=_target,
        target_to_hf=_target_to_hf,
        body=BODY,
        heads=HEADS,
        unsupported=("AlbertForMultipleChoice",),
        ignored=("embeddings.position_ids", "embeddings.token_type_ids"),
        tokenizer_class="AlbertTokenizer",
        pad_token_id=0,
    )
)

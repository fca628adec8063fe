"""ALBERT: factorised embedding (parts at ``embedding_size``, then a projection) and one block
shared by every layer (HF's single layer group)."""

from __future__ import annotations

from typing import Any

from pretrainkit.config import ModelConfig, TargetConfig
from pretrainkit.convert import common
from pretrainkit.convert.bert import token_heads
from pretrainkit.convert.spec import Family, Head, need, params, register

_LAYER = "encoder.albert_layer_groups.0.albert_layers.0"
# Our shared block is encoder.layers.0: no {i}, the one block is stored once on both sides.
BODY = (
    ("embedding.parts.word.weight", "embeddings.word_embeddings.weight"),
    ("embedding.parts.position.weight", "embeddings.position_embeddings.weight"),
    ("embedding.parts.segment.weight", "embeddings.token_type_embeddings.weight"),
    *params(
        ("embedding.norm", "embeddings.LayerNorm"),
        ("embedding.project", "encoder.embedding_hidden_mapping_in"),
        ("encoder.layers.0.attention.query", f"{_LAYER}.attention.query"),
        ("encoder.layers.0.attention.key", f"{_LAYER}.attention.key"),
        ("encoder.layers.0.attention.value", f"{_LAYER}.attention.value"),
        ("encoder.layers.0.attention.output", f"{_LAYER}.attention.dense"),
        ("encoder.layers.0.attention_norm", f"{_LAYER}.attention.LayerNorm"),
        ("encoder.layers.0.feed_forward.up", f"{_LAYER}.ffn"),
        ("encoder.layers.0.feed_forward.down", f"{_LAYER}.ffn_output"),
        ("encoder.layers.0.ffn_norm", f"{_LAYER}.full_layer_layer_norm"),
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
        groups == 1 and inner == 1,
        f"ALBERT with num_hidden_groups {groups} / inner_group_num {inner} is not supported yet "
        "(only one shared block)",
    )
    hf = {
        "hidden_act": "gelu_new",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        **hf,
    }  # AlbertConfig's defaults
    return common.bert_like_from_hf(hf, factorized_size=hf.get("embedding_size", 128))


def _to_hf(config: ModelConfig) -> dict[str, Any]:
    hf = common.bert_like_to_hf(config, "albert", albert=True)
    need(config.embedding.factorized_size is not None, "ALBERT needs embedding.factorized_size")
    return {
        **hf,
        "embedding_size": config.embedding.factorized_size,
        "num_hidden_groups": 1,
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

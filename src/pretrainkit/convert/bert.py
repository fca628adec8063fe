"""BERT, RoBERTa and XLM-RoBERTa (and every checkpoint of their shape, e.g. sentence-transformers
MiniLM)."""

from __future__ import annotations

import functools
from typing import Any

from pretrainkit.config import ModelConfig, TargetConfig
from pretrainkit.convert import common
from pretrainkit.convert.spec import Family, Head, need, params, register

BODY = (
    ("embedding.parts.word.weight", "embeddings.word_embeddings.weight"),
    ("embedding.parts.position.weight", "embeddings.position_embeddings.weight"),
    ("embedding.parts.segment.weight", "embeddings.token_type_embeddings.weight"),
    *params(
        ("embedding.norm", "embeddings.LayerNorm"),
        ("encoder.layers.{i}.attention.query", "encoder.layer.{i}.attention.self.query"),
        ("encoder.layers.{i}.attention.key", "encoder.layer.{i}.attention.self.key"),
        ("encoder.layers.{i}.attention.value", "encoder.layer.{i}.attention.self.value"),
        ("encoder.layers.{i}.attention.output", "encoder.layer.{i}.attention.output.dense"),
        ("encoder.layers.{i}.attention_norm", "encoder.layer.{i}.attention.output.LayerNorm"),
        ("encoder.layers.{i}.feed_forward.up", "encoder.layer.{i}.intermediate.dense"),
        ("encoder.layers.{i}.feed_forward.down", "encoder.layer.{i}.output.dense"),
        ("encoder.layers.{i}.ffn_norm", "encoder.layer.{i}.output.LayerNorm"),
    ),
)
# Buffers older checkpoints saved; they hold no weights.
IGNORED = ("embeddings.position_ids", "embeddings.token_type_ids")
POOLER = ("pooler.dense.weight", "pooler.dense.bias")
UNSUPPORTED = (
    "ForMultipleChoice",
    "ForNextSentencePrediction",
    "LMHeadModel",
    "ForCausalLM",
)


def token_heads(prefix: str, model: str) -> tuple[Head, ...]:
    """``{Model}ForTokenClassification`` and ``{Model}ForQuestionAnswering``: one Linear each.

    The same layout in BERT, RoBERTa and ALBERT: the body under ``prefix``, the head's Linear at
    the top level (``classifier``, ``qa_outputs``).
    """
    return (
        Head(
            f"{model}ForTokenClassification",
            ("token_classification",),
            prefix,
            params(("targets.token_classification.classifier", "classifier")),
        ),
        Head(
            f"{model}ForQuestionAnswering",
            ("span_extraction",),
            prefix,
            params(("targets.span_extraction.output", "qa_outputs")),
        ),
    )


def _bert_heads() -> tuple[Head, ...]:
    mlm = params(
        ("targets.mlm.dense", "cls.predictions.transform.dense"),
        ("targets.mlm.norm", "cls.predictions.transform.LayerNorm"),
    ) + (("targets.mlm.decoder.bias", "cls.predictions.bias"),)
    tied = (
        ("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
        ("cls.predictions.decoder.bias", "cls.predictions.bias"),
    )
    return (
        Head("BertModel", (), passthrough=POOLER),
        Head("BertForMaskedLM", ("mlm",), "bert.", mlm, tied),
        Head(
            "BertForPreTraining",
            ("mlm", "nsp"),
            "bert.",
            mlm
            + params(
                ("targets.nsp.pooler", "bert.pooler.dense"),
                ("targets.nsp.classifier", "cls.seq_relationship"),
            ),
            tied,
        ),
        Head(
            "BertForSequenceClassification",
            ("classification",),
            "bert.",
            params(
                ("targets.classification.pooler", "bert.pooler.dense"),
                ("targets.classification.classifier", "classifier"),
            ),
        ),
        *token_heads("bert.", "Bert"),
    )


def _roberta_heads(model: str) -> tuple[Head, ...]:
    """RoBERTa's heads; XLM-RoBERTa has the same modules under ``XLMRoberta*`` class names."""
    mlm = params(
        ("targets.mlm.dense", "lm_head.dense"),
        ("targets.mlm.norm", "lm_head.layer_norm"),
    ) + (("targets.mlm.decoder.bias", "lm_head.bias"),)
    tied = (
        ("lm_head.decoder.weight", "roberta.embeddings.word_embeddings.weight"),
        ("lm_head.decoder.bias", "lm_head.bias"),
    )
    return (
        Head(f"{model}Model", (), passthrough=POOLER),
        Head(f"{model}ForMaskedLM", ("mlm",), "roberta.", mlm, tied),
        # HF's RobertaClassificationHead is first token → dense → tanh → out_proj: our pooler.
        Head(
            f"{model}ForSequenceClassification",
            ("classification",),
            "roberta.",
            params(
                ("targets.classification.pooler", "classifier.dense"),
                ("targets.classification.classifier", "classifier.out_proj"),
            ),
        ),
        *token_heads("roberta.", model),
    )


def _bert_target(name: str, hf: dict[str, Any]) -> dict[str, Any]:
    if name == "mlm":
        return common.mlm_from_hf(hf, common.activation_from_hf(hf.get("hidden_act", "gelu")))
    if name == "classification":
        return common.classification_from_hf(hf, "classifier_dropout")
    if name == "token_classification":
        return common.token_classification_from_hf(hf, "classifier_dropout")
    if name == "span_extraction":
        return common.span_extraction_from_hf(hf)
    return {}


def _bert_target_to_hf(entry: TargetConfig, config: ModelConfig) -> dict[str, Any]:
    if entry.name == "mlm":
        common.check_mlm(entry, config, config.encoder.activation)
    if entry.name == "classification":
        return common.classification_to_hf(entry, "classifier_dropout")
    if entry.name == "token_classification":
        return common.token_classification_to_hf(entry, "classifier_dropout")
    if entry.name == "span_extraction":
        return common.span_extraction_to_hf()
    return {}


def _roberta_offset(hf: dict[str, Any]) -> int:
    # HF numbers RoBERTa's positions from padding_idx + 1; rows below stay in the table.
    pad = hf.get("pad_token_id", 1)
    need(
        isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0,
        f"pad_token_id {pad!r}: {hf['model_type']} counts positions from the padding id, "
        "so it must be a token id",
    )
    return pad + 1


def _roberta_target(name: str, hf: dict[str, Any]) -> dict[str, Any]:
    if name == "mlm":
        return common.mlm_from_hf(hf, "gelu")  # RobertaLMHead uses exact gelu, not hidden_act
    return _bert_target(name, hf)


def _roberta_target_to_hf(entry: TargetConfig, config: ModelConfig) -> dict[str, Any]:
    if entry.name == "mlm":
        common.check_mlm(entry, config, "gelu")
        return {}
    return _bert_target_to_hf(entry, config)


def _roberta_to_hf(config: ModelConfig, model_type: str) -> dict[str, Any]:
    offset = config.embedding.position_offset
    hf = common.bert_like_to_hf(config, model_type, position_offset=max(offset, 1))
    return {**hf, "pad_token_id": offset - 1, "bos_token_id": 0, "eos_token_id": 2}


register(
    Family(
        model_type="bert",
        config_from_hf=common.bert_like_from_hf,
        config_to_hf=lambda config: common.bert_like_to_hf(config, "bert"),
        target_from_hf=_bert_target,
        target_to_hf=_bert_target_to_hf,
        body=BODY,
        heads=_bert_heads(),
        unsupported=tuple(f"Bert{suffix}" for suffix in UNSUPPORTED),
        ignored=IGNORED,
        pad_token_id=0,
    )
)
# XLM-RoBERTa is RoBERTa's architecture with a SentencePiece vocabulary (fairseq ids: <s>=0
# <pad>=1 </s>=2 <unk>=3); only the class names differ.
for _model_type, _class in (("roberta", "Roberta"), ("xlm-roberta", "XLMRoberta")):
    register(
        Family(
            model_type=_model_type,
            config_from_hf=lambda hf: common.bert_like_from_hf(hf, _roberta_offset(hf)),
            config_to_hf=functools.partial(_roberta_to_hf, model_type=_model_type),
            target_from_hf=_roberta_target,
            target_to_hf=_roberta_target_to_hf,
            body=BODY,
            heads=_roberta_heads(_class),
            unsupported=tuple(f"{_class}{suffix}" for suffix in UNSUPPORTED),
            ignored=IGNORED,
            tokenizer_class=f"{_class}Tokenizer",
            pad_token_id=1,
        )
    )

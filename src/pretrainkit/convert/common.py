"""Config translation shared by the BERT-like families (bert, roberta, albert)."""

from __future__ import annotations

import inspect
from typing import Any

from pretrainkit.config import ModelConfig, TargetConfig
from pretrainkit.convert.spec import need
from pretrainkit.errors import CheckpointError
from pretrainkit.targets import TARGETS

# HF hidden_act → ours. gelu_new and gelu_pytorch_tanh are both the tanh approximation.
ACTIVATIONS_FROM_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}
REQUIRED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
)


def activation_from_hf(name: Any) -> str:
    need(
        name in ACTIVATIONS_FROM_HF,
        f"hidden_act {name!r} is not supported; supported: {', '.join(ACTIVATIONS_FROM_HF)}",
    )
    return ACTIVATIONS_FROM_HF[name]


def bert_like_from_hf(
    hf: dict[str, Any], position_offset: int = 0, factorized_size: int | None = None
) -> dict[str, Any]:
    """Our model config (no targets) for a post-norm BERT-shaped HF config."""
    missing = [key for key in REQUIRED if key not in hf]
    need(not missing, f"config.json lacks {', '.join(missing)}")
    kind = hf.get("position_embedding_type", "absolute")
    need(kind == "absolute", f"position_embedding_type {kind!r} is not supported yet")
    need(not hf.get("is_decoder"), "decoder (is_decoder: true) BERT models are not supported yet")
    need(not hf.get("add_cross_attention"), "cross-attention layers are not supported yet")
    eps = hf.get("layer_norm_eps", 1e-12)
    dropout = hf.get("hidden_dropout_prob", 0.1)
    return {
        "name": hf["model_type"],
        "vocab_size": hf["vocab_size"],
        "hidden_size": hf["hidden_size"],
        "embedding": {
            "parts": ["word", "position", "segment"],
            "max_positions": hf["max_position_embeddings"],
            "position_offset": position_offset,
            "num_segments": hf.get("type_vocab_size", 2),
            "factorized_size": factorized_size,
            "layer_norm": True,
            "norm": "layernorm",
            "norm_eps": eps,
            "dropout": dropout,
        },
        "encoder": {
            "num_layers": hf["num_hidden_layers"],
            "num_heads": hf["num_attention_heads"],
            "ffn_size": hf["intermediate_size"],
            "activation": activation_from_hf(hf.get("hidden_act", "gelu")),
            "norm_position": "post",
            "norm_eps": eps,
            "position": "absolute",
            "dropout": dropout,
            "attention_dropout": hf.get("attention_probs_dropout_prob", 0.1),
            "share_layers": factorized_size is not None,
        },
    }


def bert_like_to_hf(
    config: ModelConfig, model_type: str, position_offset: int = 0, albert: bool = False
) -> dict[str, Any]:
    """HF config keys of the body; refuses what the HF family cannot compute."""
    emb, enc = config.embedding, config.encoder
    checks = {
        "embedding.parts": (emb.parts, ["word", "position", "segment"]),
        "embedding.layer_norm": (emb.layer_norm, True),
        "embedding.norm": (emb.norm, "layernorm"),
        "embedding.position_offset": (emb.position_offset, position_offset),
        "embedding.scale_word": (emb.scale_word, False),
        "encoder.head_dim": (enc.head_dim, None),
        "encoder.attention_scale": (enc.attention_scale, None),
        "encoder.name": (enc.name, "transformer"),
        "encoder.norm_position": (enc.norm_position, "post"),
        "encoder.norm": (enc.norm, "layernorm"),
        "encoder.norm_eps": (enc.norm_eps, emb.norm_eps),
        "encoder.ffn": (enc.ffn, "dense"),
        "encoder.position": (enc.position, "absolute"),
        "encoder.bias": (enc.bias, True),
        "encoder.causal": (enc.causal, False),
        "encoder.final_norm": (enc.final_norm, False),
        "encoder.num_kv_heads": (enc.num_kv_heads or enc.num_heads, enc.num_heads),
    }
    if not albert:  # ALBERT alone has the factorised embedding and blocks used repeatedly
        checks["embedding.factorized_size"] = (emb.factorized_size, None)
        checks["encoder.share_layers"] = (enc.share_layers, False)
        # layer_groups equal to num_layers is a block per layer: what BERT stores.
        checks["encoder.layer_groups"] = (enc.layer_groups, enc.layer_groups and enc.num_layers)
    wrong = [
        f"{key} is {got!r}, {model_type} needs {want!r}"
        for key, (got, want) in checks.items()
        if got != want
    ]
    need(not wrong, f"the model cannot be written as HF {model_type}: {'; '.join(wrong)}")
    need(enc.activation in ACTIVATIONS_TO_HF, f"activation {enc.activation!r} has no HF name")
    return {
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": enc.num_layers,
        "num_attention_heads": enc.num_heads,
        "intermediate_size": enc.ffn_size,
        "hidden_act": ACTIVATIONS_TO_HF[enc.activation],
        "hidden_dropout_prob": enc.dropout,
        "attention_probs_dropout_prob": enc.attention_dropout,
        "max_position_embeddings": emb.max_positions,
        "type_vocab_size": emb.num_segments,
        "layer_norm_eps": emb.norm_eps,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }


def target_options(entry: TargetConfig) -> dict[str, Any]:
    """A target's options with its constructor defaults filled in."""
    params = inspect.signature(TARGETS.get(entry.name).__init__).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **entry.options}


def mlm_from_hf(hf: dict[str, Any], activation: str) -> dict[str, Any]:
    return {"activation": activation, "norm_eps": hf.get("layer_norm_eps", 1e-12)}


def check_mlm(entry: TargetConfig, config: ModelConfig, activation: str) -> None:
    got = target_options(entry)
    want = {"activation": activation, "norm": "layernorm", "norm_eps": config.embedding.norm_eps}
    wrong = [f"{k} is {got[k]!r}, HF needs {v!r}" for k, v in want.items() if got[k] != v]
    need(not wrong, f"target mlm cannot be written to HF: {'; '.join(wrong)}")


def classification_from_hf(hf: dict[str, Any], dropout_key: str) -> dict[str, Any]:
    problem = hf.get("problem_type")
    need(
        problem in (None, "single_label_classification"),
        f"problem_type {problem!r} is not supported yet (single-label classification only)",
    )
    return {
        "labels": labels_from_hf(hf),
        "pooling": "first",
        "pooler": True,
        "dropout": head_dropout_from_hf(hf, dropout_key),
    }


def labels_from_hf(hf: dict[str, Any]) -> list[str]:
    """The label strings of ``id2label`` in class-index order (at least two)."""
    id2label = hf.get("id2label") or {}
    try:
        labels = [str(id2label[key]) for key in sorted(id2label, key=int)]
    except ValueError:
        raise CheckpointError(f"id2label has non-integer keys: {sorted(id2label)}") from None
    need(
        [int(k) for k in sorted(id2label, key=int)] == list(range(len(labels))),
        f"id2label keys must be 0..n-1, got {sorted(id2label, key=int)}",
    )
    need(len(labels) >= 2, f"a classifier needs at least two labels; id2label is {id2label}")
    return labels


def head_dropout_from_hf(hf: dict[str, Any], dropout_key: str) -> float:
    # HF heads fall back to the body's dropout when their own key is unset (None).
    dropout = hf.get(dropout_key)
    if dropout is None:
        dropout = hf.get("hidden_dropout_prob", 0.1)
    return float(dropout)


def token_classification_from_hf(hf: dict[str, Any], dropout_key: str) -> dict[str, Any]:
    return {"labels": labels_from_hf(hf), "dropout": head_dropout_from_hf(hf, dropout_key)}


def token_classification_to_hf(entry: TargetConfig, dropout_key: str) -> dict[str, Any]:
    options = target_options(entry)
    return {**labels_to_hf(options["labels"]), dropout_key: options["dropout"]}


def span_extraction_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    # qa_outputs is Linear(hidden, num_labels); only the (start, end) pair is a span head.
    num_labels = len(hf.get("id2label") or {}) or int(hf.get("num_labels", 2))
    need(num_labels == 2, f"a question-answering head needs num_labels 2, got {num_labels}")
    return {}


def span_extraction_to_hf() -> dict[str, Any]:
    return {"id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1}}


def classification_to_hf(entry: TargetConfig, dropout_key: str) -> dict[str, Any]:
    options = target_options(entry)
    need(
        options["pooling"] == "first" and options["pooler"],
        "target classification is written to HF only with pooling: first and pooler: true "
        f"(HF pools the first token through dense + tanh); got pooling {options['pooling']!r}, "
        f"pooler {options['pooler']!r}",
    )
    return {**labels_to_hf(options["labels"]), dropout_key: options["dropout"]}


def stack_checks(name: str, stack: Any, **expected: Any) -> dict[str, tuple[Any, Any]]:
    """``{"encoder.norm": (got, want), ...}`` for a transformer stack: the given options plus
    the ones every HF family here shares (our transformer stack, full multi-head attention)."""
    checks = {f"{name}.name": (stack.name, "transformer")}
    checks[f"{name}.num_kv_heads"] = (stack.num_kv_heads or stack.num_heads, stack.num_heads)
    checks.update({f"{name}.{key}": (getattr(stack, key), want) for key, want in expected.items()})
    return checks


def labels_to_hf(labels: list[str]) -> dict[str, Any]:
    """HF's ``id2label`` / ``label2id`` for our label list (class-index order)."""
    return {
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def refuse_mismatches(checks: dict[str, tuple[Any, Any]], model_type: str) -> None:
    """CheckpointError listing every ``key: (got, want)`` that differs."""
    wrong = [
        f"{key} is {got!r}, {model_type} needs {want!r}"
        for key, (got, want) in checks.items()
        if got != want
    ]
    need(not wrong, f"the model cannot be written as HF {model_type}: {'; '.join(wrong)}")


def lm_from_hf(name: str, hf: dict[str, Any]) -> dict[str, Any]:
    """Options of the causal-LM target: a bias-free head, tied as config.json says."""
    need(name == "lm", f"target {name!r} has no causal-LM HF head")
    return {"bias": False, "tied": bool(hf.get("tie_word_embeddings", True))}


def lm_to_hf(entry: TargetConfig, config: ModelConfig) -> dict[str, Any]:
    """HF keys the ``lm`` target implies; HF's causal-LM heads have no bias."""
    options = target_options(entry)
    need(not options["bias"], "target lm cannot be written to HF with bias: true")
    return {"tie_word_embeddings": bool(options["tied"])}

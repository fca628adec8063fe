"""ViT: images cut into patches (the ``patch`` embedding part) through a pre-norm encoder.

Files say ``encoder.layer.{i}.attention.attention.query`` ... (transformers 4's names, which
transformers 5 still writes although its modules are now ``layers.{i}.attention.q_proj``); the
table uses the file names, and import also accepts the module names (renamed first), so a state
dict saved straight from a transformers 5 model converts too.
"""

from __future__ import annotations

from typing import Any

from pretrainkit.config import ModelConfig, TargetConfig
from pretrainkit.convert import common
from pretrainkit.convert.spec import Family, Head, Transform, need, params, register

LAYER = "encoder.layers.{i}"
ADD_BATCH = Transform(unsqueeze=True)  # HF keeps a leading batch dimension of 1
BODY = (
    ("embedding.parts.patch.cls", "embeddings.cls_token", ADD_BATCH),
    ("embedding.parts.position.weight", "embeddings.position_embeddings", ADD_BATCH),
    *params(
        ("embedding.parts.patch.projection", "embeddings.patch_embeddings.projection"),
        (f"{LAYER}.attention.query", "encoder.layer.{i}.attention.attention.query"),
        (f"{LAYER}.attention.key", "encoder.layer.{i}.attention.attention.key"),
        (f"{LAYER}.attention.value", "encoder.layer.{i}.attention.attention.value"),
        (f"{LAYER}.attention.output", "encoder.layer.{i}.attention.output.dense"),
        (f"{LAYER}.attention_norm", "encoder.layer.{i}.layernorm_before"),
        (f"{LAYER}.feed_forward.up", "encoder.layer.{i}.intermediate.dense"),
        (f"{LAYER}.feed_forward.down", "encoder.layer.{i}.output.dense"),
        (f"{LAYER}.ffn_norm", "encoder.layer.{i}.layernorm_after"),
        ("encoder.final_norm", "layernorm"),
    ),
)
# transformers 5 module names → file names.
RENAMES = (
    (r"(^|\.)layers\.(\d+)\.", r"\1encoder.layer.\2."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
)
HEADS = (
    Head("ViTModel", (), passthrough=("pooler.dense.weight", "pooler.dense.bias")),
    Head(
        "ViTForImageClassification",
        ("classification",),
        "vit.",
        params(("targets.classification.classifier", "classifier")),
    ),
)
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """Our model config (no targets) for a HF ViT config.json."""
    missing = [key for key in REQUIRED if key not in hf]
    need(not missing, f"config.json lacks {', '.join(missing)}")
    need(hf.get("qkv_bias", True), "qkv_bias: false is not supported (every projection has bias)")
    image, patch = hf.get("image_size", 224), hf.get("patch_size", 16)
    need(
        isinstance(image, int) and isinstance(patch, int),
        f"only square images and patches are supported, got image_size {image!r}, "
        f"patch_size {patch!r}",
    )
    eps = hf.get("layer_norm_eps", 1e-12)
    dropout = hf.get("hidden_dropout_prob", 0.0)
    return {
        "name": "vit",
        "hidden_size": hf["hidden_size"],
        "embedding": {
            "parts": ["patch", "position"],
            "image_size": image,
            "patch_size": patch,
            "channels": hf.get("num_channels", 3),
            "max_positions": (image // patch) ** 2 + 1,
            "layer_norm": False,
            "dropout": dropout,
        },
        "encoder": {
            "num_layers": hf["num_hidden_layers"],
            "num_heads": hf["num_attention_heads"],
            "ffn_size": hf["intermediate_size"],
            "activation": common.activation_from_hf(hf.get("hidden_act", "gelu")),
            "norm_position": "pre",
            "norm_eps": eps,
            "position": "absolute",
            "dropout": dropout,
            "attention_dropout": hf.get("attention_probs_dropout_prob", 0.0),
            "final_norm": True,
        },
    }


def target_from_hf(name: str, hf: dict[str, Any]) -> dict[str, Any]:
    need(name == "classification", f"target {name!r} has no ViT head")
    problem = hf.get("problem_type")
    need(
        problem in (None, "single_label_classification"),
        f"problem_type {problem!r} is not supported yet (single-label classification only)",
    )
    # HF classifies the final [CLS] vector directly: no pooler, no dropout.
    return {
        "labels": common.labels_from_hf(hf),
        "pooling": "first",
        "pooler": False,
        "dropout": 0.0,
    }


def target_to_hf(entry: TargetConfig, config: ModelConfig) -> dict[str, Any]:
    options = common.target_options(entry)
    need(
        options["pooling"] == "first" and not options["pooler"],
        "target classification is written to ViT only with pooling: first and pooler: false "
        f"(HF classifies the final [CLS] vector); got pooling {options['pooling']!r}, "
        f"pooler {options['pooler']!r}",
    )
    return common.labels_to_hf(options["labels"])


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """HF ViT config keys; refuses what ViT cannot compute."""
    emb, enc = config.embedding, config.encoder
    checks = {
        "embedding.parts": (emb.parts, ["patch", "position"]),
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
            causal=False,
            share_layers=False,
            final_norm=True,
            head_dim=None,
            attention_scale=None,
        ),  # fmt: skip
    }
    common.refuse_mismatches(checks, "vit")
    need(
        enc.activation in common.ACTIVATIONS_TO_HF, f"activation {enc.activation!r} has no HF name"
    )
    image, patch = emb.image_size or 0, emb.patch_size or 1
    need(
        emb.max_positions == (image // patch) ** 2 + 1,
        f"embedding.max_positions must be {(image // patch) ** 2 + 1} (patches + [CLS]) for ViT",
    )
    return {
        "model_type": "vit",
        "hidden_size": config.hidden_size,
        "num_hidden_layers": enc.num_layers,
        "num_attention_heads": enc.num_heads,
        "intermediate_size": enc.ffn_size,
        "hidden_act": common.ACTIVATIONS_TO_HF[enc.activation],
        "hidden_dropout_prob": enc.dropout,
        "attention_probs_dropout_prob": enc.attention_dropout,
        "layer_norm_eps": enc.norm_eps,
        "image_size": image,
        "patch_size": patch,
        "num_channels": emb.channels,
        "qkv_bias": True,
    }


register(
    Family(
        model_type="vit",
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        target_from_hf=target_from_hf,
        target_to_hf=target_to_hf,
        body=BODY,
        heads=HEADS,
        unsupported=("ViTForMaskedImageModeling",),
        tokenizer_class="ViTImageProcessor",
        renames=RENAMES,
    )
)

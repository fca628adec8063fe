"""Import and export agree: a grid of HF configs goes HF → pretrainkit → HF unchanged.

For every family that converts, the product of the options that change which tensors exist or
how they are used (head, tied or untied output layer, dense or gated feed-forward, encoder and
decoder depths, activation, T5's two ways of recording the output scaling, ...) is built as a
tiny HF model with random weights of odd sizes, saved with ``save_pretrained`` and converted.
Each one is then either refused on import with a CheckpointError (and nothing written), or
imported computing what HF computes and written back with every tensor bit for bit the
original's, a config.json that transformers reads as the original one, and weights that
transformers loads exactly (ties included). No case may convert in and then fail on the way out.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import require  # noqa: E402
from safetensors.torch import load_file

import pretrainkit
from pretrainkit.convert import convert_from_hf, convert_to_hf, family_names
from pretrainkit.errors import CheckpointError

tf = require("transformers")

# Widths, head counts and feed-forward sizes, taken in turn by the cases of a family so that
# every combination of options meets several shapes (3 and 5 heads, widths not powers of 2).
SHAPES = ((36, 3, 40), (40, 5, 24), (64, 4, 64), (30, 2, 17))
VOCAB = 61
POSITIONS = 16
# config.json entries that are bookkeeping rather than the model.
BOOKKEEPING = {"transformers_version", "_name_or_path", "dtype", "torch_dtype", "output_attentions"}
# Keys transformers 5 has dropped that the export still writes, for transformers 4 readers.
FOR_TRANSFORMERS_4 = {"position_embedding_type", "rope_theta"}
# HF names of one function: the import maps both to one of ours, the export writes the first.
SAME_FUNCTION = {"gelu_pytorch_tanh": "gelu_new", "swish": "silu"}


@dataclass
class Case:
    """One HF model to build: ``architecture(config_class(**config))``."""

    family: str
    architecture: str
    config: dict[str, Any]
    own_output: bool = False  # give the output layer weights of its own (an untied head)
    refused: str | None = None  # the import's CheckpointError, as a regular expression
    edit_config: dict[str, Any] = field(default_factory=dict)  # written over config.json
    drop_config: tuple[str, ...] = ()  # removed from config.json (older transformers)

    @property
    def id(self) -> str:
        parts = [self.architecture]
        parts += [f"{k}={v}" for k, v in sorted(self.config.items()) if k in SHOWN]
        parts += ["own_output"] * self.own_output + [
            f"{k}={v}" for k, v in self.edit_config.items()
        ]
        parts += [f"-{k}" for k in self.drop_config]
        return ",".join(parts)


SHOWN = {
    "hidden_act", "activation_function", "feed_forward_proj", "tie_word_embeddings", "num_layers",
    "num_decoder_layers", "encoder_layers", "decoder_layers", "num_hidden_layers", "n_layer",
    "num_key_value_heads", "head_dim", "d_kv", "scale_embedding", "embedding_size", "n_inner",
    "image_size", "patch_size", "num_channels", "hidden_size", "d_model", "n_embd",
}  # fmt: skip


def shape(index: int) -> tuple[int, int, int]:
    return SHAPES[index % len(SHAPES)]


def labels(index: int) -> dict[str, Any]:
    count = 2 + index % 3
    return {"id2label": {i: f"class-{i}" for i in range(count)}}


BERT_LIKE = {  # model_type: (class name prefix, config keys of its own)
    "bert": ("Bert", {}),
    "roberta": ("Roberta", {"type_vocab_size": 1, "pad_token_id": 1}),
    "xlm-roberta": ("XLMRoberta", {"type_vocab_size": 1}),
    "albert": ("Albert", {}),
}
ENCODER_HEADS = (
    "Model",
    "ForMaskedLM",
    "ForPreTraining",
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForQuestionAnswering",
)
TIES_THE_DECODER = ("ForMaskedLM", "ForPreTraining")


def bert_like_cases() -> list[Case]:
    cases = []
    for family, (prefix, extra) in BERT_LIKE.items():
        acts = ("gelu", "gelu_new", "relu", "silu", "gelu_pytorch_tanh")
        product = itertools.product(ENCODER_HEADS, acts, (1, 2), (True, False))
        for index, (head, act, layers, tied) in enumerate(product):
            if head == "ForPreTraining" and family not in ("bert", "albert"):
                continue
            if not tied and head not in TIES_THE_DECODER:
                continue  # nothing to tie
            hidden, heads, ffn = shape(index)
            config = {
                "vocab_size": VOCAB, "hidden_size": hidden, "num_attention_heads": heads,
                "num_hidden_layers": layers, "intermediate_size": ffn,
                "max_position_embeddings": POSITIONS, "hidden_act": act,
                "tie_word_embeddings": tied, **extra,
            }  # fmt: skip
            if family == "albert":
                config["embedding_size"] = (8, 12, 20)[index % 3]
            if head in ("ForSequenceClassification", "ForTokenClassification"):
                config.update(labels(index))
            refused = None if tied or head not in TIES_THE_DECODER else "differ from their source"
            cases.append(Case(family, prefix + head, config, refused=refused))
    return cases


def gpt2_cases() -> list[Case]:
    cases = []
    heads = ("GPT2Model", "GPT2LMHeadModel")
    acts = ("gelu_new", "gelu", "relu", "gelu_pytorch_tanh")
    product = itertools.product(heads, acts, (1, 2), (True, False), (None, "set"))
    for index, (head, act, layers, tied, inner) in enumerate(product):
        if head == "GPT2Model" and not tied:
            continue
        hidden, heads_, ffn = shape(index)
        config = {
            "vocab_size": VOCAB, "n_embd": hidden, "n_head": heads_, "n_layer": layers,
            "n_positions": POSITIONS, "n_inner": ffn if inner else None,
            "activation_function": act, "tie_word_embeddings": tied,
        }  # fmt: skip
        cases.append(Case("gpt2", head, config))
    return cases


def llama_cases() -> list[Case]:
    cases = []
    heads = ("LlamaModel", "LlamaForCausalLM")
    product = itertools.product(heads, ("silu", "gelu"), (True, False), ("all", 1), (None, 10))
    for index, (head, act, tied, kv_heads, head_dim) in enumerate(product):
        if head == "LlamaModel" and not tied:
            continue  # the same body twice
        hidden, heads_, ffn = shape(index)
        config = {
            "vocab_size": VOCAB, "hidden_size": hidden, "num_attention_heads": heads_,
            "num_key_value_heads": heads_ if kv_heads == "all" else kv_heads,
            "num_hidden_layers": 1 + index % 2, "intermediate_size": ffn, "hidden_act": act,
            "max_position_embeddings": POSITIONS, "head_dim": head_dim, "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 500.0 + index},
        }  # fmt: skip
        if head == "LlamaForCausalLM":  # a bare body keeps transformers' default
            config["tie_word_embeddings"] = tied
        cases.append(Case("llama", head, config))
    return cases


def t5_cases() -> list[Case]:
    """T5 v1.0 and v1.1 and their mixtures, as transformers 5 and 4 write them.

    transformers 5 always ties the LM head unless the file holds a different one, and records
    the v1.0 output scaling as ``scale_decoder_outputs`` (from ``tie_word_embeddings: false``
    when built); transformers 4 derives the scaling from ``tie_word_embeddings`` alone.
    """
    cases = []
    ffns = ("relu", "gated-gelu", "gated-silu", "gelu")
    depths = ((2, 1), (1, 2))
    product = itertools.product(ffns, depths, (True, False), (False, True), ("5", "4"))
    for index, (ffn, (layers, decoder_layers), tie_config, own, writer) in enumerate(product):
        hidden, heads, d_ff = shape(index)
        config = {
            "vocab_size": VOCAB, "d_model": hidden, "num_heads": heads,
            "d_kv": (hidden // heads, 7)[index % 2], "d_ff": d_ff, "num_layers": layers,
            "num_decoder_layers": decoder_layers, "feed_forward_proj": ffn,
            "relative_attention_num_buckets": 8, "relative_attention_max_distance": 20,
            "decoder_start_token_id": 0, "tie_word_embeddings": tie_config,
        }  # fmt: skip
        edit: dict[str, Any] = {}
        drop: tuple[str, ...] = ()
        if writer == "4":
            # No scale_decoder_outputs: read from tie_word_embeddings, as transformers 5 does.
            edit, drop = {"tie_word_embeddings": tie_config}, ("scale_decoder_outputs",)
        case = Case("t5", "T5ForConditionalGeneration", config, own, None, edit, drop)
        cases.append(case)
        if not own and writer == "5" and tie_config:  # a bare body keeps transformers' default
            cases.append(Case("t5", "T5Model", config))
    return cases


def bart_cases() -> list[Case]:
    cases = []
    for family, prefix in (("bart", "Bart"), ("pegasus", "Pegasus")):
        heads = (f"{prefix}Model", f"{prefix}ForConditionalGeneration")
        depths = ((2, 1), (1, 2))
        product = itertools.product(heads, depths, (False, True), ("gelu", "relu"), (True, False))
        for index, (head, (enc, dec), scale, act, tied) in enumerate(product):
            hidden, heads_, ffn = shape(index)
            config = {
                "vocab_size": VOCAB, "d_model": hidden, "encoder_layers": enc,
                "decoder_layers": dec, "encoder_attention_heads": heads_,
                "decoder_attention_heads": (heads_, 1)[index % 2], "encoder_ffn_dim": ffn,
                "decoder_ffn_dim": ffn + 3, "max_position_embeddings": POSITIONS,
                "scale_embedding": scale, "activation_function": act,
                "tie_word_embeddings": tied,
            }  # fmt: skip
            refused = None
            if not tied:
                refused = (
                    "untied from the word embedding"
                    if head.endswith("Generation")
                    else "differ from their source"
                )
            cases.append(Case(family, head, config, refused=refused))
    return cases


def vit_cases() -> list[Case]:
    cases = []
    heads = ("ViTModel", "ViTForImageClassification")
    images = ((12, 4), (15, 5), (16, 8))
    product = itertools.product(heads, images, (3, 1), ("gelu", "relu"))
    for index, (head, (image, patch), channels, act) in enumerate(product):
        hidden, heads_, ffn = shape(index)
        config = {
            "hidden_size": hidden, "num_attention_heads": heads_, "num_hidden_layers": 1 + index % 2,
            "intermediate_size": ffn, "image_size": image, "patch_size": patch,
            "num_channels": channels, "hidden_act": act,
        }  # fmt: skip
        if head == "ViTForImageClassification":
            config.update(labels(index))  # a bare ViTModel has no labels to keep
        cases.append(Case("vit", head, config))
    return cases


def speech_cases() -> list[Case]:
    cases = []
    heads = ("Speech2TextModel", "Speech2TextForConditionalGeneration")
    convolutions = (([5, 3], 10, 6), ([3], 8, 5), ([5, 5, 3], 12, 7))  # kernels, channels, mels
    product = itertools.product(heads, convolutions, (True, False), ("relu", "gelu"), (True, False))
    for index, (head, (kernels, channels, mels), scale, act, tied) in enumerate(product):
        if head == "Speech2TextModel" and not tied:
            continue  # a bare body keeps transformers' default
        hidden, heads_, ffn = shape(index)
        config = {
            "vocab_size": VOCAB, "d_model": hidden, "encoder_layers": 1 + index % 2,
            "decoder_layers": 2 - index % 2, "encoder_attention_heads": heads_,
            "decoder_attention_heads": (heads_, 1)[index % 2], "encoder_ffn_dim": ffn,
            "decoder_ffn_dim": ffn + 3, "max_source_positions": POSITIONS,
            "max_target_positions": POSITIONS + 2, "conv_kernel_sizes": kernels,
            "num_conv_layers": len(kernels), "conv_channels": channels,
            "input_feat_per_channel": mels, "scale_embedding": scale,
            "activation_function": act, "tie_word_embeddings": tied,
        }  # fmt: skip
        cases.append(Case("speech_to_text", head, config))
    return cases


CASES = [
    *bert_like_cases(),
    *gpt2_cases(),
    *llama_cases(),
    *t5_cases(),
    *bart_cases(),
    *vit_cases(),
    *speech_cases(),
]


def build(case: Case):
    model_class = getattr(tf, case.architecture)
    hf = model_class(model_class.config_class(**case.config)).eval()
    with torch.no_grad():
        if case.own_output:
            hf.lm_head.weight = torch.nn.Parameter(torch.empty_like(hf.lm_head.weight))
        # Every parameter its own random values (LayerNorms are not all ones, biases not all
        # zeros), so a tensor read into the wrong slot shows; tied ones stay one parameter.
        for parameter in hf.parameters():
            parameter.copy_(torch.randn_like(parameter))
    return hf


def reread_config(path: Path) -> dict[str, Any]:
    """config.json as transformers understands it, less bookkeeping, with the values
    transformers reads in place of an unset key filled in (both sides alike)."""
    config = tf.AutoConfig.from_pretrained(path).to_dict()
    for key in BOOKKEEPING:
        config.pop(key, None)
    for key in ("hidden_act", "activation_function"):
        if key in config:
            config[key] = SAME_FUNCTION.get(config[key], config[key])
    if config.get("label2id") is None and config.get("id2label"):
        config["label2id"] = {label: int(i) for i, label in config["id2label"].items()}
    if "classifier_dropout" in config and config["classifier_dropout"] is None:
        config["classifier_dropout"] = config["hidden_dropout_prob"]  # BERT's and RoBERTa's
    if config.get("model_type") == "gpt2" and config["n_inner"] is None:
        config["n_inner"] = 4 * config["n_embd"]
    return config


def assert_same_outputs(case: Case, hf, ours) -> None:
    """What was imported computes what HF computes: its logits where HF's head has them (the
    tie and scale of an LM head show there), else the body's last hidden states."""
    generator = torch.Generator().manual_seed(1)
    if case.family == "vit":
        size, channels = case.config["image_size"], case.config["num_channels"]
        inputs = {"pixel_values": torch.randn(2, channels, size, size, generator=generator)}
    elif case.family == "speech_to_text":
        mels = case.config["input_feat_per_channel"]
        inputs = {
            "input_features": torch.randn(2, 13, mels, generator=generator),
            "decoder_input_ids": torch.randint(5, VOCAB, (2, 5), generator=generator),
        }
    else:
        inputs = {"input_ids": torch.randint(5, VOCAB, (2, 7), generator=generator)}
        if hf.config.is_encoder_decoder:
            inputs["decoder_input_ids"] = torch.randint(5, VOCAB, (2, 5), generator=generator)
    with torch.no_grad():
        expected, got = hf(**inputs), ours(**inputs)
    if getattr(expected, "logits", None) is not None:
        want, have = expected.logits, got.logits
    elif getattr(expected, "last_hidden_state", None) is not None:
        want, have = expected.last_hidden_state, got.hidden_states
    else:
        return  # two-output heads (pre-training, question answering): their own tests
    assert have.shape == want.shape
    # Weights are N(0, 1), so values are large: the tolerance follows their size.
    assert (have - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_import_then_export_gives_back_the_same_model(tmp_path, case, caplog):
    caplog.set_level(logging.ERROR)  # no tokenizer in these folders: the warning is expected
    torch.manual_seed(len(CASES))
    hf = build(case)
    source = tmp_path / "hf"
    hf.save_pretrained(source)
    if case.edit_config or case.drop_config:
        written = json.loads((source / "config.json").read_text())
        written = {k: v for k, v in written.items() if k not in case.drop_config}
        (source / "config.json").write_text(json.dumps({**written, **case.edit_config}))
    if case.refused is not None:
        with pytest.raises(CheckpointError, match=case.refused):
            convert_from_hf(source, tmp_path / "ours")
        assert not (tmp_path / "ours").exists()
        return
    convert_from_hf(source, tmp_path / "ours")
    assert_same_outputs(case, hf, pretrainkit.load(tmp_path / "ours").eval())
    back = convert_to_hf(tmp_path / "ours", tmp_path / "back")

    original = load_file(str(source / "model.safetensors"))
    returned = load_file(str(back / "model.safetensors"))
    assert sorted(returned) == sorted(original)
    differ = [k for k in original if not torch.equal(original[k], returned[k])]
    assert differ == []
    wanted, written = reread_config(source), reread_config(back)
    assert {k: written.get(k, "(absent)") for k in wanted} == wanted
    assert set(written) - set(wanted) <= FOR_TRANSFORMERS_4

    # What transformers builds from the export is the original model, ties included.
    again = type(hf).from_pretrained(back)
    expected, got = hf.state_dict(), again.state_dict()
    assert sorted(got) == sorted(expected)
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
    assert shared_parameters(again) == shared_parameters(hf)


def shared_parameters(model) -> set[str]:
    """Names of the parameters that are another one (tied)."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return every - {name for name, _ in model.named_parameters()}


def test_the_grid_covers_every_family_that_converts():
    assert sorted({case.family for case in CASES}) == family_names()
    assert len(CASES) >= 150
    refused = [case for case in CASES if case.refused]
    assert 0 < len(refused) < len(CASES) // 4

"""GPT-2 and LLaMA ⇄ pretrainkit through the real converter, against transformers on CPU fp32.

Tiny HF models with random weights and odd sizes (3 heads of 16, one key/value head for LLaMA)
are saved with ``save_pretrained``, converted, compared on a right-padded batch, converted back
and required to be bit-for-bit the original tensors.
"""

from __future__ import annotations

import pytest
import torch
from helpers import invoke, require

import pretrainkit
from pretrainkit.convert import convert_from_hf, convert_to_hf

tf = require("transformers")

from convert_helpers import broken_checkpoint_error, export_bit_exact  # noqa: E402


def gpt2_config(**extra):
    return tf.GPT2Config(
        vocab_size=1000, n_embd=48, n_head=3, n_layer=3, n_positions=40, n_inner=96, **extra
    )


def llama_config(**extra):
    return tf.LlamaConfig(
        vocab_size=1000,
        hidden_size=48,
        num_attention_heads=3,
        num_key_value_heads=1,
        num_hidden_layers=3,
        intermediate_size=96,
        max_position_embeddings=40,
        rms_norm_eps=1e-5,
        # A base other than the default, so a lost rope_theta would show in the outputs.
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        **extra,
    )


CASES = {
    "gpt2-base": (lambda: tf.GPT2Model(gpt2_config()), tf.AutoModel),
    "gpt2-lm": (lambda: tf.GPT2LMHeadModel(gpt2_config()), tf.AutoModelForCausalLM),
    "llama-base": (lambda: tf.LlamaModel(llama_config()), tf.AutoModel),
    "llama-lm": (lambda: tf.LlamaForCausalLM(llama_config()), tf.AutoModelForCausalLM),
    "llama-lm-tied": (
        lambda: tf.LlamaForCausalLM(llama_config(tie_word_embeddings=True)),
        tf.AutoModelForCausalLM,
    ),
    # Heads wider than hidden / heads (3 x 24 = 72 ≠ 48), as some checkpoints have.
    "llama-wide-heads": (
        lambda: tf.LlamaForCausalLM(llama_config(head_dim=24)),
        tf.AutoModelForCausalLM,
    ),
}


def right_padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 1000, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def max_diff(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor) -> float:
    return (a[keep] - b[keep]).abs().max().item()


@pytest.mark.parametrize("case", list(CASES))
def test_hf_parity_and_bit_exact_round_trip(tmp_path, case):
    build, auto = CASES[case]
    torch.manual_seed(0)
    hf = build().eval()
    if hasattr(hf, "lm_head") and not hf.config.tie_word_embeddings:
        with torch.no_grad():  # an lm_head unlike the embedding: untied really is untied
            hf.lm_head.weight.normal_()
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    if case.startswith("llama"):
        assert ours.config.encoder.rotary_base == 500.0
        assert ours.config.encoder.num_kv_heads == 1

    ids, mask = right_padded_batch()
    keep = mask.bool()
    with torch.no_grad():
        expected_hidden = hf.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, attention_mask=mask)
        hidden_diff = max_diff(got.hidden_states, expected_hidden, keep)
        assert hidden_diff <= 1e-5
        if auto is tf.AutoModelForCausalLM:
            expected_logits = hf(input_ids=ids, attention_mask=mask).logits
            assert max_diff(got.logits, expected_logits, keep) <= 1e-5
            tied = ours.config.targets[0].options["tied"]
            assert tied == hf.config.tie_word_embeddings
            assert (ours.targets["lm"].decoder.weight is ours.embedding.word_weight) == tied

    again = export_bit_exact(tmp_path / "ours", tmp_path, hf, auto)
    with torch.no_grad():  # the re-exported config (rope base, eps, ties) computes the same
        again_hidden = again.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(again_hidden[keep], expected_hidden[keep])


def test_gpt2_wrong_shaped_fused_attention_is_named(tmp_path):
    key = "transformer.h.1.attn.c_attn.weight"
    hf = tf.GPT2LMHeadModel(gpt2_config())
    message = broken_checkpoint_error(tmp_path, hf, lambda s: s.update({key: torch.zeros(48, 96)}))
    assert f"{key}: file (48, 96) vs " in message
    assert "encoder.layers.1.attention.query.weight + " in message
    assert "(48, 144)" in message


def test_llama_wrong_kv_shape_and_missing_tensor_are_named(tmp_path):
    shaped, gone = "model.layers.2.self_attn.k_proj.weight", "model.layers.0.mlp.gate_proj.weight"

    def change(state):
        state[shaped] = torch.zeros(48, 48)  # as if every head had its own key head
        state.pop(gone)

    message = broken_checkpoint_error(tmp_path, tf.LlamaForCausalLM(llama_config()), change)
    assert f"{shaped}: file (48, 48) vs encoder.layers.2.attention.key.weight (16, 48)" in message
    assert gone in message


def test_cli_converts_gpt2_with_its_tokenizer_json(tmp_path, capsys):
    tokenizers = require("tokenizers")
    vocab = {"<|endoftext|>": 0}
    for token in [*"abcdefghijklmnopqrstuvwxyzĠ", "Ġa"]:
        vocab[token] = len(vocab)
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, [("Ġ", "a")]))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    config = gpt2_config(bos_token_id=0, eos_token_id=0)
    config.vocab_size = len(vocab)
    tf.GPT2LMHeadModel(config).save_pretrained(tmp_path / "hf")
    backend.save(str(tmp_path / "hf" / "tokenizer.json"))
    code, _, err = invoke(capsys, "convert", "--from-hf", tmp_path / "hf", "--out", tmp_path / "o")
    assert code == 0, err
    ours = pretrainkit.load(tmp_path / "o")
    assert ours.config.name == "gpt2"
    # <|endoftext|> is read off the vocabulary as unk, bos and eos; GPT-2 adds no tokens.
    text = "a cab a bad"
    expected = tf.AutoTokenizer.from_pretrained(tmp_path / "hf")(text)["input_ids"]
    assert ours.tokenizer.build_inputs(ours.tokenizer.encode(text))[0] == expected
    assert ours.tokenizer.eos_id == 0 and 28 in expected  # "Ġa" merged
    code, _, err = invoke(capsys, "convert", "--to-hf", tmp_path / "o", "--out", tmp_path / "b")
    assert code == 0, err
    assert tf.AutoModelForCausalLM.from_pretrained(tmp_path / "b").config.n_inner == 96
    exported = tf.AutoTokenizer.from_pretrained(tmp_path / "b")
    assert type(exported).__name__ == "GPT2Tokenizer"
    assert exported(text)["input_ids"] == expected


def test_preset_without_family_name_exports_by_shape(tmp_path):
    # A model built from the gpt2-small preset (shrunk) is found to be GPT-2 by its shape.
    model = pretrainkit.build_model(
        "gpt2-small",
        {
            "vocab_size": 100,
            "hidden_size": 24,
            "encoder.num_layers": 1,
            "encoder.num_heads": 2,
            "encoder.ffn_size": 32,
            "embedding.max_positions": 16,
        },
    )
    model.save(tmp_path / "ours")
    back = convert_to_hf(tmp_path / "ours", tmp_path / "hf")
    again = tf.AutoModelForCausalLM.from_pretrained(back)
    assert type(again) is tf.GPT2LMHeadModel

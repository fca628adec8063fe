"""Greedy generation of converted models is token-identical to transformers' generate."""

from __future__ import annotations

import pytest
import torch

import pretrainkit
from pretrainkit.convert import convert_from_hf
from pretrainkit.generation import generate

tf = pytest.importorskip("transformers")


def hf_gpt2():
    return tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=300, n_embd=48, n_layer=3, n_head=3, n_positions=64, initializer_range=0.3,
    ))  # fmt: skip


def hf_llama():
    return tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=300, hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
        num_key_value_heads=1, intermediate_size=96, max_position_embeddings=64,
        initializer_range=0.3, tie_word_embeddings=False,
    ))  # fmt: skip


@pytest.mark.parametrize("make", [hf_gpt2, hf_llama], ids=["gpt2", "llama"])
def test_greedy_matches_transformers_generate(make, tmp_path):
    torch.manual_seed(0)
    hf = make().eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    prompts = torch.randint(1, 300, (3, 7), generator=torch.Generator().manual_seed(1))
    for prompt in prompts:
        expected = hf.generate(
            prompt[None], attention_mask=torch.ones(1, 7, dtype=torch.long), max_new_tokens=20,
            do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=None,
        )[0, 7:].tolist()  # fmt: skip
        got = generate(ours, prompt[None], max_new_tokens=20, strategy="greedy")[0]
        assert got == expected

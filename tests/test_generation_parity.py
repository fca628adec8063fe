"""Greedy generation of converted models is token-identical to transformers' generate."""

from __future__ import annotations

import pytest
import torch
from helpers import require

import pretrainkit
from pretrainkit.convert import convert_from_hf
from pretrainkit.generation import generate

tf = require("transformers")

NEW_TOKENS = 20
# Prompts of different lengths: our generate left-pads them into one batch.
LENGTHS = (7, 3, 11, 5)


def hf_gpt2():
    return tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=300, n_embd=48, n_layer=3, n_head=3, n_positions=64, initializer_range=0.3,
        bos_token_id=None, eos_token_id=None,
    ))  # fmt: skip


def hf_llama():
    return tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=300, hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
        num_key_value_heads=1, intermediate_size=96, max_position_embeddings=64,
        initializer_range=0.3, tie_word_embeddings=False,
    ))  # fmt: skip


def hf_greedy(hf, ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    out = hf.generate(
        ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1,
        pad_token_id=0, eos_token_id=None,
    )  # fmt: skip
    return out[:, ids.shape[1] :].tolist()


@pytest.mark.parametrize("make", [hf_gpt2, hf_llama], ids=["gpt2", "llama"])
def test_padded_batch_matches_transformers_generate_row_by_row(make, tmp_path):
    torch.manual_seed(0)
    hf = make().eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 300, (n,), generator=g).tolist() for n in LENGTHS]

    # The reference: each prompt alone, no padding involved.
    expected = [
        hf_greedy(hf, torch.tensor([p]), torch.ones(1, len(p), dtype=torch.long))[0]
        for p in prompts
    ]
    # A reference that repeats one token would pass for a broken model too.
    for row in expected:
        assert len(row) == NEW_TOKENS and len(set(row)) >= 8, row
    assert len({tuple(row) for row in expected}) == len(prompts)

    got = generate(ours, prompts, max_new_tokens=NEW_TOKENS, strategy="greedy")
    for i, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        assert mine == theirs, f"prompt {i} (length {LENGTHS[i]})"

    # transformers' own left-padded batch agrees, so the padding convention is the same.
    width = max(LENGTHS)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(prompt)
        mask[i, width - len(prompt) :] = 1
    assert hf_greedy(hf, ids, mask) == expected

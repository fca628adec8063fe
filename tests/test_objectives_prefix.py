"""The ``prefixlm`` objective and the per-row attention patterns (prefix, packing) it and
``sft`` need."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import data_dir, write_corpus
from objective_helpers import TINY, tiny_model

import pretrainkit
from pretrainkit.data import BatchIterator, Shards, pretraining_stream
from pretrainkit.data.masking import IGNORE_INDEX
from pretrainkit.data.prefix import document_chunks
from pretrainkit.data.preprocessing import preprocess
from pretrainkit.errors import ConfigError
from pretrainkit.layers.attention import attention_pattern
from pretrainkit.tokenization import train_tokenizer

# -- masks ----------------------------------------------------------------------------------


def test_prefix_pattern_equals_hand_built_mask() -> None:
    # Row 0: prefix of 2 in 5 tokens; row 1: prefix 0 = causal.
    got = attention_pattern(5, causal=False, prefix_lengths=torch.tensor([2, 0]))
    expected_row0 = torch.tensor(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert got.shape == (2, 1, 5, 5)
    assert torch.equal(got[0, 0], expected_row0)
    assert torch.equal(got[1, 0], torch.ones(5, 5, dtype=torch.bool).tril())


def test_packed_pattern_is_block_diagonal_causal() -> None:
    examples = torch.tensor([[1, 1, 1, 2, 2]])
    got = attention_pattern(5, causal=True, example_ids=examples)[0, 0]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(got, expected)
    # A bidirectional stack keeps both directions inside an example.
    both = attention_pattern(5, causal=False, example_ids=examples)[0, 0]
    assert int(both.sum()) == 3 * 3 + 2 * 2


def test_plain_batches_keep_the_fast_path() -> None:
    model = tiny_model("gpt2-small")
    assert model.encoder._mask(None, 6, torch.device("cpu")) == (None, True)
    mask, is_causal = model.encoder._mask(None, 6, torch.device("cpu"), None, torch.tensor([0]))
    assert mask is not None and not is_causal


@pytest.mark.parametrize("preset", ["gpt2-small", "bert-tiny"])
def test_prefix_attends_both_ways_and_continuation_causally(preset: str) -> None:
    model = tiny_model(preset)
    ids = torch.randint(5, 120, (1, 8), generator=torch.Generator().manual_seed(1))
    prefix = torch.tensor([3])
    changed_last = ids.clone()
    changed_last[0, 7] = (ids[0, 7] + 1) % 120
    changed_prefix = ids.clone()
    changed_prefix[0, 2] = (ids[0, 2] + 1) % 120
    with torch.no_grad():
        base = model(ids, prefix_lengths=prefix).logits
        later = model(changed_last, prefix_lengths=prefix).logits
        inside = model(changed_prefix, prefix_lengths=prefix).logits
    # A change at the end reaches nothing before it (causal after the prefix) ...
    assert torch.equal(base[0, :7], later[0, :7])
    # ... while a change at the prefix's end reaches the prefix's first token (bidirectional).
    assert (base[0, 0] - inside[0, 0]).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("preset", "extra"),
    [
        ("gpt2-small", {}),  # learned positions
        ("llama", {"encoder.num_kv_heads": 1}),  # rotary positions, grouped-query attention
        ("bert-tiny", {}),  # a bidirectional encoder, made causal by prefix_lengths 0
        ("gpt2-small", {"encoder.position": "alibi", "embedding.parts": ["word"]}),
    ],
)
def test_packed_examples_compute_what_they_compute_alone(preset: str, extra: dict) -> None:
    model = tiny_model(preset, **extra)
    generator = torch.Generator().manual_seed(2)
    lengths = [7, 4, 9]
    alone = [torch.randint(5, 120, (1, n), generator=generator) for n in lengths]
    # Row 0 packs all three; row 1 holds only the second one, then padding.
    width = sum(lengths)
    ids = torch.zeros(2, width, dtype=torch.long)
    ids[0] = torch.cat(alone, dim=1)[0]
    ids[1, :4] = alone[1][0]
    positions = torch.zeros(2, width, dtype=torch.long)
    positions[0] = torch.cat([torch.arange(n) for n in lengths])
    positions[1, :4] = torch.arange(4)
    examples = torch.zeros(2, width, dtype=torch.long)
    examples[0] = torch.cat([torch.full((n,), i + 1) for i, n in enumerate(lengths)])
    examples[1, :4] = 1
    padding = (examples > 0).long()
    with torch.no_grad():
        packed = model(
            ids,
            attention_mask=padding,
            position_ids=positions,
            example_ids=examples,
            prefix_lengths=torch.zeros(2, dtype=torch.long),
        ).logits
        singles = [model(x, prefix_lengths=torch.zeros(1, dtype=torch.long)).logits for x in alone]
    assert torch.isfinite(packed).all()
    start = 0
    for single, n in zip(singles, lengths):
        torch.testing.assert_close(packed[0, start : start + n], single[0], atol=1e-5, rtol=0)
        start += n
    torch.testing.assert_close(packed[1, :4], singles[1][0], atol=1e-5, rtol=0)


# -- prefixlm data --------------------------------------------------------------------------


def test_document_chunks_follow_the_rule() -> None:
    # Sentences of 3, 2, 4 and 6 tokens from offset 10; chunks of at most 8 tokens.
    ends = np.array([13, 15, 19, 25])
    assert document_chunks(ends, 10, 8) == [
        (10, 13, 15),  # 3 + 2 (the 4 does not fit): prefix 3 of 5 (the first sentence at least)
        (15, 17, 19),  # 4 alone (with 6 it would be 10): one sentence, cut at half
        (19, 22, 25),
    ]
    # A sentence longer than a chunk is cut; its rest starts the next chunk.
    assert document_chunks(np.array([20]), 0, 8) == [(0, 4, 8), (8, 12, 16), (16, 18, 20)]
    # Several sentences: the prefix takes whole sentences up to half of the chunk.
    assert document_chunks(np.array([2, 4, 6, 8]), 0, 8) == [(0, 4, 8)]
    assert document_chunks(np.array([1]), 0, 8) == [(0, 0, 1)]


@pytest.fixture(scope="module")
def prefix_shards(tmp_path_factory: pytest.TempPathFactory) -> Shards:
    folder = tmp_path_factory.mktemp("prefixlm")
    corpus = write_corpus(folder / "corpus.txt", documents=30, seed=3)
    train_tokenizer([corpus], "wordpiece", 120, folder / "tok")
    preprocess([corpus], folder / "tok", "prefixlm", 24, folder / "shards", log=lambda _: None)
    return Shards.open(folder / "shards")


def test_prefixlm_instances_label_only_the_continuation(prefix_shards: Shards) -> None:
    tokenizer = prefix_shards.tokenizer
    stream = pretraining_stream(prefix_shards, seed=1)
    instances = sum(len(stream.chunks(d)) for d in range(prefix_shards.num_documents))
    seen = 0
    for _ in range(instances):
        instance = next(stream)
        ids, labels = instance["input_ids"], instance["labels"]
        prefix = int(instance["prefix_lengths"])
        assert len(ids) <= 24
        assert ids[0] == tokenizer.cls_id and ids[prefix - 1] == tokenizer.sep_id
        assert ids[-1] == tokenizer.eos_id
        assert int((labels == IGNORE_INDEX).sum()) == prefix
        assert np.array_equal(labels[prefix:], ids[prefix:])
        assert not instance["token_type_ids"].any()
        seen += len(ids) - 3
    # One epoch covers every token of the corpus exactly once.
    assert seen == prefix_shards.num_tokens
    assert stream.state_dict()["epoch"] == 0 and stream.state_dict()["cursor"] == len(
        range(prefix_shards.num_documents)
    )


def test_prefix_share_is_an_option_that_bounds_the_prefix(prefix_shards: Shards) -> None:
    """``--prefix-share``: a smaller share gives shorter prefixes (whole leading sentences, at
    least one, so not a hard bound); a stream saved with one share does not resume with
    another."""
    shares = {}
    for share in (0.25, 0.75):
        stream = pretraining_stream(prefix_shards, seed=1, options={"prefix_share": share})
        prefixes = []
        for _ in range(40):
            instance = next(stream)
            prefix, chunk = int(instance["prefix_lengths"]) - 2, len(instance["input_ids"]) - 3
            assert 0 < prefix < chunk
            prefixes.append(prefix / chunk)
        shares[share] = sum(prefixes) / len(prefixes)
    assert shares[0.25] < shares[0.75] - 0.1, shares
    saved = pretraining_stream(prefix_shards, seed=1, options={"prefix_share": 0.25}).state_dict()
    with pytest.raises(ConfigError, match="prefix_share"):
        pretraining_stream(prefix_shards, seed=1).load_state_dict(saved)
    with pytest.raises(ConfigError, match="prefix_share"):
        pretraining_stream(prefix_shards, seed=1, options={"prefix_share": 1.5})


def test_prefixlm_on_real_text(tmp_path: Path) -> None:
    data = data_dir("corpora/CLUECorpusSmall_bert_sampled.txt", "vocab/google_zh_vocab.txt")
    lines = (data / "corpora/CLUECorpusSmall_bert_sampled.txt").read_text("utf-8").splitlines()
    corpus = tmp_path / "clue.txt"
    corpus.write_text("\n".join(lines[:400]) + "\n", encoding="utf-8")
    vocab = data / "vocab/google_zh_vocab.txt"
    preprocess([corpus], vocab, "prefixlm", 128, tmp_path / "shards", log=lambda _: None)
    shards = Shards.open(tmp_path / "shards")
    stream = pretraining_stream(shards, seed=0)
    instances = sum(len(stream.chunks(d)) for d in range(shards.num_documents))
    shares, seen = [], 0
    for _ in range(instances):
        instance = next(stream)
        prefix, length = int(instance["prefix_lengths"]), len(instance["input_ids"])
        assert length <= 128 and int((instance["labels"] == IGNORE_INDEX).sum()) == prefix
        seen += length - 3
        shares.append((prefix - 2) / (length - 3))
    assert seen == shards.num_tokens
    assert 0.2 < float(np.median(shares)) <= 0.5, np.median(shares)


def test_prefixlm_stream_resumes_exactly(prefix_shards: Shards) -> None:
    stream = pretraining_stream(prefix_shards, seed=4)
    for _ in range(13):
        next(stream)
    state = json.loads(json.dumps(stream.state_dict()))
    expected = [next(stream) for _ in range(40)]  # crosses an epoch
    again = pretraining_stream(prefix_shards, seed=4)
    again.load_state_dict(state)
    for want in expected:
        got = next(again)
        assert all(np.array_equal(got[key], want[key]) for key in want)


def test_prefixlm_trains_a_decoder_only_model(prefix_shards: Shards) -> None:
    model = pretrainkit.build_model(
        "gpt2-small",
        {**TINY, "vocab_size": prefix_shards.tokenizer.vocab_size},
    ).train()
    torch.manual_seed(0)
    batches = BatchIterator(pretraining_stream(prefix_shards, seed=0), 8, 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(**batches.next_batch()).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses

"""The ``prefixlm`` and ``sft`` objectives and the per-row attention patterns they need."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import data_dir, sentence, write_corpus

import pretrainkit
from pretrainkit.data import BatchIterator, Shards, pretraining_stream
from pretrainkit.data.corpus import CorpusFile
from pretrainkit.data.instructions import read_instruction_documents
from pretrainkit.data.masking import IGNORE_INDEX
from pretrainkit.data.prefix import document_chunks
from pretrainkit.data.preprocessing import preprocess
from pretrainkit.errors import DataError
from pretrainkit.layers.attention import attention_pattern
from pretrainkit.tokenization import train_tokenizer


def _write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_instructions(folder: Path) -> Path:
    """Alpaca-style and chat records that repeat or reverse six grammar words."""
    rng = random.Random(0)
    lines = []
    for index in range(90):
        words = sentence(rng).split()[1:-1]
        task = "backwards" if index % 2 else "repeat"
        answer = " ".join(words[::-1] if index % 2 else words)
        record: dict = {"instruction": task, "input": " ".join(words), "output": answer}
        if index % 3 == 2:
            question = {"role": "user", "content": f"{task} {' '.join(words)}"}
            record = {"messages": [question, {"role": "assistant", "content": answer}]}
        lines.append(json.dumps(record))
    return _write(folder / "instructions.jsonl", *lines)


def write_vocab_text(folder: Path) -> Path:
    """Plain text for the word-piece vocabulary: the grammar and the template's words."""
    path = write_corpus(folder / "vocab.txt", documents=60, seed=0)
    with path.open("a", encoding="utf-8") as f:
        f.write("Instruction : Input : Response : System : User : Assistant : backwards repeat\n")
    return path


TINY = {
    "vocab_size": 120,
    "hidden_size": 32,
    "encoder.num_layers": 2,
    "encoder.num_heads": 2,
    "encoder.ffn_size": 64,
    "embedding.max_positions": 64,
    "targets": [{"name": "lm"}],
}


def tiny_model(preset: str, **overrides) -> pretrainkit.Model:
    torch.manual_seed(0)
    return pretrainkit.build_model(preset, {**TINY, **overrides}).eval()


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


# -- sft data -------------------------------------------------------------------------------


def test_instruction_reader_renders_prompts_and_responses(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "data.jsonl",
        json.dumps({"instruction": "add", "input": "1 2", "output": "3"}),
        "",
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "bye"},
                    {"role": "assistant", "content": "ciao"},
                ],
                "id": 7,
            }
        ),
    )
    documents = list(read_instruction_documents(path))
    assert documents == [
        ["Instruction: add\nInput: 1 2\nResponse:", " 3"],
        ["System: be brief\nUser: hi\nAssistant:", " hello", "User: bye\nAssistant:", " ciao"],
    ]


BAD_LINES = [
    ("[1, 2]", "expected a JSON object"),
    ('{"instruction": "x"', "not valid JSON"),
    ('{"output": "y"}', 'missing "instruction"'),
    ('{"instruction": 3, "output": "y"}', '"instruction" must be a string'),
    ('{"instruction": "x", "output": "  "}', "the response is empty"),
    ('{"instruction": "x", "output": "\\u200b"}', "the response is empty"),
    ('{"instruction": "x", "input": null, "output": "y"}', '"input" must be a string'),
    ('{"messages": []}', "non-empty list"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "messages[0].role is 'bot'"),
    ('{"messages": [{"role": "user"}]}', "missing messages[0].content"),
    ('{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}',
     "the last message must be the assistant's"),
    ('{"messages": [], "output": "y"}', "not both"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_instruction_reader_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = json.dumps({"instruction": "x", "output": "y"})
    path = _write(tmp_path / "bad.jsonl", good, good, line, good)
    with pytest.raises(DataError) as error:
        list(read_instruction_documents(path))
    assert f"{path}:3: " in str(error.value) and message in str(error.value)
    info = CorpusFile(path)
    assert len(list(read_instruction_documents(path, True, info))) == 3
    assert info.skipped_lines == 1


@pytest.fixture(scope="module")
def sft_shards(tmp_path_factory: pytest.TempPathFactory) -> Shards:
    folder = tmp_path_factory.mktemp("sft")
    corpus = write_instructions(folder)
    train_tokenizer([write_vocab_text(folder)], "wordpiece", 200, folder / "tok")
    preprocess([corpus], folder / "tok", "sft", 40, folder / "shards", log=lambda _: None)
    return Shards.open(folder / "shards")


def test_sft_labels_only_response_tokens(sft_shards: Shards) -> None:
    tokenizer = sft_shards.tokenizer
    stream = pretraining_stream(sft_shards, seed=0)
    packed_windows = 0
    for _ in range(20):
        instance = next(stream)
        ids, labels = instance["input_ids"], instance["labels"]
        examples, positions = instance["example_ids"], instance["position_ids"]
        assert len(ids) <= 40 and int(instance["prefix_lengths"]) == 0
        packed_windows += int(examples.max()) > 1
        for number in range(1, int(examples.max()) + 1):
            tokens, gold = ids[examples == number], labels[examples == number]
            assert np.array_equal(positions[examples == number], np.arange(len(tokens)))
            # One prompt, one response, [EOS]: the prompt ends with "response :" or
            # "assistant :", and everything after it carries loss.
            colon = tokenizer.token_to_id(":")
            prompt_end = int(np.nonzero(tokens == colon)[0][-1]) + 1
            assert int((gold == IGNORE_INDEX).sum()) == prompt_end
            assert np.array_equal(gold[prompt_end:], tokens[prompt_end:])
            assert tokens[-1] == tokenizer.eos_id
            words = tokenizer.decode(tokens[prompt_end:-1].tolist()).split()
            assert len(words) == 6  # the six words of the answer, and nothing else
    assert packed_windows == 20  # 13-17 token examples: two or more fit in every window


def test_sft_counts_prompt_tokens_exactly(tmp_path: Path) -> None:
    corpus = _write(
        tmp_path / "one.jsonl", json.dumps({"instruction": "repeat the fox", "output": "the fox"})
    )
    train_tokenizer([write_vocab_text(tmp_path)], "wordpiece", 200, tmp_path / "tok")
    preprocess([corpus], tmp_path / "tok", "sft", 32, tmp_path / "shards", log=lambda _: None)
    shards = Shards.open(tmp_path / "shards")
    tokenizer = shards.tokenizer
    instance = next(pretraining_stream(shards))
    prompt = tokenizer.encode("Instruction: repeat the fox\nResponse:")
    response = tokenizer.encode(" the fox")
    # The one example fills the window again and again (the next epochs follow on).
    first = instance["example_ids"] == 1
    assert int(instance["example_ids"].max()) == 32 // (len(prompt) + len(response) + 1)
    assert instance["input_ids"][first].tolist() == prompt + response + [tokenizer.eos_id]
    gold = [IGNORE_INDEX] * len(prompt) + response + [tokenizer.eos_id]
    assert instance["labels"][first].tolist() == gold
    assert int((instance["labels"] == IGNORE_INDEX).sum()) == len(prompt) * int(
        instance["example_ids"].max()
    )


def test_sft_stream_resumes_exactly(sft_shards: Shards) -> None:
    stream = pretraining_stream(sft_shards, seed=3)
    for _ in range(7):
        next(stream)
    state = json.loads(json.dumps(stream.state_dict()))
    expected = [next(stream) for _ in range(60)]  # crosses an epoch
    again = pretraining_stream(sft_shards, seed=3)
    again.load_state_dict(state)
    for want in expected:
        got = next(again)
        assert all(np.array_equal(got[key], want[key]) for key in want)


def test_sft_cuts_an_example_longer_than_the_window(tmp_path: Path) -> None:
    long_prompt = " ".join(["the big horse sees the red fox ."] * 6)
    corpus = _write(
        tmp_path / "long.jsonl",
        json.dumps({"instruction": long_prompt, "output": "the fox"}),
        json.dumps({"instruction": "repeat", "output": long_prompt}),
    )
    train_tokenizer([write_vocab_text(tmp_path)], "wordpiece", 200, tmp_path / "tok")
    preprocess([corpus], tmp_path / "tok", "sft", 16, tmp_path / "shards", log=lambda _: None)
    shards = Shards.open(tmp_path / "shards")
    stream = pretraining_stream(shards, seed=0)
    for _ in range(4):
        instance = next(stream)
        assert len(instance["input_ids"]) == 16 and int(instance["example_ids"].max()) == 1
        labelled = instance["labels"] != IGNORE_INDEX
        assert labelled.any()
        if instance["input_ids"][-1] == shards.tokenizer.eos_id:  # the long prompt: its end
            assert instance["labels"][-1] == shards.tokenizer.eos_id
        else:  # the long response: its start, the prompt whole
            assert not labelled[:3].any() and labelled[-1]


def test_sft_trains_with_loss_on_responses_only(sft_shards: Shards) -> None:
    model = pretrainkit.build_model(
        "gpt2-small", {**TINY, "vocab_size": sft_shards.tokenizer.vocab_size}
    ).train()
    torch.manual_seed(0)
    batches = BatchIterator(pretraining_stream(sft_shards, seed=0), 8, sft_shards.tokenizer.pad_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model(**batches.next_batch()).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses

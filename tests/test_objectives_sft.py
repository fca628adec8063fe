"""The ``sft`` objective: instruction records, packing, loss on the responses only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from objective_helpers import TINY, write_instructions, write_lines, write_vocab_text

import pretrainkit
from pretrainkit.data import BatchIterator, Shards, pretraining_stream
from pretrainkit.data.corpus import CorpusFile
from pretrainkit.data.instructions import read_instruction_documents
from pretrainkit.data.masking import IGNORE_INDEX
from pretrainkit.data.preprocessing import preprocess
from pretrainkit.errors import DataError
from pretrainkit.tokenization import train_tokenizer

# -- sft data -------------------------------------------------------------------------------


def test_instruction_reader_renders_prompts_and_responses(tmp_path: Path) -> None:
    path = write_lines(
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
    path = write_lines(tmp_path / "bad.jsonl", good, good, line, good)
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
    corpus = write_lines(
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
    corpus = write_lines(
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

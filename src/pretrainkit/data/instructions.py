"""Reading instruction-tuning data (JSONL) into prompt/response pieces for ``sft``.

Each line is one example, in one of two shapes:

- ``{"instruction": str, "input": str (optional), "output": str}`` (Alpaca);
- ``{"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}`` (chat
  turns), whose last message is the assistant's.

An example becomes one document whose pieces alternate prompt, response, prompt, response ...
(one pair per assistant turn), rendered with the fixed template below, so that the stream knows
from a piece's index whether its tokens carry loss. Other keys of a record are ignored.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pretrainkit.data.corpus import _SURROGATE, CorpusFile, _bad_line, _raw_lines
from pretrainkit.errors import DataError

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
"""Message roles and how the template names them."""
RESPONSE_HEADER = "Response:"
"""Ends an Alpaca-style prompt (the chat prompt ends with ``Assistant:``)."""


def render_instruction(instruction: str, input_text: str) -> str:
    """The prompt of an Alpaca-style example (``Input:`` only when there is an input)."""
    prompt = f"Instruction: {instruction.strip()}\n"
    if input_text.strip():
        prompt += f"Input: {input_text.strip()}\n"
    return prompt + RESPONSE_HEADER


def render_response(text: str) -> str:
    # A leading space so that byte-level BPE, which tokenizes the piece apart from the prompt,
    # sees the first word as it would after "Response:" in running text.
    return " " + text.strip()


def read_instruction_documents(
    path: str | Path, skip_bad_lines: bool = False, info: CorpusFile | None = None
) -> Iterator[list[str]]:
    """Yield one document per example: ``[prompt, response, prompt, response, ...]``.

    Args:
        path: a JSONL file of instruction or chat records.
        skip_bad_lines: skip (and count in ``info.skipped_lines``) bad lines instead of raising.
        info: receives size, SHA-256 and line counts; complete once the iterator is exhausted.

    Raises:
        DataError: naming the file and line of the first bad line (not UTF-8, not a JSON object,
            a missing or non-string field, an unknown role, an empty response, a conversation
            that does not end with the assistant), or a missing file.
    """
    path = Path(path)
    info = info if info is not None else CorpusFile(path)
    for number, raw in _raw_lines(path, info):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            _bad_line(
                f"not UTF-8 (byte {err.start} of the line)", path, number, skip_bad_lines, info
            )
            continue
        if not text.strip():
            continue
        try:
            yield _pieces(text)
        except _BadRecord as err:
            _bad_line(str(err), path, number, skip_bad_lines, info)


class _BadRecord(Exception):
    """What is wrong with one line (turned into a DataError naming file and line)."""


def _pieces(text: str) -> list[str]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise _BadRecord(f"not valid JSON ({err.msg} at column {err.colno})") from None
    except (ValueError, RecursionError) as err:  # a 5,000-digit number, [[[[...]]]] nesting
        raise _BadRecord(f"not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise _BadRecord(
            'expected a JSON object with "instruction" and "output", or with "messages"'
        )
    if "messages" in record:
        if "instruction" in record or "output" in record:
            raise _BadRecord('a record holds either "messages" or "instruction"/"output", not both')
        pieces = _chat_pieces(record["messages"])
    else:
        instruction = _string(record, "instruction")
        input_text = _string(record, "input") if "input" in record else ""
        output = _response(_string(record, "output"), '"output"')
        pieces = [render_instruction(instruction, input_text), render_response(output)]
    # A \ud800 escape decodes to a lone surrogate, which no tokenizer or file can take.
    if "\\u" in text and any(_SURROGATE.search(piece) for piece in pieces):
        raise _BadRecord("a text holds a lone surrogate (\\ud800-\\udfff)")
    return pieces


def _chat_pieces(messages: Any) -> list[str]:
    if not isinstance(messages, list) or not messages:
        raise _BadRecord('"messages" must be a non-empty list of {"role", "content"} objects')
    pieces: list[str] = []
    prompt = ""
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _BadRecord(f'{where} must be an object with "role" and "content"')
        role = _string(message, "role", where)
        if role not in ROLES:
            raise _BadRecord(f"{where}.role is {role!r}, expected one of {', '.join(ROLES)}")
        content = _string(message, "content", where)
        if role == "assistant":
            pieces += [prompt + "Assistant:", render_response(_response(content, where))]
            prompt = ""
        else:
            prompt += f"{ROLES[role]}: {content.strip()}\n"
    if prompt:
        raise _BadRecord(
            f"the last message must be the assistant's (messages[{len(messages) - 1}] is not): "
            "a prompt without a response trains nothing"
        )
    return pieces


def _string(record: dict, key: str, where: str = "") -> str:
    name = f"{where}.{key}" if where else f'"{key}"'
    if key not in record:
        raise _BadRecord(f"missing {name}")
    value = record[key]
    if not isinstance(value, str):
        raise _BadRecord(f"{name} must be a string, got {type(value).__name__}")
    return value


def _response(text: str, name: str) -> str:
    # The response must keep at least one token after tokenization: whitespace and control or
    # format characters (a zero-width space) are dropped by normalizers, and a response that
    # vanished would shift every later piece from response to prompt.
    if not any(not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf") for c in text):
        raise _BadRecord(f"{name}: the response is empty")
    return text


def check_pieces(num_pieces: int, document: int, where: Path) -> None:
    """Raise DataError unless a document of the shards holds prompt/response pairs."""
    if num_pieces % 2:
        raise DataError(
            f"example {document} has {num_pieces} pieces, not prompt/response pairs (a "
            "response or prompt tokenized to nothing); preprocess it again with objective sft",
            where,
        )

"""``text2text``: text in, text out (titles, keywords, a category written as words), scored on
what the model generates.

Files are TSV rows ``prompt<TAB>source<TAB>target`` or ``source<TAB>target`` (the layout is the
first line's, or a header line of those names, or ``columns``); a file to predict on may have
no target. The model is either an encoder-decoder (the encoder reads ``prompt source``, the
decoder learns ``target eos``) or decoder-only (a causal encoder with an ``lm`` head reading
``prompt source separator target eos``, the loss on ``target eos`` only). Evaluation generates
(greedy or beam search, ``pretrainkit.generation``) and scores the text with the metrics
chosen by ``metric`` (``text_metrics``); the prediction file holds the generated text.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.data.instances import RowStream
from pretrainkit.errors import ConfigError, DataError, closest
from pretrainkit.fileio import read_input
from pretrainkit.tasks.base import TASKS, Task, TaskOptions
from pretrainkit.tasks.classification import width_defaults
from pretrainkit.tasks.text_metrics import METRICS, normalize, text_metrics
from pretrainkit.tokenization import Tokenizer

log = logging.getLogger(__name__)

COLUMNS = ("prompt", "source", "target")
DECODING = ("greedy", "beam")
IGNORE = -100


def metric_list(text: str) -> tuple[str, ...]:
    """``"rouge_l,accuracy"`` → the metric names, checked against ``METRICS``."""
    names = tuple(name.strip() for name in str(text).split(","))
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"metric: unknown {name!r}{closest(name, METRICS)}; from {METRICS}")
    if len(set(names)) != len(names):
        raise ConfigError(f"metric: a metric is named twice in {text!r}")
    return names


@dataclass
class Text2TextOptions(TaskOptions):
    target_length: int = 32
    """Most target tokens, the end token included: longer targets are cut for training, and
    generation stops there. A decoder-only model fits context and target in seq_length."""
    metric: str = "rouge_l,accuracy"
    """Metrics, comma-separated, from rouge_l (character-level for Chinese), accuracy (exact
    match) and keyword_f1; the first is the one to select on."""
    decoding: str = "greedy"
    """greedy or beam."""
    num_beams: int = 4
    """Beams per row for beam decoding."""
    keyword_separator: str = "_"
    """What joins the keywords of one target, for keyword_f1."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.target_length, int) or self.target_length < 1:
            raise ConfigError(f"target_length must be an integer >= 1, got {self.target_length!r}")
        metric_list(self.metric)
        if self.decoding not in DECODING:
            raise ConfigError(
                f"decoding must be one of {', '.join(DECODING)}, got {self.decoding!r}"
            )
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise ConfigError(f"num_beams must be an integer >= 1, got {self.num_beams!r}")
        if not self.keyword_separator:
            raise ConfigError("keyword_separator must not be empty")
        # Options of a mode that is off would be ignored: a value other than the default is an
        # error (one equal to it changes nothing, and older task.json files record it).
        if self.decoding != "beam" and self.num_beams != 4:
            raise ConfigError(
                f"num_beams ({self.num_beams}) applies to beam decoding only; add --decoding beam"
            )
        if self.keyword_separator != "_" and "keyword_f1" not in metric_list(self.metric):
            raise ConfigError(
                f"keyword_separator ({self.keyword_separator!r}) is used by the keyword_f1 "
                f"metric only, which --metric {self.metric!r} does not name"
            )


@dataclass
class Text2TextData:
    """The rows of a text2text file; ``prompts`` and ``targets`` are None when the file has no
    such column; row i is line ``first_line + i``."""

    path: Path
    prompts: list[str] | None
    sources: list[str]
    targets: list[str] | None
    first_line: int = 1

    def __len__(self) -> int:
        return len(self.sources)


def read_text2text(
    path: str | Path, require_targets: bool = True, columns: Sequence[str] | None = None
) -> Text2TextData:
    """Read a text2text TSV file (see the module docstring); a DataError naming the file and
    line for a row with another number of fields than the layout, an empty source or (with
    ``require_targets``) an empty or missing target, bytes that are not UTF-8, or no rows."""
    path = Path(path)
    raw = read_input(path).split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()  # the newline that ends the last row
    lines = []
    for number, chunk in enumerate(raw, start=1):
        try:
            lines.append(chunk.rstrip(b"\r").decode("utf-8").lstrip("\ufeff"))
        except UnicodeDecodeError as error:
            raise DataError(f"not UTF-8 (byte {error.start} of the line)", path, number) from None
    if not lines:
        raise DataError("file is empty; expected rows [prompt<TAB>]source<TAB>target", path)
    first_line = 1
    if columns is None and set(lines[0].split("\t")) <= set(COLUMNS):
        columns, lines, first_line = tuple(lines[0].split("\t")), lines[1:], 2  # a header
    if columns is None:
        layouts = {3: COLUMNS, 2: ("source", "target"), 1: ("source",)}
        columns = layouts.get(lines[0].count("\t") + 1)
        if columns is None:
            raise DataError(
                f"expected [prompt<TAB>]source<TAB>target, got {lines[0].count(chr(9)) + 1} "
                "tab-separated fields",
                path,
                first_line,
            )
    names = _check_columns(columns, path, require_targets)
    values: dict[str, list[str]] = {name: [] for name in names}
    for number, line in enumerate(lines, start=first_line):
        fields = line.split("\t")
        if len(fields) != len(names):
            raise DataError(
                f"expected {len(names)} tab-separated fields ({', '.join(names)}) as the file's "
                f"layout says, got {len(fields)}",
                path,
                number,
            )
        for name, value in zip(names, fields, strict=True):
            if name != "prompt" and not value.strip() and (name == "source" or require_targets):
                raise DataError(f"the {name} is empty", path, number)
            values[name].append(value)
    if not values["source"]:
        raise DataError("the file has a header but no rows", path, 2)
    return Text2TextData(
        path, values.get("prompt"), values["source"], values.get("target"), first_line
    )


def _check_columns(columns: Sequence[str], path: Path, require_targets: bool) -> tuple[str, ...]:
    names = tuple(columns)
    for name in names:
        if name not in COLUMNS:
            raise DataError(f"unknown column {name!r}{closest(str(name), COLUMNS)}", path)
    if len(set(names)) != len(names):
        raise DataError(f"a column is named twice in {list(names)}", path)
    if "source" not in names or (require_targets and "target" not in names):
        missing = "source" if "source" not in names else "target"
        raise DataError(f"no {missing} column in {list(names)}; columns: {COLUMNS}", path)
    return names


@dataclass
class Encoder:
    """Rows → ids for one kind of model (``seq2seq`` or decoder-only)."""

    tokenizer: Tokenizer
    seq2seq: bool
    options: Text2TextOptions

    def context(self, prompt: list[int] | None, source: list[int]) -> list[int]:
        """What the model reads before generating: ``[CLS] prompt [SEP] source [SEP]`` in the
        tokenizer's template, the source cut first; decoder-only: room left for the target,
        and a separator at the end even where the template has none (GPT-2's)."""
        length = self.options.seq_length
        if not self.seq2seq:
            length -= self.options.target_length
            if length < 3:
                raise ConfigError(
                    f"seq_length {self.options.seq_length} leaves no room for the context after "
                    f"target_length {self.options.target_length} (decoder-only model)"
                )
        a, b = (source, None) if prompt is None else (prompt, source)
        ids, _ = self.tokenizer.build_inputs(a, b, length)
        if not self.seq2seq and ids[-1:] != [self.tokenizer.sep_id]:
            ids, _ = self.tokenizer.build_inputs(a, b, length - 1)
            ids.append(self.tokenizer.sep_id)
        return ids

    def instance(self, prompt: list[int] | None, source: list[int], target: list[int]) -> dict:
        answer = target[: self.options.target_length - 1] + [self.tokenizer.eos_id]
        context = self.context(prompt, source)
        if self.seq2seq:
            return {"input_ids": np.asarray(context), "labels": np.asarray(answer)}
        # The lm head shifts: the separator's position predicts the answer's first token.
        return {
            "input_ids": np.asarray(context + answer),
            "labels": np.asarray([IGNORE] * len(context) + answer),
        }


def _token_ids(tokenizer: Tokenizer, texts: list[str] | None) -> list[list[int]] | None:
    return None if texts is None else tokenizer.encode_batch(texts)


class Text2TextStream(RowStream):
    """Endless stream of training instances, reshuffled every epoch; tokenized once up front."""

    def __init__(self, data: Text2TextData, encoder: Encoder, seed: int, rank: int, world: int):
        if data.targets is None:
            raise DataError("has no targets; training needs a target column", data.path)
        self.start(len(data), seed, rank, world, data.path)
        self.seq_length, self.encoder = encoder.options.seq_length, encoder
        self.prompts = _token_ids(encoder.tokenizer, data.prompts)
        self.sources = encoder.tokenizer.encode_batch(data.sources)
        self.targets = encoder.tokenizer.encode_batch(data.targets)

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        self.order.advance()
        prompt = None if self.prompts is None else self.prompts[row]
        return self.encoder.instance(prompt, self.sources[row], self.targets[row])


def collate_text2text(
    instances: list[dict[str, np.ndarray]], pad_id: int, seq2seq: bool
) -> dict[str, torch.Tensor]:
    """Pads ``input_ids`` (pad id) and ``labels`` (-100) each to its own longest: an
    encoder-decoder's labels are the decoder's sequence, not the encoder's."""
    batch: dict[str, torch.Tensor] = {}
    for key, fill in (("input_ids", pad_id), ("labels", IGNORE)):
        rows = [inst[key] for inst in instances]
        padded = np.full((len(rows), max(map(len, rows))), fill, dtype=np.int64)  # [b, s]
        for i, row in enumerate(rows):
            padded[i, : len(row)] = row
        batch[key] = torch.from_numpy(padded)
    lengths = torch.tensor([len(inst["input_ids"]) for inst in instances])
    batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1]) < lengths[:, None]).long()
    if seq2seq:  # the decoder's inputs are the labels shifted right: as many, padded alike
        batch["decoder_attention_mask"] = (batch["labels"] != IGNORE).long()  # [b, t]
    return batch


@TASKS.register("text2text")
class Text2Text(Task):
    """Rows ``[prompt<TAB>]source<TAB>target``; an encoder-decoder's or a decoder-only model's
    LM head; generation at evaluation; ROUGE-L / exact match / keyword F1 (``metric``); the
    prediction file holds the generated text."""

    name = "text2text"
    reads_decoder = True
    options_class = Text2TextOptions
    metric_names = metric_list(Text2TextOptions.metric)

    def __init__(self, options: TaskOptions | None = None, labels: list[str] | None = None):
        super().__init__(options, labels)
        self.metric_names = metric_list(self.options.metric)
        self._head: TargetConfig | None = None
        self._seq2seq: bool | None = None

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> Text2TextData:
        return read_text2text(path, require_labels, columns)

    def prepare_model(self, base: Any) -> None:
        """Keeps the base model's LM head (its options and, by ``initial_head``, its weights);
        a fresh one with the usual options when it has none."""
        self._seq2seq = getattr(base, "decoder", None) is not None
        head = "seq2seq_lm" if self._seq2seq else "lm"
        if not self._seq2seq and not base.config.encoder.causal:
            raise ConfigError(
                "text2text needs an encoder-decoder model or a decoder-only one (a causal "
                "encoder); this model has a bidirectional encoder and no decoder"
            )
        entries = [t for t in base.config.targets if t.name == head]
        self._head = entries[0] if entries else TargetConfig(head, {})
        if not entries:
            log.info("text2text: the model has no %s head; a fresh one is trained", head)

    def _encoder(self, tokenizer: Tokenizer, seq2seq: bool | None) -> Encoder:
        if seq2seq is None:
            raise ConfigError("text2text: prepare_model(base) must come first (finetune does it)")
        return Encoder(tokenizer, seq2seq, self.options)

    def stream(
        self, data: Text2TextData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> Text2TextStream:
        return Text2TextStream(
            data, self._encoder(tokenizer, self._seq2seq), seed, rank, world_size
        )

    def collate(self, instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, Any]:
        return collate_text2text(instances, pad_id, bool(self._seq2seq))

    def batches(self, data: Text2TextData, tokenizer: Tokenizer, batch_size: int) -> Iterator[dict]:
        """The rows' prompt and source ids (``_prompts``, ``_sources``) and the tokenizer: the
        context is built in ``batch_outputs``, which knows whether the model has a decoder."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        for start in range(0, len(data), batch_size):
            stop = min(start + batch_size, len(data))
            prompts = None if data.prompts is None else data.prompts[start:stop]
            yield {
                "_prompts": _token_ids(tokenizer, prompts),
                "_sources": tokenizer.encode_batch(data.sources[start:stop]),
                "_tokenizer": tokenizer,
            }

    def batch_outputs(self, model: Any, batch: dict[str, Any]) -> list[str]:
        """The generated text of every row (the end token and special tokens left out)."""
        from pretrainkit.generation import generate

        net = getattr(model, "module", model)  # a distributed wrapper holds the model
        tokenizer: Tokenizer = batch["_tokenizer"]
        encoder = self._encoder(tokenizer, getattr(net, "decoder", None) is not None)
        prompts = batch["_prompts"] or [None] * len(batch["_sources"])
        contexts = [encoder.context(p, s) for p, s in zip(prompts, batch["_sources"], strict=True)]
        generated = generate(
            net,
            contexts,
            max_new_tokens=self.options.target_length,
            strategy=self.options.decoding,
            num_beams=self.options.num_beams,
            eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id,
        )
        texts = []
        for ids in generated:
            if ids and ids[-1] == tokenizer.eos_id:
                ids = ids[:-1]
            texts.append(normalize(tokenizer.decode(ids, skip_special_tokens=True)))
        return texts

    def target(self) -> TargetConfig:
        if self._head is None:
            raise ConfigError("text2text: prepare_model(base) must come first (finetune does it)")
        return dataclasses.replace(self._head, options=dict(self._head.options))

    def initial_head(self, base: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The pre-trained LM head's weights, when the base model has one."""
        head = base.get(self._head.name) if self._head is not None else None
        return {} if head is None else dict(head.state_dict())

    def row_outputs(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[Any]:
        raise ConfigError(
            "text2text generates its outputs (Task.batch_outputs); one forward pass's logits "
            "are not its output, so it cannot be scored from them (e.g. by SAMP)"
        )

    def divergence(self, reference: list[Any], outputs: list[Any]) -> float:
        raise ConfigError("text2text outputs are generated texts; they have no divergence")

    def gold(self, data: Text2TextData) -> list[str]:
        if data.targets is None:
            raise DataError("has no targets to score against", data.path)
        return data.targets

    def metrics(self, outputs: list[str], gold: list[str]) -> dict[str, float]:
        return text_metrics(outputs, gold, self.metric_names, self.options.keyword_separator)

    def prediction_lines(self, outputs: list[str], data: Text2TextData) -> list[str]:
        return ["prediction"] + [" ".join(text.split()) for text in outputs]

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)

"""``speech2text``: transcribe recordings with an encoder-decoder (Speech2Text-style).

The task file is a TSV with the header ``audio<TAB>text``; audio paths are relative to the TSV's
folder. The encoder reads the recording's log-mel features (the model's ``speech`` embedding),
the decoder writes the transcript in the model tokenizer's pieces and an end token; the loss is
the decoder's (``seq2seq_lm``). Evaluation decodes greedily and scores the transcripts by word
accuracy (the share transcribed exactly: the selection metric), WER and CER
(``speech_metrics``); the prediction file holds one transcript a line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tasks.base import TASKS, Task
from pretrainkit.tasks.classification import width_defaults
from pretrainkit.tasks.speech_format import (
    SpeechData,
    SpeechOptions,
    SpeechStream,
    check_feature_width,
    collate_features,
    feature_batches,
    read_speech_tsv,
)
from pretrainkit.tasks.speech_metrics import transcript_metrics
from pretrainkit.tokenization import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Speech2TextOptions(SpeechOptions):
    target_length: int = 128
    """Transcript tokens, the end token included: longer transcripts are cut for training, and
    generation stops there."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.target_length, int) or self.target_length < 2:
            raise ConfigError(f"target_length must be an integer >= 2, got {self.target_length!r}")


def transcript_ids(data: SpeechData, tokenizer: Tokenizer, length: int) -> list[np.ndarray]:
    """Each transcript's token ids followed by the end id, cut to ``length`` (counted in the log).

    Raises:
        DataError: naming the file and line of a transcript with words the tokenizer can only
            write as its unknown token (a model cannot learn to produce them).
    """
    if data.texts is None:
        raise DataError("has no text column; training needs transcripts", data.path)
    out, cut = [], 0
    for row, (text, ids) in enumerate(zip(data.texts, tokenizer.encode_batch(data.texts))):
        if tokenizer.unk_id in ids:
            unknown = [w for w in text.split() if tokenizer.unk_id in tokenizer.encode(w)]
            raise DataError(
                f"the transcript has text outside the tokenizer's vocabulary: "
                f"{' '.join(unknown[:5])!r}; use a tokenizer that covers these characters",
                data.path,
                row + data.first_line,
            )
        cut += len(ids) + 1 > length
        out.append(np.asarray([*ids[: length - 1], tokenizer.eos_id], dtype=np.int64))
    if cut:
        log.info("%s: %d of %d transcripts cut to %d tokens", data.path, cut, len(out), length)
    return out


def greedy_transcribe(
    model: Any, batch: dict[str, Any], max_tokens: int, eos_id: int
) -> list[list[int]]:
    """Greedy decoding of every row of a feature batch with the KV cache (``generation``): the
    decoder starts from its start id and a row stops at ``eos_id`` (left out) or after
    ``max_tokens``."""
    from pretrainkit.generation import generate

    rows = generate(
        model,
        None,
        max_tokens,
        eos_id=eos_id,
        input_features=batch["input_features"],  # [b, frames, num_mel_bins]
        attention_mask=batch["attention_mask"],  # [b, frames]
    )
    return [row[:-1] if row and row[-1] == eos_id else row for row in rows]


@TASKS.register("speech2text")
class Speech2Text(Task):
    """Rows ``audio<TAB>text``; an encoder-decoder transcribes; word accuracy, WER and CER."""

    name = "speech2text"
    reads_decoder = True
    options_class = Speech2TextOptions
    metric_names = ("word_accuracy", "wer", "cer")

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> SpeechData:
        if columns is not None:
            raise ConfigError("speech2text files have a header; drop --columns")
        return read_speech_tsv(path, "text", require_labels, self.options)

    def prepare_model(self, base: Any) -> None:
        if base.decoder is None:
            raise ConfigError("speech2text needs an encoder-decoder model (a decoder slot)")
        check_feature_width(base, self.options.num_mel_bins)
        positions = base.config.tgt_embedding.max_positions
        if self.options.target_length + 1 > positions:  # the start id takes a position too
            raise ConfigError(
                f"target_length {self.options.target_length} needs {self.options.target_length + 1}"
                f" decoder positions; the model has tgt_embedding.max_positions {positions}: set "
                f"--target-length {positions - 1} or less"
            )

    def stream(
        self, data: SpeechData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> SpeechStream:
        if tokenizer is None:
            raise ConfigError("speech2text needs the model's tokenizer to write transcripts")
        ids = transcript_ids(data, tokenizer, self.options.target_length)
        return SpeechStream(data, ids, self.options, seed, rank, world_size)

    def collate(self, instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, Any]:
        return collate_features(instances, pad_id)

    def batches(self, data: SpeechData, tokenizer: Tokenizer, batch_size: int) -> Iterator[dict]:
        return feature_batches(data, batch_size)

    def target(self) -> TargetConfig:
        return TargetConfig("seq2seq_lm", {})

    def batch_outputs(self, model: Any, batch: dict[str, Any]) -> list[str]:
        tokenizer = model.tokenizer
        if tokenizer is None:
            raise ConfigError("speech2text needs the model's tokenizer to write transcripts")
        rows = greedy_transcribe(model, batch, self.options.target_length, tokenizer.eos_id)
        return [" ".join(tokenizer.decode(row, skip_special_tokens=True).split()) for row in rows]

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[Any]:
        raise ConfigError(
            "speech2text outputs are generated transcripts (batch_outputs), not one forward "
            "pass's logits"
        )

    def gold(self, data: SpeechData) -> list[str]:
        if data.texts is None:
            raise DataError("has no transcripts to score against", data.path)
        return [" ".join(text.split()) for text in data.texts]

    def metrics(self, outputs: list[str], gold: list[str]) -> dict[str, float]:
        return transcript_metrics(gold, outputs)

    def prediction_lines(self, outputs: list[str], data: Any = None) -> list[str]:
        return ["text", *(" ".join(text.split()) for text in outputs)]

    def divergence(self, reference: list[str], outputs: list[str]) -> float:
        """The share of transcripts that changed (generated text has no distribution to
        compare)."""
        if not reference:
            return 0.0
        return sum(r != o for r, o in zip(reference, outputs)) / len(reference)

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)

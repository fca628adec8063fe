"""``simcse``: unsupervised sentence embeddings (SimCSE, Gao et al. 2021), scored on STS pairs.

Training feeds every sentence twice in one batch; the encoder's dropout makes the two copies
two views, and the ``contrastive`` target pulls them together against the batch's other
sentences (InfoNCE at temperature ``--temperature``). There is no head: the model folder embeds
with ``pretrainkit embed`` / ``Model.encode`` like its base model.

Files (``read`` tells them apart, in this order):

- a ``.csv`` file: STS-B CSV pairs ``sentence1,sentence2,score`` (no header);
- ``columns`` given, or a first non-blank line holding a tab: a scored pair TSV as the
  ``regression`` task reads it (header ``label``/``score``-less ``text_a``, ``text_b``, or
  headerless with ``--columns``);
- anything else: plain text, one sentence a line; blank lines are skipped (counted in the
  log), and a tab on a later line is an error (a pair file whose first line lost its tab).

Training takes the sentences of either kind (a pair file gives its distinct ``text_a`` and
``text_b``, scores unused). Evaluation needs a scored pair file: the metric is the Spearman
(then Pearson) correlation of ``cos(embed(a), embed(b))`` with the gold score, and ``predict``
writes that cosine as ``score``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.config.typed import check_choice, check_range
from pretrainkit.data.batching import collate
from pretrainkit.data.instances import EpochOrder, RowStream
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.fileio import read_utf8
from pretrainkit.tasks.base import TASKS, Task, TaskOptions
from pretrainkit.tasks.classification import width_defaults
from pretrainkit.tasks.metrics import regression_metrics
from pretrainkit.tasks.regression import read_regression_file, scores_of
from pretrainkit.tasks.tsv import ClassificationData
from pretrainkit.tokenization import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class SimcseOptions(TaskOptions):
    pooling: str = "mean"
    """Sentence embedding of the simcse task: cls | mean | max. Mean is what `pretrainkit
    embed` uses by default, so the trained folder embeds as it was trained."""

    temperature: float = 0.05
    """InfoNCE softmax temperature of the cosine similarities (simcse)."""

    def __post_init__(self) -> None:
        # Imported here: the targets import torch.nn, which the CLI's parser must not load.
        from pretrainkit.targets.contrastive import POOLINGS

        super().__post_init__()
        check_choice(self.pooling, POOLINGS, "pooling")
        check_range(self.temperature, "temperature", 1e-4, 100.0)


@dataclass
class SimcseData:
    """Sentences to train on, and the scored pairs of a pair file (None for plain text).

    ``len()`` counts pairs in a pair file (the rows ``evaluate`` scores) and sentences in a
    plain-text file.
    """

    path: Path
    sentences: list[str]
    pairs: ClassificationData | None = None

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else len(self.sentences)


def read_simcse_file(
    path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
) -> SimcseData:
    """A plain sentence file or a scored pair file (see the module docstring for which)."""
    path = Path(path)
    text = read_utf8(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    if path.suffix == ".csv" or columns is not None or "\t" in first:
        pairs = read_regression_file(path, require_labels=require_labels, columns=columns)
        if pairs.texts_b is None:
            raise DataError("a pair file needs two sentences a row (text_a and text_b)", path)
        # Distinct sentences: a repeated one in a batch would be its own negative.
        sentences = list(dict.fromkeys(pairs.texts_a + pairs.texts_b))
        return SimcseData(path, sentences, pairs)
    sentences, blank = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            blank += 1
            continue
        if "\t" in line:
            raise DataError(
                "a tab in a plain sentence file (one sentence a line); a scored pair file "
                "must have a tab on its first line too",
                path,
                number,
            )
        sentences.append(line.strip())
    if not sentences:
        raise DataError("no sentences; expected one sentence a line or scored pairs", path)
    if blank:
        log.info("%s: %d blank lines skipped", path, blank)
    return SimcseData(path, sentences)


class SentenceStream(RowStream):
    """Endless stream of single sentences ``[CLS] s [SEP]``, reshuffled every epoch;
    ``SimCSE.collate`` turns them into the two views."""

    def __init__(
        self,
        data: SimcseData,
        tokenizer: Tokenizer,
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(data.sentences) < 2 * world_size:
            raise DataError(
                f"{len(data.sentences)} sentences: in-batch negatives need at least 2 per "
                f"process ({world_size})",
                data.path,
            )
        self.seq_length, self.seed = seq_length, seed
        self.ids = [
            tokenizer.build_inputs(ids, max_length=seq_length)[0]
            for ids in tokenizer.encode_batch(data.sentences)
        ]
        self.order = EpochOrder(len(self.ids), seed, rank, world_size)

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        self.order.advance()
        return {"input_ids": np.asarray(self.ids[row], dtype=np.int64)}


def two_views(instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """``b`` sentences → ``[2b, s]`` inputs, the batch twice over (rows ``i`` and ``b + i`` are
    the same tokens: only dropout tells them apart), and ``labels = arange(b)``: the contrastive
    target's anchors are the first ``b`` rows, each one's positive its copy."""
    batch = collate(instances + instances, pad_id)
    batch["labels"] = torch.arange(len(instances), dtype=torch.int64)
    return batch


def pair_batches(
    pairs: ClassificationData, tokenizer: Tokenizer, seq_length: int, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Each pair as two single-sentence rows (``a``, then ``b``), in file order; at most
    ``batch_size`` rows a batch (at least one pair). No labels."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    texts_b = pairs.texts_b or []
    step = max(1, batch_size // 2)
    for start in range(0, len(pairs), step):
        stop = start + step
        texts = [t for pair in zip(pairs.texts_a[start:stop], texts_b[start:stop]) for t in pair]
        rows = [
            {"input_ids": np.asarray(tokenizer.build_inputs(ids, max_length=seq_length)[0])}
            for ids in tokenizer.encode_batch(texts)
        ]
        yield collate(rows, tokenizer.pad_id)


@TASKS.register("simcse")
class SimCSE(Task):
    """Unsupervised SimCSE: sentences twice through dropout, InfoNCE; Spearman and Pearson of
    the embeddings' cosine on STS pairs; the prediction file holds ``score`` (the cosine)."""

    name = "simcse"
    options_class = SimcseOptions
    metric_names = ("spearman", "pearson")

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> SimcseData:
        return read_simcse_file(path, require_labels, columns)

    def subset(self, data: SimcseData, rows: list[int]) -> SimcseData:
        if data.pairs is None:
            return replace(data, sentences=[data.sentences[i] for i in rows])
        pairs = super().subset(data.pairs, rows)
        sentences = list(dict.fromkeys(pairs.texts_a + (pairs.texts_b or [])))
        return SimcseData(data.path, sentences, pairs)

    def stream(
        self, data: SimcseData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> SentenceStream:
        return SentenceStream(data, tokenizer, self.options.seq_length, seed, rank, world_size)

    def collate(self, instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, Any]:
        """A batch of sentences as its two dropout views (``two_views``)."""
        return two_views(instances, pad_id)

    def batches(self, data: SimcseData, tokenizer: Tokenizer, batch_size: int) -> Iterator[dict]:
        return pair_batches(_pairs(data), tokenizer, self.options.seq_length, batch_size)

    def target(self) -> TargetConfig:
        options = {"pooling": self.options.pooling, "temperature": self.options.temperature}
        return TargetConfig("contrastive", options)

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[float]:
        """The cosine of each pair: the logits are the embeddings, ``a`` and ``b`` in turn."""
        embeddings = logits.double().cpu().reshape(-1, 2, logits.shape[-1])  # [pairs, 2, h]
        cosines = torch.nn.functional.cosine_similarity(embeddings[:, 0], embeddings[:, 1], -1)
        return [float(x) for x in cosines]

    def gold(self, data: SimcseData) -> list[float]:
        return [float(x) for x in scores_of(_pairs(data))]

    def metrics(self, outputs: list[float], gold: list[float]) -> dict[str, float]:
        scores = regression_metrics(np.array(outputs), np.array(gold))
        # Cosines and gold scores live on different scales: only correlations mean anything.
        return {name: scores[name] for name in self.metric_names}

    def prediction_lines(self, outputs: list[float], data: Any = None) -> list[str]:
        return ["score"] + [f"{value:.6f}" for value in outputs]

    def divergence(self, reference: list[float], outputs: list[float]) -> float:
        return float(np.mean((np.array(reference) - np.array(outputs)) ** 2))

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)

    def encode_defaults(self) -> dict[str, Any]:
        # `embed` and Model.encode then pool as training did ("cls" is encode's first token).
        return {"pooling": self.options.pooling}


def _pairs(data: SimcseData) -> ClassificationData:
    if data.pairs is None:
        raise DataError(
            "is a plain sentence file; evaluation and prediction need sentence pairs "
            "(STS-B CSV sentence1,sentence2,score or a TSV label/text_a/text_b); "
            "embed sentences with `pretrainkit embed`",
            data.path,
        )
    return data.pairs

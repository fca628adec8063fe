"""``image_classification``: one label per image, for models with a ``patch`` embedding (ViT).

The task file is a TSV with the header ``label<TAB>image``; image paths are relative to the
TSV's folder. Images are read with Pillow, resized to ``image_size`` and normalised to [-1, 1]
(``pretrainkit.data.images``). The image size and channels default to the model's ``patch``
embedding (``prepare_model``); given ones that differ from it are refused before training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.data.images import ImageData, label_set, load_image, load_images, read_image_tsv
from pretrainkit.data.instances import RowStream
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tasks.base import TASKS, Task, TaskOptions
from pretrainkit.tasks.classification import POOLINGS, SoftmaxOutputs
from pretrainkit.tokenization import Tokenizer


@dataclass
class ImageClassificationOptions(TaskOptions):
    """Options of ``image_classification``. ``seq_length`` (common to every task) is refused:
    the number of tokens is fixed by ``image_size`` and the model's patch size."""

    seq_length: int | None = None  # type: ignore[assignment]  # refused, see __post_init__
    """Does not apply to images (their patches fix the tokens per input); giving it is an
    error."""
    image_size: int | None = None
    """Side in pixels every image is resized to; None: the model's embedding.image_size."""
    channels: int | None = None
    """1 (images converted to grey) or 3 (RGB); None: the model's embedding.channels."""
    pooling: str = "first"
    """How the head reads the sequence: first (the [CLS] token, as ViT), mean, max or last."""
    dropout: float = 0.0
    """Dropout before the head's projection."""
    shift: int = 0
    """Augmentation of training images: a random translation by up to this many pixels each
    way (edges repeated into the gap), drawn afresh every epoch; 0 = none."""

    def __post_init__(self) -> None:
        # Not TaskOptions' check: seq_length is refused here rather than range-checked.
        if self.seq_length is not None:
            raise ConfigError(
                f"seq_length ({self.seq_length}) does not apply to image_classification: the "
                "tokens per image are its patches, fixed by image_size and the model's "
                "embedding.patch_size; drop --seq-length"
            )
        size = self.image_size
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ConfigError(f"image_size must be a positive integer, got {size!r}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.shift, int) or self.shift < 0:
            raise ConfigError(f"shift must be an integer >= 0, got {self.shift!r}")


class ImageStream(RowStream):
    """Endless stream of ``{pixel_values [c, s, s] float32, labels 0-d int64}`` instances,
    reshuffled every epoch; images are decoded when drawn, so memory stays flat."""

    def __init__(
        self,
        data: ImageData,
        label_ids: list[int],
        image_size: int,
        channels: int,
        seed: int,
        rank: int,
        world_size: int,
        shift: int = 0,
    ):
        self.start(len(data), seed, rank, world_size, data.path)
        self.data, self.label_ids = data, label_ids
        self.image_size, self.channels, self.shift = image_size, channels, shift

    def __next__(self) -> dict[str, np.ndarray]:
        epoch, slot, row = self.order.current()
        self.order.advance()
        where = self.data.where(row)
        pixels = load_image(self.data.images[row], self.image_size, self.channels, where).numpy()
        if self.shift:  # seeded by position: a resumed run draws the same shifts
            rng = np.random.default_rng([self.seed, epoch, slot])
            down, right = rng.integers(-self.shift, self.shift + 1, size=2)
            pixels = shifted(pixels, int(down), int(right))
        return {
            "pixel_values": pixels,
            "labels": np.asarray(self.label_ids[row], dtype=np.int64),
        }

    def _identity(self) -> dict:
        size, channels = self.image_size, self.channels
        return {
            **super()._identity(),
            "image_size": size,
            "channels": channels,
            "shift": self.shift,
        }


def shifted(pixels: np.ndarray, down: int, right: int) -> np.ndarray:
    """``pixels`` ``[c, s, s]`` moved ``down`` rows and ``right`` columns (negative: up, left),
    the edge rows and columns repeated into the gap."""
    pad = max(abs(down), abs(right))
    size = pixels.shape[-1]
    padded = np.pad(pixels, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    top, left = pad - down, pad - right
    return np.ascontiguousarray(padded[:, top : top + size, left : left + size])


@TASKS.register("image_classification")
class ImageClassification(SoftmaxOutputs, Task):
    """Rows ``label<TAB>image``; softmax head; accuracy and macro-F1; the prediction file holds
    ``label<TAB>probability``."""

    name = "image_classification"
    options_class = ImageClassificationOptions
    metric_names = ("accuracy", "macro_f1")

    @classmethod
    def recorded_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        # Folders fine-tuned before seq_length was refused recorded it unused: drop it.
        return {key: value for key, value in options.items() if key != "seq_length"}

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> ImageData:
        if columns is not None:
            raise ConfigError("image_classification: the TSV names its columns in a header")
        return read_image_tsv(path, self.labels, require_labels)

    def fit_labels(self, train: ImageData) -> None:
        self.labels = label_set(train)
        if len(self.labels) < 2:
            raise DataError(
                f"a classifier needs at least two labels, got {self.labels}", train.path
            )

    def prepare_model(self, base: Any) -> None:
        """Take the image size and channels from the model's ``patch`` embedding where not given,
        and refuse a model that reads token ids or other images."""
        embedding = base.config.embedding
        if "patch" not in embedding.parts:
            raise ConfigError(
                f"image_classification needs a model with a 'patch' embedding part (ViT); this "
                f"one has {embedding.parts}"
            )
        for key in ("image_size", "channels"):
            given, expected = getattr(self.options, key), getattr(embedding, key)
            if given is None:
                setattr(self.options, key, expected)
            elif given != expected:
                raise ConfigError(
                    f"image_classification: {key} {given} differs from the model's "
                    f"embedding.{key} {expected}"
                )

    def _sizes(self) -> tuple[int, int]:
        size, channels = self.options.image_size, self.options.channels
        if size is None or channels is None:
            raise ConfigError("image_classification: image_size and channels are not known yet")
        return size, channels

    def _label_set(self) -> list[str]:
        if not self.labels:
            raise ConfigError("image_classification: the label set is not known yet (fit_labels)")
        return self.labels

    def _label_ids(self, data: ImageData) -> list[int]:
        if data.labels is None:
            raise DataError("has no labels; training and scoring need a label column", data.path)
        index = {label: i for i, label in enumerate(self._label_set())}
        return [index[label] for label in data.labels]

    def stream(
        self, data: ImageData, tokenizer: Tokenizer | None, seed: int, rank: int, world_size: int
    ) -> ImageStream:
        size, channels = self._sizes()
        labels, shift = self._label_ids(data), self.options.shift
        return ImageStream(data, labels, size, channels, seed, rank, world_size, shift)

    def collate(self, instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, Any]:
        # Every image has the same size: stacking is all; there is no padding.
        return {
            "pixel_values": torch.from_numpy(np.stack([i["pixel_values"] for i in instances])),
            "labels": torch.from_numpy(np.stack([i["labels"] for i in instances])),
        }

    def batches(
        self, data: ImageData, tokenizer: Tokenizer | None, batch_size: int
    ) -> Iterator[dict]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        size, channels = self._sizes()
        for start in range(0, len(data), batch_size):
            rows = list(range(start, min(start + batch_size, len(data))))
            yield {"pixel_values": load_images(data, rows, size, channels)}  # [b, c, s, s]

    def target(self) -> TargetConfig:
        options = {"labels": self._label_set(), "pooling": self.options.pooling}
        return TargetConfig("classification", {**options, "dropout": self.options.dropout})

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        return list(logits.double().cpu().numpy())

    def gold(self, data: ImageData) -> list[int]:
        return self._label_ids(data)

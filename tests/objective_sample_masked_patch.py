"""Conformance sample of the ``masked_patch`` objective: 8x8 grey images of bars (the image
classification sample's), a tiny ViT with a mask vector."""

from __future__ import annotations

from pathlib import Path

from helpers import write_corpus
from objective_samples import ObjectiveSample
from task_samples import SAMPLES as TASK_SAMPLES

write_bars = TASK_SAMPLES["image_classification"].write  # the image classification sample's


def _images(folder: Path) -> Path:
    write_bars(folder / "images.tsv", 64, 0)
    return folder / "images.tsv"


def _text(folder: Path) -> Path:
    # preprocess takes a tokenizer for every objective; this one reads no text with it.
    return write_corpus(folder / "vocab.txt", documents=20, seed=0)


SAMPLE = ObjectiveSample(
    "vit-base",
    {
        "embedding.image_size": 8,
        "embedding.patch_size": 2,
        "embedding.channels": 1,
        "embedding.max_positions": 17,
        "embedding.mask_patches": True,
        "encoder.num_layers": 2,
    },
    write_corpus=_images,
    vocab_corpus=_text,
    seq_length=17,
    objective_options={"image_size": 8, "channels": 1, "patch_size": 2, "patch_mask_ratio": 0.5},
)

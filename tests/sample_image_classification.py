"""Conformance sample of the ``image_classification`` task: 8x8 grey PNGs of a bright bar, the
label is its direction (horizontal or vertical), with noise; the base model is a tiny ViT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from task_samples import Sample

import pretrainkit

TINY_VIT = {
    "hidden_size": 64,
    "embedding.image_size": 8,
    "embedding.patch_size": 2,
    "embedding.channels": 1,
    "embedding.max_positions": 17,
    "encoder.num_layers": 2,
    "encoder.num_heads": 2,
    "encoder.ffn_size": 128,
    "targets": [],
}


def write_bars(path: Path, rows: int, seed: int) -> None:
    """``label<TAB>image`` rows; the PNGs go to ``<stem>_images/`` beside the TSV."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = path.parent / f"{path.stem}_images"
    folder.mkdir(exist_ok=True)
    lines = ["label\timage"]
    for row in range(rows):
        label = ("horizontal", "vertical")[row % 2]
        pixels = rng.uniform(0, 80, size=(8, 8))  # [8, 8] background noise
        where = rng.integers(8)
        if label == "horizontal":
            pixels[where, :] = 255
        else:
            pixels[:, where] = 255
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{row}.png")
        lines.append(f"{label}\t{folder.name}/{row}.png")
    path.write_text("\n".join(lines) + "\n")


def tiny_vit(folder: Path) -> Path:
    """A randomly initialised 2-layer ViT for 8x8 grey images, without a tokenizer."""
    torch.manual_seed(0)
    return pretrainkit.build_model("vit-base", TINY_VIT).save(folder)


SAMPLE = Sample(write_bars, threshold=0.9, base=tiny_vit)

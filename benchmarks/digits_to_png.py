"""Write scikit-learn's digits (1,797 real 8x8 grey handwritten digits) as PNG files and
``label<TAB>image`` TSVs with a fixed, seeded, stratified split: the data of the ViT experiment.

    python3 benchmarks/digits_to_png.py --out /work/runs/digits

writes ``OUT/images/NNNN.png`` (grey, values 0-16 scaled to 0-255), ``OUT/train.tsv`` (80 %)
and ``OUT/test.tsv`` (20 %), image paths relative to the TSVs. The same seed gives the same
split; ``OUT/split.json`` records it (seed, sizes, per-class counts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def write_digits(out: Path, seed: int = 0, test_fraction: float = 0.2) -> dict:
    """Write the PNGs and the two TSVs into ``out`` (created; must not hold a previous split)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # [n, 8, 8], 0-16 → 0-255
    labels = digits.target
    rows = np.arange(len(labels))
    train, test = train_test_split(
        rows, test_size=test_fraction, random_state=seed, stratify=labels
    )
    if (out / "train.tsv").exists():
        raise SystemExit(f"{out}/train.tsv exists; choose another --out")
    (out / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        Image.fromarray(images[row]).save(out / "images" / f"{row:04d}.png")
    for name, part in (("train", train), ("test", test)):
        lines = ["label\timage"] + [f"{labels[r]}\timages/{r:04d}.png" for r in sorted(part)]
        (out / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    record = {
        "source": "sklearn.datasets.load_digits",
        "seed": seed,
        "test_fraction": test_fraction,
        "train": len(train),
        "test": len(test),
        "test_per_class": np.bincount(labels[test], minlength=10).tolist(),
    }
    (out / "split.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to write (outside the repo)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args()
    print(json.dumps(write_digits(args.out, args.seed, args.test_fraction)))


if __name__ == "__main__":
    main()

"""Split a header-less task file into a training part and a held-out part (seeded shuffle), by
groups of rows, and cut the same held-out rows out of row-aligned files in other languages.

Where the mirror has one English file per task (XNLI dev-en, PAWS-X dev-en) an experiment needs
a train / test split of it. Two leaks to avoid:

- XNLI gives every premise three hypotheses, one per label. Split row by row, a test row's
  premise is usually in training with the two *other* labels: TF-IDF + LR then scores 0.08 on
  three classes, memorising the premise. ``--group-column 0`` keeps a premise's rows together.
- XNLI dev-xx (and PAWS-X dev-xx) are translations of dev-en, row by row. Zero-shot scores on
  the whole dev-xx file include translations of the training rows. ``--aligned dev-de.tsv=OUT``
  writes the rows of dev-de.tsv at the held-out positions only (the files must have the same
  number of rows).

    python benchmarks/split_rows.py ../shared/data/xnli/dev-en.tsv --train-rows 1990 \
        --group-column 0 --out-train W/xnli-train.tsv --out-test W/xnli-test.tsv \
        --aligned ../shared/data/xnli/dev-de.tsv=W/xnli-test-de.tsv
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def read_rows(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (OSError, UnicodeDecodeError) as error:
        raise SystemExit(f"split_rows: cannot read {path}: {error}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument(
        "--train-rows", type=int, required=True, help="about this many (whole groups)"
    )
    parser.add_argument("--out-train", type=Path, required=True)
    parser.add_argument("--out-test", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--group-column", type=int, help="rows with the same value in this column stay together"
    )
    parser.add_argument(
        "--aligned", nargs="*", default=[], metavar="FILE=OUT",
        help="row-aligned files whose held-out rows to write",
    )  # fmt: skip
    args = parser.parse_args()
    lines = read_rows(args.file)
    if not 0 < args.train_rows < len(lines):
        raise SystemExit(f"split_rows: --train-rows must be in 1..{len(lines) - 1}")
    groups: dict[str, list[int]] = {}
    for index, line in enumerate(lines):
        key = str(index)
        if args.group_column is not None:
            fields = line.split("\t")
            if args.group_column >= len(fields):
                raise SystemExit(
                    f"split_rows: {args.file} line {index + 1} has no column {args.group_column}"
                )
            key = fields[args.group_column]
        groups.setdefault(key, []).append(index)
    order = list(groups.values())
    random.Random(args.seed).shuffle(order)
    train: list[int] = []
    test: list[int] = []
    for members in order:
        (train if len(train) < args.train_rows else test).extend(members)
    train.sort()
    test.sort()
    outputs = [(args.out_train, lines, train), (args.out_test, lines, test)]
    for spec in args.aligned:
        source, sep, out = spec.partition("=")
        if not sep:
            raise SystemExit(f"split_rows: --aligned expects FILE=OUT, got {spec!r}")
        other = read_rows(Path(source))
        if len(other) != len(lines):
            raise SystemExit(
                f"split_rows: {source} has {len(other)} rows, {args.file} {len(lines)}"
            )
        outputs.append((Path(out), other, test))
    for path, rows, indexes in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(rows[i] + "\n" for i in indexes), encoding="utf-8")
        tmp.replace(path)
    print(json.dumps({"train": len(train), "test": len(test), "groups": len(groups),
                      "aligned": len(args.aligned)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

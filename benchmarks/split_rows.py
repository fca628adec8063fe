"""Split a header-less task file into a training part and a held-out part (seeded shuffle).

Used where the mirror has one English file per task (XNLI dev-en, PAWS-X dev-en) and an
experiment needs a train / test split of it:

    python benchmarks/split_rows.py ../shared/data/xnli/dev-en.tsv --train-rows 1990 \
        --out-train W/xnli-train.tsv --out-test W/xnli-test.tsv
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--train-rows", type=int, required=True)
    parser.add_argument("--out-train", type=Path, required=True)
    parser.add_argument("--out-test", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        lines = [line for line in args.file.read_text(encoding="utf-8").splitlines() if line]
    except (OSError, UnicodeDecodeError) as error:
        print(f"split_rows: cannot read {args.file}: {error}", file=sys.stderr)
        return 1
    if not 0 < args.train_rows < len(lines):
        print(f"split_rows: --train-rows must be in 1..{len(lines) - 1}", file=sys.stderr)
        return 1
    random.Random(args.seed).shuffle(lines)
    for path, part in (
        (args.out_train, lines[: args.train_rows]),
        (args.out_test, lines[args.train_rows :]),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(part) + "\n", encoding="utf-8")
    print(json.dumps({"train": args.train_rows, "test": len(lines) - args.train_rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

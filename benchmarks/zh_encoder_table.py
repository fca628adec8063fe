"""The RESULTS.md table of benchmarks/zh_encoder.sh: pre-trained vs from scratch vs baseline.

    python benchmarks/zh_encoder_table.py WORK_DIR

Reads the JSON each step of the script left in ``WORK_DIR/logs`` and prints one markdown row
per task and split; a step that has not run yet shows as "–".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# (task, split, metric key, pretrained log, scratch log, baseline log, baseline key, label)
ROWS = [
    ("ChnSentiCorp", "dev (1,200)", "accuracy", "chnsenticorp-eval", "tfidf-chnsenticorp",
     "accuracy", "TF-IDF + LR"),
    ("book_review", "dev (8,000)", "accuracy", "book_review-eval", "tfidf-book_review",
     "accuracy", "TF-IDF + LR"),
    ("msra_ner, --crf", "dev (2,318)", "f1", "ner-crf-dev", "gazetteer-ner-dev", "f1",
     "training-entity gazetteer"),
    ("msra_ner, --crf", "test (4,636)", "f1", "ner-crf-test", "gazetteer-ner-test", "f1",
     "training-entity gazetteer"),
    ("msra_ner, softmax", "dev (2,318)", "f1", "ner-softmax-dev", "gazetteer-ner-dev", "f1",
     "training-entity gazetteer"),
    ("msra_ner, softmax", "test (4,636)", "f1", "ner-softmax-test", "gazetteer-ner-test", "f1",
     "training-entity gazetteer"),
    ("CMRC2018 (F1)", "dev articles 424– (1,726 q)", "f1", "cmrc-eval", "cmrc-eval", "f1",
     "best-overlap sentence"),
    ("CMRC2018 (EM)", "dev articles 424– (1,726 q)", "exact_match", "cmrc-eval", "cmrc-eval",
     "exact_match", "best-overlap sentence"),
    ("C3", "report part (997 q)", "accuracy", "c3-eval", "c3-split", "report.overlap",
     "best-overlap choice"),
]  # fmt: skip


def read(logs: Path, name: str | None) -> dict[str, Any] | None:
    if name is None or not (logs / f"{name}.json").is_file():
        return None
    return json.loads((logs / f"{name}.json").read_text())


def value(record: dict[str, Any] | None, key: str | None) -> str:
    if record is None or key is None:
        return "–"
    for part in key.split("."):
        if not isinstance(record, dict) or part not in record:
            return "–"
        record = record[part]
    return f"{float(record):.4f}"  # type: ignore[arg-type]


def main() -> None:
    logs = Path(sys.argv[1]) / "logs"
    print("| task | split | metric | pre-trained here | from random init | baseline |")
    print("|---|---|---|---:|---:|---|")
    for task, split, metric, log, base_log, base_key, base_name in ROWS:
        ours = value(read(logs, f"pretrained-{log}"), metric)
        scratch = value(read(logs, f"scratch-{log}"), metric)
        base = value(read(logs, base_log), base_key)
        baseline = f"{base} ({base_name})" if base_name else "–"
        print(f"| {task} | {split} | {metric} | {ours} | {scratch} | {baseline} |")


if __name__ == "__main__":
    main()

"""The table of benchmarks/xling_transfer.sh: per backbone, task and row, the English select
accuracy and the zero-shot accuracy per language and on average, mean ± sample std over the
seeds; then the alignment figures (English→translation retrieval accuracy, average over the
languages) of the backbone and of the fine-tuned models.

    python benchmarks/xling_transfer_table.py WORK_DIR
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

LANGUAGES = {"xnli": ["de", "es", "fr", "ru", "zh"], "pawsx": ["de", "es", "fr", "zh"]}
ROWS = ["plain", "fgm", "ep", "ep-ap", "ep-ap-r"]
EVAL = re.compile(
    r"eval-(?P<backbone>.+)-(?P<task>xnli|pawsx)-(?P<row>[a-z0-9.-]+?)-(?P<seed>\d+)-(?P<lang>[a-z]+)"
)


def spread(values: list[float]) -> str:
    if not values:
        return ""
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {std:.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    args = parser.parse_args()
    scores: dict[tuple[str, str, str], dict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for path in sorted((args.work / "logs").glob("eval-*.json")):
        match = EVAL.fullmatch(path.stem)
        if match is None:
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        key = (match["backbone"], match["task"], match["row"])
        scores[key][match["lang"]][int(match["seed"])] = result["accuracy"]
    for backbone, task in sorted({(b, t) for b, t, _ in scores}):
        languages = LANGUAGES[task]
        print(f"\n{backbone}, {task} (accuracy; mean ± std over seeds)\n")
        print("| row | seeds | en (select) | " + " | ".join(languages) + " | zero-shot avg |")
        print("|---" * (len(languages) + 4) + "|")
        tuned = sorted({r for b, t, r in scores if (b, t) == (backbone, task)} - set(ROWS))
        for row in [*ROWS, *tuned]:  # then rows with tuned weights (ep-ap-r-ap0.1, ...)
            by_lang = scores.get((backbone, task, row))
            if not by_lang:
                continue
            seeds = sorted(set.intersection(*(set(by_lang[lang]) for lang in ["en", *languages])))
            averages = [statistics.mean(by_lang[lang][s] for lang in languages) for s in seeds]
            cells = [spread([by_lang[lang][s] for s in seeds]) for lang in ["en", *languages]]
            print(f"| {row} | {len(seeds)} | " + " | ".join(cells) + f" | {spread(averages)} |")
        for kind in ("word", "char"):  # the baseline: TF-IDF + LR on the same English rows
            files = [
                args.work / "logs" / f"tfidf-{task}-{kind}-{lang}.json"
                for lang in ["en", *languages]
            ]
            if all(f.is_file() for f in files):
                values = [json.loads(f.read_text(encoding="utf-8"))["accuracy"] for f in files]
                cells = [f"{v:.4f}" for v in values]
                average = statistics.mean(values[1:])
                print(f"| TF-IDF ({kind}) + LR | — | " + " | ".join(cells) + f" | {average:.4f} |")
    for path in sorted((args.work / "logs").glob("align-*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        print(f"\n{path.stem}: retrieval accuracy en→x (average over languages)")
        for model in result["results"]:
            print(f"- {model['model']}: {model['retrieval_mean']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

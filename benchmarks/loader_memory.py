"""Peak RSS of the streaming loader on a small and a 100× larger corpus (made by repetition).

    python benchmarks/loader_memory.py \
        --corpus ../shared/data/corpora/CLUECorpusSmall_bert_sampled.txt \
        --tokenizer ../shared/data/vocab/google_zh_vocab.txt --sizes-mb 2 200

For each size the corpus is repeated up to that size, preprocessed, and then a fresh process
streams the same number of batches (masking and collation included) and reports its peak RSS.
Memory must not grow with the corpus: the loader reads windows with positioned reads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from pretrainkit.data import preprocess

CHILD = """
import resource, sys, time
from pretrainkit.data import BatchIterator, Shards, pretraining_stream
shards = Shards.open(sys.argv[1])
it = BatchIterator(pretraining_stream(shards, objective=sys.argv[2], seed=0), int(sys.argv[3]),
                   shards.tokenizer.pad_id)
start = time.perf_counter()
tokens = 0
for _ in range(int(sys.argv[4])):
    tokens += int(it.next_batch()["attention_mask"].sum())
elapsed = time.perf_counter() - start
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, tokens / elapsed)
"""


def make_corpus(source: Path, target: Path, size_mb: float) -> int:
    text = source.read_bytes()
    if not text.endswith(b"\n\n"):
        text += b"\n" if text.endswith(b"\n") else b"\n\n"
    with target.open("wb") as f:
        written = 0
        while written < size_mb * 1e6:
            f.write(text)
            written += len(text)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[2, 200])
    parser.add_argument("--objective", default="mlm")
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes_mb:
            corpus = Path(tmp) / f"corpus-{size}.txt"
            written = make_corpus(Path(args.corpus), corpus, size)
            shards = Path(tmp) / f"shards-{size}"
            preprocess(
                [corpus],
                args.tokenizer,
                args.objective,
                args.seq_length,
                shards,
                workers=args.workers,
                log=lambda _: None,
            )
            corpus.unlink()
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(shards),
                    args.objective,
                    str(args.batch_size),
                    str(args.batches),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            row = {
                "corpus_mb": round(written / 1e6, 1),
                "peak_rss_mb": round(int(out[0]) / 1024, 1),
                "loader_tokens_per_s": round(float(out[1])),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if len(rows) >= 2:
        growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] - 1
        print(json.dumps({"rss_growth": round(growth, 4)}))


if __name__ == "__main__":
    main()

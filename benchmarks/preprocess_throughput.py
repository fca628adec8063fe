"""Preprocess throughput (MB/s of corpus) and shard size relative to the corpus.

    python benchmarks/preprocess_throughput.py \
        --corpus ../shared/data/corpora/CLUECorpusSmall_bert_sampled.txt \
        --tokenizer ../shared/data/vocab/google_zh_vocab.txt --workers 1 2 --repeats 3

Each run is a whole `preprocess` call (process start-up of the workers included), timed from
outside; the median over repeats is reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pretrainkit.data import preprocess
from pretrainkit.data.shards import DOCUMENTS, SENTENCES, TOKENS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", nargs="+", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--objective", default="bert")
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    corpus_bytes = sum(Path(c).stat().st_size for c in args.corpus)
    for workers in args.workers:
        times, ratio = [], 0.0
        for _ in range(args.repeats):
            out = Path(tempfile.mkdtemp()) / "shards"
            start = time.perf_counter()
            preprocess(
                args.corpus,
                args.tokenizer,
                args.objective,
                args.seq_length,
                out,
                workers=workers,
                log=lambda _: None,
            )
            times.append(time.perf_counter() - start)
            shard_bytes = sum(
                (out / name).stat().st_size for name in (TOKENS, SENTENCES, DOCUMENTS)
            )
            ratio = shard_bytes / corpus_bytes
            shutil.rmtree(out.parent)
        median = statistics.median(times)
        print(
            json.dumps(
                {
                    "workers": workers,
                    "corpus_mb": round(corpus_bytes / 1e6, 2),
                    "seconds_median": round(median, 3),
                    "mb_per_s": round(corpus_bytes / 1e6 / median, 2),
                    "shard_over_corpus": round(ratio, 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()

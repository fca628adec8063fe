#!/usr/bin/env bash
# The small multilingual BERT of issue 14 (recipe 3, LightMBERT teacher; §4 whitening) and
# issue 15 (backbone): a bert-mini shape (4 layers, hidden 256, 4 heads, ffn 1024, positions
# 128) MLM-pre-trained here on the mirror's multilingual text (benchmarks/multilingual_corpus.py:
# STS-B multi-mt train sentences of 10 languages, news-commentary en-zh, a capped slice of
# CLUECorpusSmall; no dev split, XNLI or PAWS-X text) with a cased WordPiece trained on it.
# The probe fine-tunes it, and the same shape from random initialisation, on PAWS-X English
# (dev-en.tsv shuffled with seed 13: 1,600 rows train, 400 select) and scores both zero-shot on
# PAWS-X de, es, fr, zh.
#
# Usage: bash benchmarks/mbert_pretrain.sh WORK_DIR [PART] [DATA_DIR]
#   PART: all (default) | prepare | timing | pretrain | probe | scratch-probe
#   prepare: corpus, vocabulary, coverage, shards, PAWS-X split, the random-init model.
#   timing: a 20-step run to measure the step time (the step budget below comes from it).
#   pretrain: the full run; $WORK/pretrained links to its model folder.
#   probe: PAWS-X for the pre-trained and the random-init model; scratch-probe: the random-init
#   model only (needs only prepare, so it can run beside pretrain on the second core).
# Budget on this 2-core CPU with --threads 1: pre-training up to an hour (see pretrain()); each
# probe 5-10 min.
# Every command's JSON output is kept in WORK_DIR/logs/.
set -euo pipefail
work="${1:?usage: mbert_pretrain.sh WORK_DIR [PART] [DATA_DIR]}"
part="${2:-all}"
data="${3:-${PRETRAINKIT_DATA:-../shared/data}}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$work/logs"
source "$here/steps.sh"
tokenizer="$work/tokenizer"
model=(--model bert-mini --model.embedding.max_positions 128 --model.targets '[{name: mlm}]')
pawsx=(--columns text_a,text_b,label)

prepare() {
  run corpus python3 "$here/multilingual_corpus.py" --data "$data" --out "$work/corpus.txt"
  # Cased: lowercasing would also strip the accents that tell de/es/fr/pl words apart.
  run vocab pk vocab --corpus "$work/corpus.txt" --kind wordpiece --size 20000 --cased \
    --out "$tokenizer"
  run coverage python3 "$here/multilingual_corpus.py" --data "$data" --coverage "$tokenizer" \
    --corpus "$work/corpus.txt" --sentences 300
  run preprocess pk preprocess --corpus "$work/corpus.txt" --tokenizer "$tokenizer" \
    --objective mlm --seq-length 128 --out "$work/shards"
  run pawsx-split python3 "$here/multilingual_corpus.py" --data "$data" \
    --pawsx-split "$work/pawsx" --train-rows 1600 --seed 13
  run scratch-init pk init "${model[@]}" --tokenizer "$tokenizer" --out "$work/scratch"
}

timing() {
  run timing pk pretrain "${model[@]}" --data "$work/shards" --out "$work/timing" --steps 20 \
    --batch-size 32 --lr 5e-4 --warmup 5 --precision bf16 --log-every 5 --no-progress
}

pretrain() {
  # 1,200 steps x 32 windows x 126 tokens = 4.8 M tokens, about 2.4 passes over the 2.0 M-token
  # corpus (masking is dynamic); lr 5e-4 with 10 % warmup as the Chinese bert-mini of
  # zh_encoder.sh. The 20-step timing run gave 0.5-0.9 s a step at load 3, but the shared CPU
  # then ran at load 6-8 (2.5 s a step), so the recorded run has 1,200 steps to end within the
  # hour; on a quiet machine MBERT_STEPS=5000 fills the 45-55 min budget the recipe intends.
  run pretrain pk pretrain "${model[@]}" --data "$work/shards" --out "$work/pretrain" \
    --steps "${MBERT_STEPS:-1200}" --batch-size 32 --lr 5e-4 --warmup 120 --precision bf16 \
    --save-every 300 --log-every 50 --no-progress
  ln -sfn "$work/pretrain/model" "$work/pretrained"
}

# probe NAME MODEL_DIR: fine-tune on PAWS-X English train, select on English, zero-shot others.
probe() {
  local name="$1" base="$2"
  run "$name-pawsx" pk finetune --task classification --model "$base" \
    --train "$work/pawsx/en-train.tsv" "${pawsx[@]}" --out "$work/probe/$name" --epochs 5 \
    --batch-size 32 --seq-length 128 --lr 1e-4 --warmup 25 --seed 13 --no-progress
  run "$name-pawsx-en-select" pk evaluate --model "$work/probe/$name" \
    --data "$work/pawsx/en-select.tsv" "${pawsx[@]}"
  for language in de es fr zh; do
    run "$name-pawsx-$language" pk evaluate --model "$work/probe/$name" \
      --data "$data/pawsx/dev-$language.tsv" "${pawsx[@]}"
  done
}

case "$part" in
  prepare) prepare ;;
  timing) prepare; timing ;;
  pretrain) prepare; pretrain ;;
  probe) probe pretrained "$work/pretrained"; probe scratch "$work/scratch" ;;
  scratch-probe) prepare; probe scratch "$work/scratch" ;;
  all) prepare; pretrain; probe pretrained "$work/pretrained"; probe scratch "$work/scratch" ;;
  *) echo "unknown PART $part (all, prepare, timing, pretrain, probe, scratch-probe)" >&2; exit 2 ;;
esac
uptime

#!/usr/bin/env bash
# CSL with pre-training: the shrunk T5-small and BART-base shapes of benchmarks/csl.py, pre-
# trained with the `t5` (span corruption) and `bart` (sentence permutation + text infilling)
# objectives on CLUECorpusSmall (the 20,641-line sentence-per-line sample) plus the CSL text no
# held-out row contains (csl.py --prepare: the dev-only tasks' 800 training abstracts and
# cls_ctg's 8,000 training titles), then fine-tuned on the four CSL tasks beside the same shapes
# from random initialisation (csl.py's budgets: 600 steps for categories, 300 for the others).
#
# Usage: bash benchmarks/csl_pretrain.sh WORK_DIR [PART] [DATA_DIR]
#   PART: all (default) | prepare | pretrain-t5 | pretrain-bart | finetune-t5 | finetune-bart
#         | scratch-t5 | scratch-bart | head-t5 | head-bart (categories with a softmax head on the
#         pre-trained encoder instead of generation)
#   STEPS=N overrides the pre-training steps (default 4000); SMOKE=1 runs every part on 200
#   corpus lines with 2 pre-training and 2 fine-tuning steps (checks the wiring in minutes).
# Budget on this 2-core CPU with --threads 1 per job (not yet run in full): pre-training about
# 1 h per shape at 4,000 steps of 32 x 256 tokens; each fine-tuning run about 10 min.
# Every command's JSON output is kept in WORK_DIR/logs/.
set -euo pipefail
work="${1:?usage: csl_pretrain.sh WORK_DIR [PART] [DATA_DIR]}"
part="${2:-all}"
data="${3:-${PRETRAINKIT_DATA:-../shared/data}}"
here="$(cd "$(dirname "$0")" && pwd)"
vocab="$data/vocab/google_zh_vocab.txt"
steps="${STEPS:-4000}"
tune=()
if [ "${SMOKE:-0}" = 1 ]; then steps=2; tune=(--steps 2); fi
mkdir -p "$work/logs"
source "$here/steps.sh"
# The shapes of csl.py's SHAPES, as command-line overrides.
body=(--model.hidden_size 128 --model.encoder.num_layers 2 --model.encoder.num_heads 4
  --model.encoder.ffn_size 512 --model.decoder.num_layers 2 --model.decoder.num_heads 4
  --model.decoder.ffn_size 512)
t5=(--model t5-small "${body[@]}" --model.encoder.head_dim 32 --model.decoder.head_dim 32
  --model.targets '[{name: seq2seq_lm, scale: 0.08838834764831845}]')
bart=(--model bart-base "${body[@]}" --model.embedding.max_positions 258
  --model.tgt_embedding.max_positions 258 --model.decoder.start_id 101 --model.decoder.pad_id 0)

prepare() {
  run corpus python3 "$here/csl.py" --data "$data" --out "$work" --prepare
  local clue="$data/corpora/CLUECorpusSmall_bert_sampled.txt"
  if [ "${SMOKE:-0}" = 1 ]; then
    head -n 200 "$clue" > "$work/clue.txt"; clue="$work/clue.txt"
    head -n 200 "$work/csl_corpus.txt" > "$work/csl_smoke.txt"
    mv "$work/csl_smoke.txt" "$work/csl_corpus.txt"
  fi
  # Each objective adds what it needs to the tokenizer (t5: <extra_id_N> sentinels).
  for objective in t5 bart; do
    run "preprocess-$objective" pk preprocess --corpus "$clue" "$work/csl_corpus.txt" \
      --tokenizer "$vocab" --objective "$objective" --seq-length 256 --out "$work/shards-$objective"
  done
}

pretrain() {  # pretrain SHAPE (t5 | bart)
  local -n shape="$1"
  run "pretrain-$1" pk pretrain "${shape[@]}" --data "$work/shards-$1" --out "$work/pretrain-$1" \
    --steps "$steps" --batch-size 32 --lr 1e-3 --warmup $((steps / 10)) --save-every 1000 \
    --log-every 100 --no-progress
}

finetune() {  # finetune SHAPE: the four tasks from the pre-trained model
  run "finetune-$1" python3 "$here/csl.py" --data "$data" --out "$work" \
    --base "$work/pretrain-$1/model" --name "$1-pretrained" "${tune[@]}"
}

classify() {  # classify SHAPE: categories with a classification head on the pre-trained encoder
  run "head-$1" python3 "$here/csl.py" --data "$data" --out "$work" \
    --base "$work/pretrain-$1/model" --name "$1-pretrained-head" --tasks ctg \
    --head classification "${tune[@]}"
}

scratch() {  # scratch SHAPE: the same fine-tuning from random initialisation
  local preset=t5-small
  if [ "$1" = bart ]; then preset=bart-base; fi
  run "scratch-$1" python3 "$here/csl.py" --data "$data" --out "$work" --shape "$preset" \
    --name "$1-scratch" "${tune[@]}"
}

case "$part" in
  prepare) prepare ;;
  pretrain-t5) pretrain t5 ;;
  pretrain-bart) pretrain bart ;;
  finetune-t5) finetune t5 ;;
  finetune-bart) finetune bart ;;
  scratch-t5) scratch t5 ;;
  scratch-bart) scratch bart ;;
  head-t5) classify t5 ;;
  head-bart) classify bart ;;
  all)
    prepare
    pretrain t5; finetune t5; classify t5; scratch t5
    pretrain bart; finetune bart; classify bart; scratch bart
    ;;
  *) echo "unknown part: $part" >&2; exit 2 ;;
esac

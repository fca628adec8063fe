#!/usr/bin/env bash
# LightMBERT (issue 14, recipe 3): the small multilingual BERT pre-trained here
# (benchmarks/mbert_pretrain.sh: 4 layers, hidden 256, MLM) is the teacher; the student takes its
# bottom 2 layers and its word embeddings, frozen, and is distilled layer by layer (hidden states
# and attention maps, `distill --recipe layerwise`) on the same masked multilingual shards. The
# same-size student without distillation: the same cut, the same frozen table, the same shards
# and steps, trained on MLM alone (the layerwise recipe with the teacher's losses off). Then the
# teacher and both students are fine-tuned on English PAWS-X (the train/select split of
# mbert_pretrain.sh) and scored zero-shot on PAWS-X de, es, fr, zh.
#
# Usage: [TEACHER=DIR] [LIGHT_STEPS=N] bash benchmarks/lightmbert.sh WORK_DIR MBERT_WORK_DIR [DATA]
# Budget on this 2-core CPU (--threads 1): each distillation ~15 min, each probe ~5 min.
set -euo pipefail
work="${1:?usage: lightmbert.sh WORK_DIR MBERT_WORK_DIR [DATA_DIR]}"
mbert="${2:?usage: lightmbert.sh WORK_DIR MBERT_WORK_DIR [DATA_DIR]}"
data="${3:-${PRETRAINKIT_DATA:-../shared/data}}"
steps="${LIGHT_STEPS:-1500}"
# The teacher: the finished pre-training, or (TEACHER=DIR) a model folder copied from one of its
# checkpoints when the run is still going.
teacher="${TEACHER:-$mbert/pretrained}"
mkdir -p "$work/logs"
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/steps.sh"
cut=(--teacher "$teacher" --student "$teacher" --student-layers 2
  --freeze-word-embeddings --recipe layerwise --data "$mbert/shards" --steps "$steps"
  --batch-size 32 --lr 5e-4 --warmup $((steps / 10)) --precision bf16 --no-progress
  --log-every 50)
run distilled pk distill "${cut[@]}" --out "$work/distilled"
run mlm-only pk distill "${cut[@]}" --hidden-weight 0 --attention-weight 0 --hard-weight 1 \
  --out "$work/mlm-only"

pawsx=(--columns text_a,text_b,label)
probe() {  # probe NAME MODEL_DIR: PAWS-X English train, select on English, zero-shot others
  local name="$1" base="$2"
  run "$name-pawsx" pk finetune --task classification --model "$base" \
    --train "$mbert/pawsx/en-train.tsv" "${pawsx[@]}" --out "$work/probe/$name" --epochs 3 \
    --batch-size 32 --seq-length 128 --lr 5e-5 --warmup 15 --seed 13 --no-progress
  run "$name-en-select" pk evaluate --model "$work/probe/$name" \
    --data "$mbert/pawsx/en-select.tsv" "${pawsx[@]}"
  for language in de es fr zh; do
    run "$name-$language" pk evaluate --model "$work/probe/$name" \
      --data "$data/pawsx/dev-$language.tsv" "${pawsx[@]}"
  done
}
probe teacher "$teacher"
probe distilled "$work/distilled"
probe mlm-only "$work/mlm-only"

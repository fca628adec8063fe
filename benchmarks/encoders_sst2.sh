#!/usr/bin/env bash
# Encoders besides the transformer (issue 13): SST-2 from random initialisation, one run each.
# A WordPiece vocabulary (8,000) on SST-2's training sentences; then per encoder a random model
# of width 128 and 2 layers (`init`), fine-tuned with the same budget (`finetune`: 4 epochs,
# batch 32, lr 1e-3, the task's other defaults: mean pooling, 10 % warmup, linear decay; SEED
# for the initialisation and the data order, default 0)
# and scored on SST-2 dev (`evaluate`). Prints a Markdown table (dev accuracy, fine-tuning wall
# time, parameters) and writes it to WORK_DIR/table.md.
# Usage: bash benchmarks/encoders_sst2.sh [DATA_DIR] [WORK_DIR] [EPOCHS] [SEED]
# 18-38 min on a shared 2-core machine (load average 4-15), one thread.
set -euo pipefail
data="${1:-${PRETRAINKIT_DATA:-../shared/data}}"
work="${2:-runs/encoders-sst2}"
epochs="${3:-4}"
seed="${4:-0}"
if [ -e "$work" ]; then echo "$work exists; give another WORK_DIR" >&2; exit 2; fi
mkdir -p "$work"
pk() { python3 -m pretrainkit "$@" --threads 1; }
cut -f2 "$data/sst2/train.tsv" | awk '{print; print ""}' > "$work/corpus.txt"
pk vocab --corpus "$work/corpus.txt" --kind wordpiece --size 8000 --out "$work/tokenizer"

# name|embedding parts|encoder section (the transformer is bert-tiny's: 2 heads, ffn 512)
encoders=(
  "transformer|[word, position, segment]|{name: transformer, num_layers: 2, num_heads: 2, ffn_size: 512}"
  "lstm|[word]|{name: lstm, num_layers: 2}"
  "bilstm|[word]|{name: lstm, num_layers: 2, bidirectional: true}"
  "gru|[word]|{name: gru, num_layers: 2}"
  "bigru|[word]|{name: gru, num_layers: 2, bidirectional: true}"
  "gatedcnn|[word]|{name: gatedcnn, num_layers: 2, kernel_size: 3}"
)
for entry in "${encoders[@]}"; do
  IFS='|' read -r name parts encoder <<< "$entry"
  cat > "$work/$name.yaml" <<EOF
hidden_size: 128
embedding: {parts: $parts, max_positions: 128}
encoder: $encoder
targets: [{name: mlm}]
EOF
  pk init --model "$work/$name.yaml" --tokenizer "$work/tokenizer" --seed "$seed" --out "$work/$name-init" \
    > "$work/$name-init.json"
  start=$(date +%s.%N)
  pk finetune --model "$work/$name-init" --train "$data/sst2/train.tsv" --columns label,text_a \
    --epochs "$epochs" --lr 1e-3 --seed "$seed" --out "$work/$name" --no-progress
  end=$(date +%s.%N)
  echo "{\"seconds\": $(echo "$end - $start" | bc)}" > "$work/$name-time.json"
  pk evaluate --model "$work/$name" --data "$data/sst2/dev.tsv" --columns label,text_a \
    > "$work/$name-dev.json"
done
python3 - "$work" "${encoders[@]}" <<'EOF' | tee "$work/table.md"
import json, sys
from pathlib import Path

import pretrainkit

work = Path(sys.argv[1])
print("| encoder | section | encoder parameters | SST-2 dev accuracy | fine-tuning wall time |")
print("|---|---|---:|---:|---:|")
for entry in sys.argv[2:]:
    name, _, section = entry.split("|")
    model = pretrainkit.load(work / name / "model")
    parameters = sum(p.numel() for p in model.encoder.parameters())
    accuracy = json.loads((work / f"{name}-dev.json").read_text())["accuracy"]
    seconds = json.loads((work / f"{name}-time.json").read_text())["seconds"]
    print(f"| {name} | `{section}` | {parameters:,} | {accuracy:.4f} | {seconds / 60:.1f} min |")
EOF
uptime

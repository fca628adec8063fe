#!/usr/bin/env bash
# Zero-shot cross-lingual transfer from English (issue 15): fine-tune a multilingual backbone on
# English only — XNLI dev-en (1,990 rows train / 500 select) and PAWS-X dev-en (1,600 / 400),
# split with seed 13 — and score it on XNLI de es fr ru zh and PAWS-X de es fr zh. Rows, at the
# same budget (3 epochs, batch 32, sequence 128, bf16), each with seeds $SEEDS:
#   plain    fine-tuning
#   fgm      FGM adversarial training on the word embeddings (epsilon 1)
#   ep       Embedding-Push toward the other languages' word-embedding centroids (epsilon 1;
#            centroids from the STS-B multi-mt *train* sentences of 10 languages)
#   ep-ap    EP + Attention-Pull (weight 1, MSE, all layers)
#   ep-ap-r  EP + AP + Robust targets (weight 1)
#   ep-ap-r-apW  EP + AP with weight W + R (e.g. ep-ap-r-ap0.1: the AP weight tuned on the
#            English select part)
# The splits keep an XNLI premise's three rows together, and the zero-shot files hold only the
# held-out rows of each language (dev-xx files are row-aligned translations of dev-en: scoring
# the whole file would score translations of the training rows).
# TF-IDF + LR on the same English rows is the simple baseline beside every row.
# Then the alignment figure (English→translation retrieval on STS-B multi-mt dev, xling_sts.py)
# of the backbone and of the first seed's plain and ep-ap-r models (ALIGN=0 skips it: for a
# second instance running other seeds beside the first), and the table
# (benchmarks/xling_transfer_table.py).
#
# Usage: bash benchmarks/xling_transfer.sh WORK_DIR DATA_DIR NAME=BACKBONE_DIR [NAME=DIR ...]
# Environment: SEEDS ("1 2 3"), ROWS ("plain fgm ep ep-ap ep-ap-r"), TASKS ("xnli pawsx"),
# ALIGN (1). Instances with different SEEDS may run side by side (one core
# each); every step's JSON lands in WORK_DIR/logs and a finished step is never run again.
set -euo pipefail
work="${1:?usage: xling_transfer.sh WORK_DIR DATA_DIR NAME=DIR ...}"
data="${2:?usage: xling_transfer.sh WORK_DIR DATA_DIR NAME=DIR ...}"
shift 2
here="$(cd "$(dirname "$0")" && pwd)"
seeds="${SEEDS:-1 2 3}"
rows="${ROWS:-plain fgm ep ep-ap ep-ap-r}"
task_names="${TASKS:-xnli pawsx}"
align="${ALIGN:-1}"
mkdir -p "$work/logs" "$work/data"
source "$here/steps.sh"

aligned() {  # the held-out rows of each language's file of task $1
  local task="$1"; shift
  for lang in "$@"; do echo "$data/$task/dev-$lang.tsv=$work/data/$task-test-$lang.tsv"; done
}
# shellcheck disable=SC2046  # file=out pairs without spaces
run split-xnli python3 "$here/split_rows.py" "$data/xnli/dev-en.tsv" --train-rows 1990 \
  --seed 13 --group-column 0 --out-train "$work/data/xnli-train.tsv" \
  --out-test "$work/data/xnli-select.tsv" --aligned $(aligned xnli de es fr ru zh)
# shellcheck disable=SC2046
run split-pawsx python3 "$here/split_rows.py" "$data/pawsx/dev-en.tsv" --train-rows 1600 \
  --seed 13 --out-train "$work/data/pawsx-train.tsv" --out-test "$work/data/pawsx-select.tsv" \
  --aligned $(aligned pawsx de es fr zh)
run tagged python3 "$here/parallel_pairs.py" --data "$data" --out "$work/data/tagged.tsv" --tagged
# The simple baseline: TF-IDF + logistic regression trained on the same English rows, word
# 1-2-grams and character n-grams (which share pieces across the Latin-script languages).
for task in $task_names; do
  for lang in select $(if [ "$task" = xnli ]; then echo de es fr ru zh; else echo de es fr zh; fi); do
    file="$work/data/$task-$lang.tsv"
    if [ "$lang" != select ]; then file="$work/data/$task-test-$lang.tsv"; fi
    name="$lang"; if [ "$lang" = select ]; then name=en; fi
    run "tfidf-$task-word-$name" python3 "$here/tfidf_baseline.py" --train "$work/data/$task-train.tsv" \
      --dev "$file" --columns text_a,text_b,label
    run "tfidf-$task-char-$name" python3 "$here/tfidf_baseline.py" --train "$work/data/$task-train.tsv" \
      --dev "$file" --columns text_a,text_b,label --chars
  done
done

options() {
  local push=(--embedding-push centroid --centroid-text "$work/data/tagged.tsv" --epsilon 1.0)
  case "$1" in
    plain) ;;
    fgm) echo --adversarial fgm --epsilon 1.0 ;;
    ep) echo "${push[@]}" ;;
    ep-ap) echo "${push[@]}" --attention-pull 1.0 ;;
    ep-ap-r) echo "${push[@]}" --attention-pull 1.0 --robust-targets 1.0 ;;
    ep-ap-r-ap*) echo "${push[@]}" --attention-pull "${1#ep-ap-r-ap}" --robust-targets 1.0 ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}
languages() { if [ "$1" = xnli ]; then echo de es fr ru zh; else echo de es fr zh; fi; }

for backbone in "$@"; do
  name="${backbone%%=*}"
  dir="${backbone#*=}"
  for task in $task_names; do
    columns=(--columns text_a,text_b,label)
    for seed in $seeds; do  # every row of a seed before the next seed: early rows are whole
      for row in $rows; do
        id="$name-$task-$row-$seed"
        out="$work/runs/$id"
        # shellcheck disable=SC2046  # the row's options are words without spaces
        run "$id" pk finetune --task classification --model "$dir" \
          --train "$work/data/$task-train.tsv" --dev "$work/data/$task-select.tsv" \
          "${columns[@]}" --out "$out" --epochs 3 --seed "$seed" --batch-size 32 \
          --seq-length 128 --precision bf16 --no-progress --keep-last 1 $(options "$row")
        run "eval-$id-en" pk evaluate --model "$out" --data "$work/data/$task-select.tsv" \
          "${columns[@]}"
        for lang in $(languages "$task"); do
          run "eval-$id-$lang" pk evaluate --model "$out" --data "$work/data/$task-test-$lang.tsv" \
            "${columns[@]}"
        done
      done
    done
    if [ "$align" != 1 ]; then continue; fi
    first="${seeds%% *}"
    models=("$dir")
    # plain, ep-ap-r and any ep-ap-r-apW row (a tuned Attention-Pull weight) of this run
    for row in plain ep-ap-r $(printf '%s\n' $rows | grep '^ep-ap-r-ap' || true); do
      if [ -d "$work/runs/$name-$task-$row-$first/model" ]; then
        models+=("$work/runs/$name-$task-$row-$first/model")
      fi
    done
    run "align-$name-$task" python3 "$here/xling_sts.py" --data "$data" --model "${models[@]}" \
      --threads 1
  done
done
if [ "$align" = 1 ]; then python3 "$here/xling_transfer_table.py" "$work"; fi

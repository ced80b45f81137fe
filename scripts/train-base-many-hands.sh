#!/usr/bin/env bash
# Trains the many-hands base model (issue 15): cuts every source with scripts/prepare-base-data.sh (skipped when
# its lines are there), then trains config/base-many-hands/train.yaml on all training lists, validating on the
# val lines of all sources in one list. Resumable: run it again with resume=true after a stop or a lost session
# (last/ is written after every validation).
#   WORK=runs/base-many-hands scripts/train-base-many-hands.sh [KEY=VALUE ...]   (train overrides: threads=1 ...)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs/base-many-hands}
export WORK
SOURCES=(timeus-1858 htromance-fr CREMMA-MSS-17 CREMMA-MSS-18 FONDUE-FR-MSS-18)

missing=()
for name in "${SOURCES[@]}"; do
  [[ -f $WORK/lines/$name/training_all_train.txt ]] || missing+=("$name")
done
[[ ${#missing[@]} -eq 0 ]] || scripts/prepare-base-data.sh "${missing[@]}"

# one validation list: every source's val lines, their paths made absolute
val=$WORK/lines/val_all.txt
train=()
: >"$val.tmp"
for name in "${SOURCES[@]}"; do
  dir=$(realpath "$WORK/lines/$name")
  train+=("$dir/training_all_train.txt")
  awk -F'\t' -v OFS='\t' -v d="$dir" '/^#/ || NF < 2 {next} $1 !~ /^\// {$1 = d "/" $1} {print}' \
    "$dir/training_all_val.txt" >>"$val.tmp"
done
mv "$val.tmp" "$val"

loghi-ft train --config config/base-many-hands/train.yaml --train-list "${train[@]}" --val-list "$val" \
  --output "$WORK" "$@"

#!/usr/bin/env bash
# Trains the base layout model shipped in models/ (issue 12) on the fixed training splits of ../shared/data:
# timeus-1858 (123 pages, one untyped region per page without coordinates: lines only) and htromance-fr (74 pages of
# 17 manuscripts, SegmOnto-typed regions and lines), validating on their val splits (22 + 32 pages). iforal-sample
# and htromance-fr's test manuscripts stay unseen, to measure the model on hands and layouts it never saw.
# Resumable: run it again with resume=true.
#   DATA=../shared/data WORK=runs/base-layout scripts/train-base-layout.sh [KEY=VALUE ...]   (threads=1 ...)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${DATA:-../shared/data}")
WORK=${WORK:-runs/base-layout}
mkdir -p "$WORK"
for split in train val; do
  {
    awk -F'\t' -v s="$split" -v d="$DATA/timeus-1858" 'NR > 1 && $3 == s {print d "/" $1}' "$DATA/timeus-1858/splits.tsv"
    awk -F'\t' -v s="$split" -v d="$DATA/htromance-fr" 'NR > 1 && $3 == s {print d "/" $1}' "$DATA/htromance-fr/splits.tsv"
  } >"$WORK/$split.txt"
done
loghi-ft segtrain --config config/base-layout/train.yaml --train "$WORK/train.txt" --val "$WORK/val.txt" \
  --output "$WORK" "$@"

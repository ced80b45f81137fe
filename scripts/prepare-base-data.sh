#!/usr/bin/env bash
# Cuts the lines of every source of the many-hands base model (issue 15) with its fixed split:
# $WORK/lines/<source>/training_all_{train,val,test}.txt and prepare_report.json, then prints the line counts.
#   scripts/prepare-base-data.sh [SOURCE ...]   (default: all five; each setting below can be set in the environment)
set -euo pipefail
cd "$(dirname "$0")/.."

# the shared test data (see ../shared/data/README.md): split by their own splits.tsv
TIMEUS=${TIMEUS:-../shared/data/timeus-1858}
HTROMANCE=${HTROMANCE:-../shared/data/htromance-fr}
# eScriptorium ALTO from GitHub, each exported at one commit (git archive <commit>; images too large for the
# repository are missing and those pages are skipped); split by config/base-many-hands/splits/<source>.tsv
CREMMA17=${CREMMA17:-/work/data15/CREMMA-MSS-17}       # github.com/HTR-United/CREMMA-MSS-17 at 172906f
CREMMA18=${CREMMA18:-/work/data15/CREMMA-MSS-18}       # github.com/HTR-United/CREMMA-MSS-18 at e4a8914
FONDUE18=${FONDUE18:-/work/data15/FONDUE-FR-MSS-18}    # github.com/FoNDUE-HTR/FONDUE-FR-MSS-18 at e07c45a
WORK=${WORK:-runs/base-many-hands}                     # lines/<source>/ go here
WORKERS=${WORKERS:-1}                                  # processes cutting pages (prepare's --workers)

SPLITS=config/base-many-hands/splits
sources=("$@")
[[ ${#sources[@]} -gt 0 ]] || sources=(timeus-1858 htromance-fr CREMMA-MSS-17 CREMMA-MSS-18 FONDUE-FR-MSS-18)

# Paths in the split files are relative to the source's root; prepare takes them relative to the TSV, so the
# TSV given to it has them absolute.
absolute_split() {
  local root split out
  root=$(realpath -m "$1") split=$2 out=$WORK/splits/$(basename "$split")
  mkdir -p "$WORK/splits"
  awk -F'\t' -v OFS='\t' -v root="$root" 'NR > 1 {$1 = root "/" $1} {print}' "$split" > "$out"
  echo "$out"
}

prepare() {
  local name=$1 input=$2 split=$3
  [[ -d $input ]] || { echo "prepare-base-data: $input not found (set the path of $name at the top)" >&2; exit 1; }
  [[ -f $split ]] || { echo "prepare-base-data: $split not found" >&2; exit 1; }
  echo "prepare-base-data: $name from $input"
  loghi-ft prepare "$input" --output "$WORK/lines/$name" --split-file "$split" --workers "$WORKERS"
}

for name in "${sources[@]}"; do
  case $name in
    timeus-1858) prepare "$name" "$TIMEUS" "$TIMEUS/splits.tsv" ;;
    # data/ holds the PAGE pages; alto-original/ the same pages again as ALTO
    htromance-fr) prepare "$name" "$HTROMANCE/data" "$HTROMANCE/splits.tsv" ;;
    CREMMA-MSS-17) prepare "$name" "$CREMMA17/data" "$(absolute_split "$CREMMA17" "$SPLITS/$name.tsv")" ;;
    CREMMA-MSS-18) prepare "$name" "$CREMMA18/data" "$(absolute_split "$CREMMA18" "$SPLITS/$name.tsv")" ;;
    FONDUE-FR-MSS-18) prepare "$name" "$FONDUE18/data" "$(absolute_split "$FONDUE18" "$SPLITS/$name.tsv")" ;;
    *) echo "prepare-base-data: unknown source '$name'" >&2; exit 1 ;;
  esac
done

python3 - "$WORK/lines" "${sources[@]}" <<'EOF'
import json, sys
from pathlib import Path
print(f"{'source':18s} {'pages':>6s} {'used':>5s} {'skip':>5s} {'train':>6s} {'val':>5s} {'test':>5s} {'seconds':>8s}")
for name in sys.argv[2:]:
    r = json.loads((Path(sys.argv[1]) / name / "prepare_report.json").read_text(encoding="utf-8"))
    p, s = r["pages"], r["splits"]
    print(f"{name:18s} {p['found']:6d} {p['used']:5d} {p['skipped']:5d} {s['train']['lines']:6d} "
          f"{s['val']['lines']:5d} {s['test']['lines']:5d} {r['seconds']:8.1f}")
EOF

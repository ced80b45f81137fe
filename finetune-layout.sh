#!/usr/bin/env bash
# Fine-tune the layout model (the regions and lines it finds on a page) on your pages: set the values below, then
# run ./finetune-layout.sh. Your PAGE XML must have the lines (baselines or polygons) and, to learn them, regions.
# Any value can also be given as NAME=value arguments (./finetune-layout.sh epochs=20 GPU=0) or from the environment.
# Relative paths are taken from the folder you run the script in.
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run-common.sh" || exit 1

trainpages=samples/train            # PAGE XML folder(s) with their images to train on, space-separated
valpages=samples/val                # PAGE XML folder(s) with their images to validate on (they pick best_val/)
LAYOUTBASEMODEL=models/layout-base  # layout model folder to start from; empty = train a new model
recipe=                             # YAML file of segtrain options (size, crop, backbone: see loghi-ft segtrain --help);
                                    # the values below win over it; empty = none
GPU=-1                              # -1 = CPU; 0 = first GPU; 0,1 = several GPUs
epochs=30                           # passes over the training pages
batch_size=2                        # pages per step; lower it if the GPU runs out of memory
learning_rate=0.0005                # peak learning rate; a new model wants it higher (0.002)
resume=off                          # on = continue the run in outputdir/model_name where it stopped (after Ctrl+C)
model_name=layout                   # name of this run: its folder inside outputdir
outputdir=output                    # where the models (best_val/, last/), metrics and plots go
RUNNER=                             # docker, podman or local; empty = docker when it runs here, else a local .venv

settings_done "$@"

# page_folders NAME: the folders of setting NAME, absolute, into PATHS (mounted read-only); each must hold pages.
page_folders() {
  local dir
  need_paths "$1" dir ro
  for dir in "${PATHS[@]}"; do
    # a PAGE XML or ALTO file is told by its root element; pages may be symbolic links to the files
    find -L "$dir" -type f -iname '*.xml' -exec grep -qsE '<([[:alnum:]_.-]+:)?(PcGts|alto)[[:space:]>]' {} \; \
      -print -quit | grep -q . || die "$1: $dir holds no PAGE XML (or ALTO) file; give the folder(s) of your pages"
    # pages in a page/ subfolder name images in the folder above it
    [[ $(basename "$dir") == page ]] && mount_path ro "$(dirname "$dir")"
  done
  return 0
}

[[ $resume == on || $resume == off ]] || die "resume=$resume: use on or off"
page_folders trainpages
args=(--train "${PATHS[@]}")
page_folders valpages
args+=(--val "${PATHS[@]}")
if [[ -n $recipe ]]; then
  recipe_file=$(need_path recipe "$recipe" file) || exit
  mount_path ro "$(dirname "$recipe_file")"
  args+=(--config "$recipe_file")
fi
start="trains a new layout model"
if [[ -n $LAYOUTBASEMODEL ]]; then
  base=$(need_path LAYOUTBASEMODEL "$LAYOUTBASEMODEL" dir) || exit
  mount_path ro "$base"
  args+=(--base-model "$base")
  start="fine-tunes the layout model $base"
fi
run_folder
args+=(--output "$OUT" --model-name "$model_name" --gpu "$GPU_INSIDE")
announce "$start into $RUN_DIR"
[[ -n $epochs ]] && args+=(--epochs "$epochs")
[[ -n $batch_size ]] && args+=(--batch-size "$batch_size")
[[ -n $learning_rate ]] && args+=(--learning-rate "$learning_rate")
[[ $resume == on ]] && args+=(--resume)

run_loghi_ft segtrain "${args[@]}"
finish_training "$RUN_DIR" $? val_score

# best_val/'s row of metrics.csv (found by the step in its model.json) and, after a fine-tune, the base model's:
# row 0, measured before the first step
awk -F, -v best="$(json_number "$BEST_VAL/model.json" step)" '
  NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i
            printf "%-28s %-8s %-12s %s\n", "validation", "score", "baseline F1", "region mIoU"; next }
  function show(label) { printf "    %-24s %-8.4f %-12.4f %s\n", label, $col["val_score"], $col["val_baseline_f1"],
                                $col["val_region_miou"] == "" ? "none" : sprintf("%.4f", $col["val_region_miou"]) }
  $col["step"] == 0 && !base++ { show("base model") }
  $col["step"] == best { row = $0; epoch = $col["epoch"] }
  END { $0 = row; show("best_val (epoch " epoch ")") }' "$RUN_DIR/metrics.csv"
echo "$SCRIPT_NAME: done. best model: $BEST_VAL ($BEST_FIGURE); metrics and plots in $RUN_DIR"

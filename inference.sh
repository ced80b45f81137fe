#!/usr/bin/env bash
# Recognise the text lines of PAGE XML pages with a trained model: set the values below, then run ./inference.sh
# Any value can also be given as NAME=value arguments (./inference.sh inputpages=/data/scans GPU=0) or from the environment.
# Relative paths are taken from the folder you run the script in.
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run-common.sh" || exit 1

model=output/finetuned/best_val     # model folder to recognise with (a best_val/ from finetune.sh or train.sh)
inputpages=samples/test             # PAGE XML folder(s) with their images, space-separated (searched recursively)
outputdir=output/inference          # where the recognised pages go, mirroring the input folders
inplace=off                         # on = write the text into the input PAGE XML files themselves (outputdir unused)
GPU=-1                              # -1 = CPU; 0 = first GPU
batch_size=32                       # lines per step; lower it if the GPU runs out of memory
beam_width=1                        # 1 = best path (fastest); 5 to 10 = beam search, a little more accurate, slower
lm=                                 # text of the same kind (a text file, or a list file such as training_all_train.txt):
                                    # its character 6-gram guides the beam search (needs beam_width 5 to 10); empty = none
RUNNER=                             # docker, podman or local; empty = docker when it runs here, else a local .venv

settings_done "$@"

[[ $GPU != *,* ]] || die "GPU=$GPU: inference uses one GPU; run one inference.sh per GPU for more"
[[ $inplace == on || $inplace == off ]] || die "inplace=$inplace: use on or off"
model_dir=$(need_path model "$model" dir) || exit
mount_path ro "$model_dir"
mode=$([[ $inplace == on ]] && echo rw || echo ro)
need_paths inputpages dir "$mode"
inputs=("${PATHS[@]}")
# pages in a page/ subfolder name images in the folder above it
for dir in "${inputs[@]}"; do
  [[ $(basename "$dir") == page ]] && mount_path "$mode" "$(dirname "$dir")"
done
if [[ $inplace == on ]]; then
  where=(--in-place)
  target="back into the input pages"
else
  [[ -n $outputdir ]] || die "outputdir is empty: name a folder for the recognised pages, or set inplace=on"
  out=$(abspath "$outputdir")
  mkdir -p "$out" || die "cannot create $out"
  mount_path rw "$out"
  where=(--output "$out")
  target="into $out"
fi

lm_option=()
if [[ -n $lm ]]; then
  [[ $beam_width -gt 1 ]] || die "lm=$lm guides the beam search: set beam_width too (5 to 10)"
  lm_file=$(need_path lm "$lm" file) || exit
  mount_path ro "$(dirname "$lm_file")"
  lm_option=(--lm "$lm_file")
fi

announce "recognises ${inputs[*]} with $model_dir, writing $target"
run_loghi_ft infer --model "$model_dir" "${inputs[@]}" "${where[@]}" --batch-size "$batch_size" \
  --beam-width "$beam_width" "${lm_option[@]}" --gpu "$GPU_INSIDE"
status=$?
[[ -n $INTERRUPTED ]] && echo "$SCRIPT_NAME: stopped; the pages written so far are complete, a new run skips them."
exit "$status"

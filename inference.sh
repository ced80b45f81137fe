#!/usr/bin/env bash
# Recognise the text of pages with a trained model: set the values below, then run ./inference.sh
# Bare scans (jpg, png, tif) and PAGE XML without lines are first segmented with the layout model (layoutmodel).
# Any value can also be given as NAME=value arguments (./inference.sh inputpages=/data/scans GPU=0) or from the environment.
# Relative paths are taken from the folder you run the script in.
# Exit status: 0 every page and line done; 3 finished, but some pages or lines were skipped (each one is listed);
# 1 an error stopped it; 130 Ctrl+C.
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run-common.sh" || exit 1

model=output/finetuned/best_val     # model folder to recognise with (a best_val/ from finetune.sh or train.sh)
layoutmodel=models/layout-base     # layout model that finds regions and lines on bare images and on pages without
                                    # lines (or a best_val/ from finetune-layout.sh); empty = pages must have lines
redolayout=off                      # on = find the lines again on pages that have some (their lines are replaced)
inputpages=samples/test             # folder(s) of scans and/or PAGE XML, space-separated (searched recursively)
outputdir=output/inference          # where the recognised pages go, mirroring the input folders
inplace=off                         # on = write the text into the input PAGE XML files themselves (outputdir unused)
GPU=-1                              # -1 = CPU; 0 = first GPU
batch_size=32                       # lines per step; lower it if the GPU runs out of memory
beam_width=1                        # 1 = best path (fastest); 5 to 10 = beam search, a little more accurate, slower
lm=                                 # text of the same kind (a text file, or a list file such as training_all_train.txt):
                                    # its character 6-gram guides the beam search (needs beam_width 5 to 10); empty = none
text=off                            # on = also write each page's plain text beside it (3.xml -> 3.txt, lines in reading
                                    # order) and the whole folder's in all-pages.txt (each page after "=== <page> ===")
words=off                           # on = also write a Word element (outline, text, confidence) for every word
shard=1/1                           # K/N = take only the K-th of N shares of the pages. Several GPUs or machines need
                                    # one inference.sh per shard, not one per GPU over all pages (that reads every
                                    # page N times). Two GPUs, the same outputdir, then text=on once without shard
                                    # (every page is done, so it only writes the text):
                                    #   ./inference.sh GPU=0 shard=1/2 & ./inference.sh GPU=1 shard=2/2 & wait
RUNNER=                             # docker, podman or local; empty = docker when it runs here, else a local .venv

settings_done "$@"

[[ $GPU != *,* ]] || die "GPU=$GPU: inference uses one GPU; for more, run one inference.sh per shard (see shard)"
for name in inplace text words redolayout; do
  [[ ${!name} == on || ${!name} == off ]] || die "$name=${!name}: use on or off"
done
[[ $shard =~ ^([0-9]+)/([0-9]+)$ ]] && ((BASH_REMATCH[1] >= 1 && BASH_REMATCH[1] <= BASH_REMATCH[2])) ||
  die "shard=$shard: use K/N with 1 <= K <= N, e.g. 1/2 and 2/2 for two GPUs"
model_dir=$(need_path model "$model" dir) || exit
mount_path ro "$model_dir"
layout_option=()
if [[ -n $layoutmodel ]]; then
  layout_dir=$(need_path layoutmodel "$layoutmodel" dir) || exit
  mount_path ro "$layout_dir"
  layout_option=(--layout-model "$layout_dir")
  [[ $redolayout == on ]] && layout_option+=(--redo-layout)
fi
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
  text_folders=("${inputs[@]}")
else
  [[ -n $outputdir ]] || die "outputdir is empty: name a folder for the recognised pages, or set inplace=on"
  out=$(abspath "$outputdir")
  mkdir -p "$out" || die "cannot create $out"
  mount_path rw "$out"
  where=(--output "$out")
  target="into $out"
  text_folders=("$out")
fi

lm_option=()
if [[ -n $lm ]]; then
  [[ $beam_width -gt 1 ]] || die "lm=$lm guides the beam search: set beam_width too (5 to 10)"
  lm_file=$(need_path lm "$lm" file) || exit
  mount_path ro "$(dirname "$lm_file")"
  lm_option=(--lm "$lm_file")
fi

extra=(--shard "$shard")
[[ $text == on ]] && extra+=(--text)
[[ $words == on ]] && extra+=(--words)

announce "recognises ${inputs[*]} with $model_dir, writing $target"
run_loghi_ft infer --model "$model_dir" "${layout_option[@]}" "${inputs[@]}" "${where[@]}" --batch-size "$batch_size" \
  --beam-width "$beam_width" "${lm_option[@]}" "${extra[@]}" --gpu "$GPU_INSIDE"
status=$?
if [[ -n $INTERRUPTED ]]; then
  echo "$SCRIPT_NAME: stopped; the pages written so far are complete, a new run skips them."
  exit "$status"
fi
[[ $status == 0 || $status == "$PARTIAL_STATUS" ]] || exit "$status"
if [[ $text == on && $shard != 1/1 ]]; then
  echo "$SCRIPT_NAME: all-pages.txt is left to one run without shard, once every shard is done (./inference.sh text=on)"
elif [[ $text == on ]]; then
  for dir in "${text_folders[@]}"; do
    run_loghi_ft text "$dir" --output "$dir/all-pages.txt"
    text_status=$?
    [[ $text_status == 0 || $text_status == "$PARTIAL_STATUS" ]] || exit "$text_status"
    [[ $text_status == 0 ]] || status=$text_status
  done
fi
if [[ $status == 0 ]]; then
  echo "$SCRIPT_NAME: done: every page and line recognised, written $target"
else
  echo "$SCRIPT_NAME: done, but not everything: the pages or lines listed above were skipped (exit status $status)"
fi
exit "$status"

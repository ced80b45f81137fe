#!/usr/bin/env bash
# Fine-tune a handwriting model on your transcribed pages: set the values below, then run ./finetune.sh
# Any value can also be given as NAME=value arguments (./finetune.sh epochs=20 GPU=0) or from the environment.
# Relative paths are taken from the folder you run the script in.
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run-common.sh" || exit 1

trainpages=samples/train            # PAGE XML folder(s) to train on, space-separated; empty = use trainlist instead
valpages=samples/val                # PAGE XML folder(s) to validate on; empty = set aside a tenth of the trainpages
testpages=samples/test              # PAGE XML folder(s) never trained on, for the CER before and after; empty = skip
listdir=                            # with list files: the folder holding your line images and lists (Loghi's listdir)
trainlist=                          # with list files: training lines (image<TAB>text), space-separated if several
validationlist=                     # with list files: validation lines
HTRBASEMODEL=models/many-hands-small   # model folder to start from (model.json + model.safetensors)
charset_mode=union                  # new characters: union = add them; keep = skip lines that have them; replace = new output layer
freeze=                             # parts of the base model kept fixed: conv, rnn or conv,rnn; empty = train everything
GPU=-1                              # -1 = CPU; 0 = first GPU; 0,1 = several GPUs
epochs=15                           # passes over the training lines (15 demonstrates in minutes; real work: 20 to 50)
batch_size=16                       # lines per step; lower it if the GPU runs out of memory
learning_rate=0.0005                # peak learning rate; fine-tuning wants it lower than training from scratch
patience=10                         # stop after this many validations without a better CER; 0 = never
augment=on                          # on = distort training lines at random (better models); off = use them as they are
resume=off                          # on = continue the run in outputdir/model_name where it stopped (after Ctrl+C)
model_name=finetuned                # name of this run: its folder inside outputdir
outputdir=output                    # where the prepared lines, the models (best_val/, last/), metrics and plots go
RUNNER=                             # docker, podman or local; empty = docker when it runs here, else a local .venv

settings_done "$@"

run_folder
base=$(need_path HTRBASEMODEL "$HTRBASEMODEL" dir) || exit
mount_path ro "$base"
base_args=(--base-model "$base" --charset-mode "$charset_mode")
[[ -n $freeze ]] && base_args+=(--freeze "$freeze")
announce "fine-tunes $base into $RUN_DIR"

training_data "$RUN_DIR"
training_options
run_loghi_ft train "${TRAIN_ARGS[@]}" "${base_args[@]}"
finish_training "$RUN_DIR" $?

# the base model's validation CER: row 0 of metrics.csv, measured before the first step
base_val=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
                    $col["step"] == 0 { printf "%.2f%%", 100 * $col["val_cer"]; exit }' "$RUN_DIR/metrics.csv")
base_test="" tuned_test=""
if [[ -n $testpages ]]; then
  test_cer base "$base"
  base_test=$TEST_CER
  test_cer best_val "$BEST_VAL"
  tuned_test=$TEST_CER
fi
printf 'CER %-24s %-12s %s\n' "" validation "${testpages:+testpages (never trained on)}"
printf '    %-24s %-12s %s\n' "base model" "${base_val:-?}" "$base_test" "fine-tuned (best_val)" "$BEST_CER" "$tuned_test"
echo "$SCRIPT_NAME: done. best model: $BEST_VAL (validation CER $BEST_CER); metrics and plots in $RUN_DIR"

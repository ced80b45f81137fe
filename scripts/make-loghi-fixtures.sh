#!/usr/bin/env bash
# Regenerates tests/data/loghi/: small models trained by loghi-htr itself (its src/main.py) on real TIME US lines,
# and loghi-htr's own greedy readings of 20 held-out lines at batch size 1 and 8. See tests/data/loghi/README.md.
#   scripts/make-loghi-fixtures.sh [STEP ...]   (each setting below can be set in the environment)
# Steps, by default all in this order: lines lstm gru rgba infer legacy recommended. A model already trained in
# $WORK is not trained again. TensorFlow is needed only in LOGHI_PYTHON's environment, never in the project's.
set -euo pipefail
cd "$(dirname "$0")/.."

LOGHI_HTR=${LOGHI_HTR:-/work/loghi-htr}                   # github.com/knaw-huc/loghi-htr at c24c745 (Jan. 2026)
LOGHI_2023=${LOGHI_2023:-/work/loghi-env/loghi-htr-2023}  # the same repository at 18df7a5 (Oct. 2023, SavedModels)
LOGHI_PYTHON=${LOGHI_PYTHON:-/work/loghi-env/bin/python}  # Loghi's environment: see tests/data/loghi/README.md
WORK=${WORK:-/work/loghi-env/work}                        # cut lines, Loghi's runs and logs go here
TIMEUS=${TIMEUS:-../shared/data/timeus-1858}              # the shared TIME US pages and their splits.tsv
EPOCHS=${EPOCHS:-20}                                      # epochs from scratch
LEARNING_RATE=${LEARNING_RATE:-0.002}
MODELS=${MODELS:-lstm gru rgba}                           # the models the step infer copies and has Loghi read
OUT=tests/data/loghi
LINES=20                                                  # held-out lines Loghi reads for the comparison
export TF_CPP_MIN_LOG_LEVEL=2

# Loghi's recommended spec (src/model/management.py) with fewer filters and units, so that the model stays small
SPEC_LSTM="None,None,64,1 Cr3,3,16 Mp2,2,2,2 Bn Cr3,3,24 Bn Cr3,3,32 Mp2,2,2,2 Bn Cr3,3,32 Mp2,2,2,2 Bn Rc3 Bl48 D50 Bl48 D50 Fs92"
# the same convolutions, then a bidirectional GRU and a one-way LSTM. (Loghi's --replace_recurrent_layer would
# keep the trained convolutions, but fails on models that vgslify built: its new Activation layer takes a name
# that the model already holds, "activation".)
SPEC_GRU="None,None,64,1 Cr3,3,16 Mp2,2,2,2 Bn Cr3,3,24 Bn Cr3,3,32 Mp2,2,2,2 Bn Cr3,3,32 Mp2,2,2,2 Bn Rc3 Bg48,D20 Lfs48 D20 Fs92"
# four channels; average pooling, a tanh and a strided convolution, a sigmoid one, a pooling of stride 1 along
# the width; vgslify 0.14 builds Ce (elu) as a convolution without activation, Cl as one followed by a linear
# Activation. (Two first tries, with saturating activations early or a smaller learning rate, had not begun to
# read after 10 epochs.)
SPEC_RGBA="None,None,64,4 Cr3,3,16 Ap2,2,2,2 Bn Ct3,3,24 Bn Cr3,3,2,2,32 Bn Cr3,3,32 Mp2,2,2,2 Bn Cm1,1,32 Mp2,2,1,2 Ce1,1,32 Cl1,1,32 Rc3 Bl48 D50 Bl48 D50 Fs92"

quiet() { grep -v -i "warning\|oneDNN\|cpu_feature\|rebuild TensorFlow\|absl" || true; }

# 32 training pages, 2 validation pages and 2 test pages of TIME US, by its own split
step_lines() {
  local files=()
  while IFS= read -r page; do files+=("$TIMEUS/$page"); done < <(
    awk -F'\t' 'NR > 1 && $3 == "train" && n++ < 32 {print $1}' "$TIMEUS/splits.tsv"
    printf '%s\n' "PH 1858-68.xml" "PH 1858-91.xml" "PH 1858-63.xml" "PH 1858-52.xml")
  python -m loghi_ft prepare "${files[@]}" --output "$WORK/lines" --split-file "$TIMEUS/splits.tsv" --height 64 \
    --workers 0
}

# train NAME ARGS...: Loghi's src/main.py, run from the lines folder (its list files name paths relative to it)
train() {
  local name=$1
  shift
  if [[ -f $WORK/runs/$name/$name/best_val/model.keras ]]; then
    echo "make-loghi-fixtures: $name already trained"
    return
  fi
  echo "make-loghi-fixtures: training $name ($WORK/$name.log)"
  (cd "$WORK/lines" && nice -n 10 "$LOGHI_PYTHON" "$LOGHI_HTR/src/main.py" --gpu -1 --output "$WORK/runs/$name" \
    --model_name "$name" --train_list training_all_train.txt --validation_list training_all_val.txt \
    --batch_size 8 --learning_rate "$LEARNING_RATE" "$@") >"$WORK/$name.log" 2>&1 ||
    { tail -20 "$WORK/$name.log" >&2; exit 1; }
  grep -a "Validation CER" "$WORK/$name.log" | tail -1
}

step_lstm() { train lstm --model "$SPEC_LSTM" --epochs "$EPOCHS"; }
step_gru() { train gru --model "$SPEC_GRU" --epochs "$EPOCHS"; }
step_rgba() { train rgba --model "$SPEC_RGBA" --epochs "$EPOCHS"; }

# loghi_read NAME FOLDER: Loghi's greedy readings of the fixture lines with the model in FOLDER, at batch size 1
# and 8, into $OUT/NAME/results_batch<n>.txt. Loghi is given the paths alone: given a text, its loader pads a
# line narrower than 16 pixels per character of that text (src/data/loader.py, _ensure_width_for_ctc), so that
# its reading would depend on the transcription.
loghi_read() {
  local name=$1 folder batch
  folder=$(realpath "$2")
  cut -f1 "$OUT/lines.txt" >"$WORK/inference.txt"
  mkdir -p "$OUT/$name"
  for batch in 1 8; do
    echo "make-loghi-fixtures: Loghi reads the lines with $name, batch size $batch"
    (cd "$OUT" && nice -n 10 "$LOGHI_PYTHON" "$LOGHI_HTR/src/main.py" --gpu -1 --greedy --batch_size "$batch" \
      --model "$folder" --inference_list "$WORK/inference.txt" \
      --results_file "$name/results_batch$batch.txt" --output "$WORK/infer-$name") \
      >"$WORK/infer-$name-$batch.log" 2>&1 || { tail -20 "$WORK/infer-$name-$batch.log" >&2; exit 1; }
  done
}

# the first $LINES test lines, their images beside the list; each model folder exactly as Loghi wrote it, and
# Loghi's readings with it
step_infer() {
  mkdir -p "$OUT/lines"
  head -n "$LINES" "$WORK/lines/training_all_test.txt" | while IFS=$'\t' read -r path text; do
    local name
    name=$(basename "$(dirname "$path")" | tr ' ' '_')-$(basename "$path")
    cp "$WORK/lines/$path" "$OUT/lines/$name"
    printf 'lines/%s\t%s\n' "$name" "$text"
  done >"$OUT/lines.txt"
  local model
  for model in $MODELS; do
    mkdir -p "$OUT/$model/best_val"
    cp "$WORK/runs/$model/$model/best_val/"{model.keras,tokenizer.json,config.json} "$OUT/$model/best_val/"
    loghi_read "$model" "$OUT/$model/best_val"
  done
}

# A legacy model, as Loghi wrote best_val/ before October 2023 (tf.keras 2: a SavedModel and charlist.txt): the
# lstm model's trained weights in the graph that Loghi's VGSL generator of that time builds (loghi-htr at
# LOGHI_2023, run with tf_keras). Loghi's own converter (utils/convert-v2-to-v3) turns it into a Keras 2
# model.keras without optimizer state: that folder is kept, with Loghi's readings. The SavedModel (5 MB) is not
# kept: our import of it (with TensorFlow) is compared with Loghi's readings here, once.
step_legacy() {
  local run=$WORK/runs/legacy
  rm -rf "$run"
  mkdir -p "$run"
  (cd "$LOGHI_2023/src" && TF_USE_LEGACY_KERAS=1 "$LOGHI_PYTHON" - "$WORK/runs/lstm/lstm/best_val" \
    "$run/savedmodel" "$SPEC_LSTM" <<'EOF'
import json, sys
import keras
import tensorflow as tf
from vgsl_model_generator import VGSLModelGenerator
src, folder, spec = sys.argv[1:]
tokens = json.load(open(f"{src}/tokenizer.json", encoding="utf-8"))
chars = [tokens[str(i)] for i in range(2, len(tokens))]
# its input token was batch,height,width,channels
batch, width, height, channels = spec.split()[0].split(",")
layers = " ".join(spec.split()[1:]).replace("Fs92", f"Fs{len(chars) + 2}")
old = VGSLModelGenerator(f"{batch},{height},{width},{channels} {layers}", name="lstm").build()
old.set_weights(keras.saving.load_model(f"{src}/model.keras", compile=False).get_weights())
old.save(folder)
open(f"{folder}/charlist.txt", "w", encoding="utf-8").write("".join(chars))
print(f"legacy: TensorFlow {tf.__version__}, layers {[f'{l.name}:{type(l).__name__}' for l in old.layers]}")
EOF
  ) 2>&1 | quiet
  du -sh "$run/savedmodel"
  (cd "$LOGHI_HTR/utils/convert-v2-to-v3" && TF_USE_LEGACY_KERAS=1 "$LOGHI_PYTHON" convert.py \
    --savedmodel_dir "$run/savedmodel" --output_directory "$run/best_val") 2>&1 | quiet
  rm -rf "$OUT/legacy/best_val"
  mkdir -p "$OUT/legacy/best_val"
  cp "$run/best_val/"{model.keras,charlist.txt} "$OUT/legacy/best_val/"
  # Loghi converts such a file to Keras 3 in place (model.keras.old beside it): it reads a copy
  cp -r "$run/best_val" "$run/read"
  loghi_read legacy "$run/read"
  # the SavedModel through our import, with TensorFlow and tf_keras from Loghi's environment
  python - "$run/savedmodel" "$run/ours" "$(dirname "$(dirname "$LOGHI_PYTHON")")" <<'EOF' 2>&1 | grep "^legacy"
import glob, sys
from pathlib import Path
import numpy as np
folder, ours, env = sys.argv[1:]
sys.path.extend(glob.glob(f"{env}/lib/python3*/site-packages"))
sys.path.insert(0, "tests")
from test_loghi_import import loghi_readings, loghi_results
from loghi_ft.model.loghi import import_loghi
print(f"legacy SavedModel, imported: {import_loghi(folder, ours).spec}")
for batch in (1, 8):
    theirs, mine = loghi_results("legacy", batch), loghi_readings(Path(ours), batch)
    same = sum(mine[f][1] == theirs[f][1] for f in theirs)
    diff = np.mean([abs(mine[f][0] - theirs[f][0]) for f in theirs])
    print(f"legacy SavedModel, batch {batch}: same text as Loghi on {same} of {len(theirs)} lines, "
          f"mean confidence difference {diff:.1e}")
EOF
}

# Loghi's full recommended model (31 M parameters, too large to keep), built by Loghi's own code as for a new
# model (vgslify, then the output replaced for the lstm model's tokenizer), untrained: Loghi reads the fixture
# lines with it, and our import of it must read them the same way (compared here, once)
step_recommended() {
  local run=$WORK/runs/recommended tokenizer
  tokenizer=$(realpath "$OUT/lstm/best_val/tokenizer.json")
  rm -rf "$run"
  mkdir -p "$run/best_val"
  (cd "$LOGHI_HTR/src" && "$LOGHI_PYTHON" - "$run/best_val" "$tokenizer" <<'EOF'
import sys
import keras
from model.management import build_predefined_model, customize_model
from utils.text import Tokenizer
folder, tokenizer_file = sys.argv[1:]
keras.utils.set_random_seed(1)
tokenizer = Tokenizer.load_from_file(tokenizer_file)
config = {"model": "recommended", "model_name": "recommended", "replace_recurrent_layer": None,
          "replace_final_layer": False, "freeze_conv_layers": False, "freeze_recurrent_layers": False,
          "freeze_dense_layers": False, "use_float32": True, "gpu": "-1"}
model = customize_model(build_predefined_model(config, "recommended"), config, tokenizer)
model.save(f"{folder}/model.keras")
tokenizer.save_to_json(f"{folder}/tokenizer.json")
print(f"recommended: {model.count_params()} parameters")
EOF
  ) 2>&1 | quiet
  local results=$WORK/recommended_batch1.txt
  (cd "$OUT" && nice -n 10 "$LOGHI_PYTHON" "$LOGHI_HTR/src/main.py" --gpu -1 --greedy --batch_size 1 \
    --model "$run/best_val" --inference_list "$WORK/inference.txt" --results_file "$results" \
    --output "$WORK/infer-recommended") >"$WORK/infer-recommended.log" 2>&1
  python - "$run/best_val" "$results" "$run/ours" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from test_loghi_import import loghi_readings
from loghi_ft.model.loghi import import_loghi
folder, results, ours = sys.argv[1:]
print(f"recommended, imported: {import_loghi(folder, ours).spec}")
rows = (row.split("\t", 2) for row in Path(results).read_text(encoding="utf-8").splitlines())
theirs = {Path(p).name: (float(conf), text.replace("[UNK]", "\ufffd")) for p, conf, text in rows}
mine = loghi_readings(Path(ours), 1)
same = sum(mine[f][1] == theirs[f][1] for f in theirs)
# untrained, it is far from sure of anything: confidences are tiny, compared relative to Loghi's
diff = max(abs(mine[f][0] / theirs[f][0] - 1) for f in theirs if theirs[f][0] > 0)
print(f"recommended: same text as Loghi on {same} of {len(theirs)} lines ([UNK] as U+FFFD), confidences "
      f"within {diff:.1e} of Loghi's (relative, {sum(c > 0 for c, _ in theirs.values())} lines above 0)")
EOF
}

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(lines lstm gru rgba infer legacy recommended)
mkdir -p "$WORK"
for step in "${steps[@]}"; do
  "step_$step"
done
du -sh "$OUT"

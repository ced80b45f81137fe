# Plumbing shared by finetune.sh, train.sh, finetune-layout.sh and inference.sh; sourced by them, never run on its own.
# A script sources this file, sets its settings one per line, then calls `settings_done "$@"`.
# Settings can be overridden from the environment or as NAME=value arguments; the plumbing below
# picks a runner (docker, podman or a local .venv), mounts what the command needs and runs it.

LOGHI_FT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT_NAME=$(basename "${BASH_SOURCE[1]}")
# plumbing variables, read from the environment (or NAME=value) but not from the settings block
IMAGE=${IMAGE:-loghi-ft:$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$LOGHI_FT_ROOT/pyproject.toml")}
SHM_SIZE=${SHM_SIZE:-8g}                 # shared memory for the data loaders in a container
BUILD_ARGS=${BUILD_ARGS:-}               # extra `docker build` options when the image must be built
LOGHI_FT_PYTHON=${LOGHI_FT_PYTHON:-}     # a Python that already has loghi-ft installed: no .venv is made
PLUMBING="IMAGE SHM_SIZE BUILD_ARGS LOGHI_FT_PYTHON"
# loghi-ft's exit status for a run that finished but skipped pages or lines (PARTIAL in loghi_ft/errors.py)
PARTIAL_STATUS=$(sed -n 's/^PARTIAL = \([0-9]*\).*/\1/p' "$LOGHI_FT_ROOT/loghi_ft/errors.py")

# the names the calling script sets in its settings block (between the `source` line and settings_done)
SETTINGS=$(sed -n '/run-common\.sh/,/^settings_done/ s/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "${BASH_SOURCE[1]}" | tr '\n' ' ')
# environment values of those names are kept aside now and win over the block once it has run
_exported=" $(compgen -e | tr '\n' ' ') "
_from_env=""
for _name in $SETTINGS; do
  if [[ $_exported == *" $_name "* ]]; then
    printf -v "_env_$_name" '%s' "${!_name}"
    _from_env+=" $_name"
  fi
done

die() { echo "$SCRIPT_NAME: $*" >&2; exit 1; }

# Apply environment and NAME=value overrides; --help prints the settings block.
settings_done() {
  local name arg value
  for name in $_from_env; do
    value=_env_$name
    printf -v "$name" '%s' "${!value}"
    echo "$SCRIPT_NAME: $name=${!name} (from the environment)"
  done
  for arg in "$@"; do
    if [[ $arg == -h || $arg == --help ]]; then
      echo "usage: $SCRIPT_NAME [NAME=value ...]   (or set NAME in the environment); the settings:"
      sed -n '/run-common\.sh/,/^settings_done/ { /run-common\.sh/d; /^settings_done/d; p; }' "${BASH_SOURCE[1]}"
      exit 0
    fi
    [[ $arg =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] ||
      die "unexpected argument '$arg': give settings as NAME=value (see $SCRIPT_NAME --help)"
    name=${BASH_REMATCH[1]}
    [[ " $SETTINGS $PLUMBING " == *" $name "* ]] || die "unknown setting '$name'; known: $SETTINGS"
    printf -v "$name" '%s' "${BASH_REMATCH[2]}"
  done
  check_gpu
  choose_runner
}

# Absolute form of a path (relative paths are taken from the current folder); the path need not exist.
abspath() {
  case $1 in
    /*) realpath -m -- "$1" 2>/dev/null || printf '%s\n' "$1" ;;
    *) realpath -m -- "$PWD/$1" 2>/dev/null || printf '%s\n' "$PWD/$1" ;;
  esac
}

# need_path NAME VALUE dir|file: VALUE (the setting NAME) as an absolute path that must exist.
need_path() {
  local path
  [[ -n $2 ]] || die "$1 is empty: set it at the top of $SCRIPT_NAME or pass $1=..."
  path=$(abspath "$2")
  if [[ $3 == dir && ! -d $path ]]; then die "$1=$2: no such folder ($path)"; fi
  if [[ $3 == file && ! -f $path ]]; then die "$1=$2: no such file ($path)"; fi
  printf '%s\n' "$path"
}

# need_paths NAME dir|file ro|rw: the space-separated paths of setting NAME, absolute, into PATHS; mounted.
need_paths() {
  local words=() w path
  read -r -a words <<<"${!1}"
  [[ ${#words[@]} -gt 0 ]] || die "$1 is empty: set it at the top of $SCRIPT_NAME or pass $1=..."
  PATHS=()
  for w in "${words[@]}"; do
    path=$(need_path "$1" "$w" "$2") || exit 1
    PATHS+=("$path")
    [[ $2 == dir ]] && mount_path "$3" "$path"
  done
  return 0
}

check_gpu() {
  [[ $GPU =~ ^(-1|[0-9]+(,[0-9]+)*)$ ]] || die "GPU=$GPU: use -1 for the CPU, 0 for the first GPU, 0,1 for several"
  if [[ $GPU == -1 ]]; then DEVICE="the CPU"
  elif [[ $GPU == *,* ]]; then DEVICE="GPUs $GPU (one process per GPU through torchrun)"
  else DEVICE="GPU $GPU"; fi
}

choose_runner() {
  case ${RUNNER:-} in
    docker | podman) command -v "$RUNNER" >/dev/null || die "RUNNER=$RUNNER but '$RUNNER' is not installed" ;;
    local) ;;
    "") if command -v docker >/dev/null && docker info >/dev/null 2>&1; then RUNNER=docker; else RUNNER=local; fi ;;
    *) die "RUNNER=$RUNNER: use docker, podman, local, or leave it empty to choose automatically" ;;
  esac
  if [[ $RUNNER == local ]]; then
    # inside the process the ids are the host's; torchrun is started by `loghi-ft train` itself
    GPU_INSIDE=$GPU
  else
    # a container sees only the GPUs handed to it, numbered from 0
    local ids=() i n
    IFS=, read -r -a ids <<<"$GPU"
    GPU_INSIDE=-1
    if [[ $GPU != -1 ]]; then
      GPU_INSIDE=0
      for ((i = 1, n = ${#ids[@]}; i < n; i++)); do GPU_INSIDE+=",$i"; done
    fi
  fi
}

# --- what a container needs mounted: each folder at its own absolute path, read-only unless written
MOUNT_PATHS=()
MOUNT_MODES=()
mount_path() {  # mount_path ro|rw PATH
  local i
  for i in "${!MOUNT_PATHS[@]}"; do
    if [[ ${MOUNT_PATHS[i]} == "$2" ]]; then
      [[ $1 == rw ]] && MOUNT_MODES[i]=rw
      return
    fi
  done
  MOUNT_PATHS+=("$2")
  MOUNT_MODES+=("$1")
}

# Mount a list file's folder (writable: the line cache is built beside it) and the common
# folder of the absolute image paths it names.
mount_list() {
  local dir common
  dir=$(dirname "$1")
  mount_path rw "$dir"
  common=$(awk -F'\t' '!/^#/ && NF > 1 && $1 ~ /^\// {
      d = $1; sub(/\/[^\/]*$/, "", d)
      if (!n++) c = d; else while (index(d "/", c "/") != 1) sub(/\/[^\/]*$/, "", c)
    } END { if (n) print (c == "" ? "/" : c) }' "$1")
  [[ $common == / ]] && die "$1 names images all over the disk; keep them under one folder to run in a container, or use RUNNER=local"
  [[ -n $common ]] && mount_path rw "$common"
  return 0
}

# --- the local environment: .venv beside the scripts, made and installed into on first use
ensure_local_python() {
  if [[ -n $LOGHI_FT_PYTHON ]]; then
    PY=$LOGHI_FT_PYTHON
    "$PY" -c 'import loghi_ft' 2>/dev/null || die "LOGHI_FT_PYTHON=$PY cannot import loghi_ft"
    return
  fi
  local venv=$LOGHI_FT_ROOT/.venv want base
  want=$(cksum <"$LOGHI_FT_ROOT/pyproject.toml")
  PY=$venv/bin/python
  [[ -x $PY && $(cat "$venv/.installed" 2>/dev/null) == "$want" ]] && return
  base=$(command -v python3 || command -v python) || die "no python3 found: install Python 3.10 or newer (or Docker)"
  "$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$base is older than Python 3.10, which loghi-ft needs"
  echo "Setting up $venv (first use only: installs PyTorch and the other dependencies, a few minutes)"
  # system site-packages: a PyTorch already installed on this machine is reused instead of downloaded again
  "$base" -m venv --system-site-packages "$venv" || die "could not create $venv"
  "$PY" -m pip install --quiet --disable-pip-version-check -e "$LOGHI_FT_ROOT" ||
    die "installing loghi-ft into $venv failed (see the messages above)"
  echo "$want" >"$venv/.installed"
}

ensure_image() {
  "$RUNNER" image inspect "$IMAGE" >/dev/null 2>&1 && return
  echo "Building the $RUNNER image $IMAGE from $LOGHI_FT_ROOT (first use only: about 10 minutes)"
  # shellcheck disable=SC2086  # BUILD_ARGS holds several options
  "$RUNNER" build $BUILD_ARGS -t "$IMAGE" "$LOGHI_FT_ROOT" || die "building $IMAGE failed (see the messages above)"
}

# Say where and on what the commands run; set up the runner (image or .venv).
announce() {
  echo "$SCRIPT_NAME: $1"
  if [[ $RUNNER == local ]]; then
    ensure_local_python
    echo "  runs: locally, with $PY"
  else
    ensure_image
    echo "  runs: in the $RUNNER image $IMAGE"
  fi
  echo "  on:   $DEVICE"
}

# Run `loghi-ft ARGS...` with the chosen runner in its own process group; Ctrl+C (or SIGINT to this
# script) is passed to that group once, as a terminal would, so training stops cleanly and keeps best_val/.
run_loghi_ft() {
  local cmd=() ids=() i pid rc name
  if [[ $RUNNER == local ]]; then
    cmd=("$PY" -m loghi_ft "$@")
  else
    name=loghi-ft-$$-$RANDOM
    cmd=("$RUNNER" run --rm --init --name "$name" --shm-size "$SHM_SIZE" -e HOME=/tmp)
    # files written belong to the caller (rootless podman needs its user namespace kept for that)
    [[ $RUNNER == podman && $(id -u) != 0 ]] && cmd+=(--userns=keep-id)
    cmd+=(--user "$(id -u):$(id -g)")
    if [[ $GPU != -1 ]]; then
      if [[ $RUNNER == docker ]]; then
        # the quotes are part of the value: docker reads it as CSV, where 0,1 would be two fields
        cmd+=(--gpus "\"device=$GPU\"")
      else
        IFS=, read -r -a ids <<<"$GPU"
        for i in "${ids[@]}"; do cmd+=(--device "nvidia.com/gpu=$i"); done
      fi
    fi
    for i in "${!MOUNT_PATHS[@]}"; do
      cmd+=(-v "${MOUNT_PATHS[i]}:${MOUNT_PATHS[i]}:${MOUNT_MODES[i]}")
    done
    cmd+=("$IMAGE" "$@")
    CONTAINER=$name
  fi
  echo "==> loghi-ft $*"
  set -m
  "${cmd[@]}" &
  pid=$!
  set +m
  trap 'INTERRUPTED=1; kill -INT -- "-$pid" 2>/dev/null' INT
  trap 'INTERRUPTED=1; kill -TERM "$pid" 2>/dev/null' TERM
  while :; do
    wait "$pid"
    rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  trap - INT TERM
  CONTAINER=
  # a command that stopped cleanly on Ctrl+C may report success; the script stops all the same
  [[ -n $INTERRUPTED && $rc == 0 ]] && rc=130
  return "$rc"
}

# --- shared by the training scripts (training_data, training_options and test_cer: finetune.sh and train.sh)

# The training and validation lines into TRAIN_LISTS and VAL_LIST: cut from the PAGE XML folders
# (trainpages, valpages) into RUN_DIR/data first, or the list files (listdir, trainlist, validationlist).
training_data() {
  local run_dir=$1 pages=() f
  if [[ -n $trainpages ]]; then
    need_paths trainpages dir ro
    pages=("${PATHS[@]}")
    if [[ -n $valpages ]]; then
      need_paths valpages dir ro
      run_loghi_ft prepare "${pages[@]}" --output "$run_dir/data/train" --val-fraction 0 || exit
      run_loghi_ft prepare "${PATHS[@]}" --output "$run_dir/data/val" --val-fraction 0 || exit
      TRAIN_LISTS=("$run_dir/data/train/training_all.txt")
      VAL_LIST=$run_dir/data/val/training_all.txt
    else
      run_loghi_ft prepare "${pages[@]}" --output "$run_dir/data" || exit
      TRAIN_LISTS=("$run_dir/data/training_all_train.txt")
      VAL_LIST=$run_dir/data/training_all_val.txt
    fi
  else
    [[ -n $listdir ]] && mount_path rw "$(need_path listdir "$listdir" dir)"
    [[ -n $trainlist ]] || die "set trainpages (PAGE XML folders) or trainlist (list files)"
    need_paths trainlist file
    TRAIN_LISTS=("${PATHS[@]}")
    VAL_LIST=$(need_path validationlist "$validationlist" file) || exit
    for f in "${TRAIN_LISTS[@]}" "$VAL_LIST"; do mount_list "$f"; done
  fi
}

# The `loghi-ft train` options every training script sets, from its settings, into TRAIN_ARGS.
training_options() {
  [[ $augment == on || $augment == off ]] || die "augment=$augment: use on or off"
  [[ $resume == on || $resume == off ]] || die "resume=$resume: use on or off"
  TRAIN_ARGS=(--train-list "${TRAIN_LISTS[@]}" --val-list "$VAL_LIST" --output "$OUT" --model-name "$model_name"
    --gpu "$GPU_INSIDE")
  [[ -n $epochs ]] && TRAIN_ARGS+=(--epochs "$epochs")
  [[ -n $batch_size ]] && TRAIN_ARGS+=(--batch-size "$batch_size")
  [[ -n $learning_rate ]] && TRAIN_ARGS+=(--learning-rate "$learning_rate")
  [[ -n $patience ]] && TRAIN_ARGS+=(--patience "$patience")
  [[ $augment == off ]] && TRAIN_ARGS+=(--no-augment)
  [[ $resume == on ]] && TRAIN_ARGS+=(--resume)
  return 0
}

# The run's folder OUTPUTDIR/MODEL_NAME into RUN_DIR (OUT: outputdir, absolute); mounted writable.
run_folder() {
  [[ -n $model_name ]] || die "model_name is empty: name the run"
  OUT=$(abspath "$outputdir")
  RUN_DIR=$OUT/$model_name
  mkdir -p "$RUN_DIR" || die "cannot create $RUN_DIR"
  mount_path rw "$OUT"
}

# test_cer LABEL MODEL: the character error rate of MODEL on the testpages, into TEST_CER;
# eval's report goes to RUN_DIR/test_LABEL.json.
test_cer() {
  local json=$RUN_DIR/test_$1.json status
  need_paths testpages dir ro
  run_loghi_ft eval --model "$2" "${PATHS[@]}" --json "$json" && status=0 || status=$?
  # a partial evaluation (pages or lines it could not read, listed above) still scores the rest
  [[ $status == 0 || $status == "$PARTIAL_STATUS" ]] || exit "$status"
  TEST_CER=$(percent "$(json_number "$json" cer)")
  [[ $status == 0 ]] || TEST_CER+=" (partial)"
}

# The first number KEY holds in a JSON file (enough for model.json's val_cer and eval's overall cer).
json_number() {
  grep -o "\"$2\": *[-0-9.eE+]*" "$1" 2>/dev/null | head -n 1 | sed 's/.*: *//'
}

percent() { awk -v x="$1" 'BEGIN { printf "%.2f%%", 100 * x }'; }

# After `loghi-ft train` or `segtrain` (its exit status in $2): say where best_val/ is and how it did on validation;
# exit on failure. $3: that figure's key in model.json, val_cer (a recogniser's, the default) or val_score (a layout
# model's, 0 to 1). Sets BEST_VAL, BEST_FIGURE ("validation CER 4.20%") and, for val_cer, BEST_CER ("4.20%").
finish_training() {
  local best=$1/best_val key=${3:-val_cer} value=""
  [[ -f $best/model.json ]] && value=$(json_number "$best/model.json" "$key")
  if [[ $key == val_cer ]]; then
    BEST_FIGURE="validation CER $(percent "$value")"
  else
    BEST_FIGURE="validation ${key#val_} $(awk -v x="$value" 'BEGIN { printf "%.4f", x }')"
  fi
  if [[ $2 != 0 ]]; then
    if [[ -n $INTERRUPTED ]]; then echo "$SCRIPT_NAME: stopped."; else echo "$SCRIPT_NAME: training failed (exit status $2)."; fi
    [[ -n $value ]] && echo "The best model so far: $best ($BEST_FIGURE); resume=on continues the run."
    exit "$2"
  fi
  [[ -n $value ]] || die "training ended but left no model in $best"
  BEST_VAL=$best
  [[ $key == val_cer ]] && BEST_CER=$(percent "$value")
  return 0
}

# A container whose client was killed keeps running: stop it on the way out.
INTERRUPTED=
CONTAINER=
_stop_container() {
  [[ -n $CONTAINER ]] && "$RUNNER" container inspect "$CONTAINER" >/dev/null 2>&1 &&
    "$RUNNER" stop --time 30 "$CONTAINER" >/dev/null 2>&1
  return 0
}
trap _stop_container EXIT

"""finetune.sh, train.sh, finetune-layout.sh, inference.sh: settings from the file, the environment and NAME=value;
runners; Ctrl+C."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

from conftest import DATA, IFORAL, PAGE_XSD, ROOT
from test_infer import model  # noqa: F401  (the fixture: a small untrained model folder)

# a small, quick network: these tests are about the scripts, not the readings
SPEC = "None,None,32,1 Cr3,3,8 Mp2,2,2,2 Cr3,3,16 Mp2,2,2,2 Rc3 Bl32"
# (charter, page) pairs with few lines: 16 + 7 for training, 18 for validation, 25 for testing
TRAIN_PAGES = [("foral_de_gouveia_1217", "1"), ("foral_de_gouveia_1217", "3")]
VAL_PAGES = [("foral_de_linhares_1217", "1")]
TEST_PAGES = [("foral_de_folgosinho_1217", "1")]
# inference.sh on pages that have their lines: no layout model (nor its mount)
NO_LAYOUT = "layoutmodel="
# htromance-fr pages (manuscript folder, page) from its train and val splits; the names have spaces
HTROMANCE = DATA / "htromance-fr"
LAYOUT_TRAIN = [("bnf-reserve-8-ya3-27-(-4,-52)", f"RESERVE 8-YA3-27 (4,52)_f{n}") for n in (1, 2, 3)] + \
               [("bnf-français-19670", "Français 19670_f19")]
LAYOUT_VAL = [("bnf-français-15148", "Français 15148_f7")]
# a tiny layout network on small windows, at a rate that finds baselines after a few steps
LAYOUT_RECIPE = "size: 256\ncrop: 128\nbackbone: mobilenet_v3_small\nno_augment: true\nwarmup_steps: 0\nworkers: 0\n"

# a stand-in for the docker/podman client: records each call's arguments (one per line) in $FAKE_CALLS/N;
# `run` waits $FAKE_RUN_SECONDS and notes a SIGINT it receives, as a container's client forwards it
FAKE_CLIENT = """#!/usr/bin/env bash
n=$(ls "$FAKE_CALLS" | wc -l)
printf '%s\\n' "$@" > "$FAKE_CALLS/$n"
[[ $1 == run ]] || exit 0
trap 'echo INT > "$FAKE_CALLS/../signal"; kill $sleeper; exit 130' INT
sleep "${FAKE_RUN_SECONDS:-0}" & sleeper=$!
: > "$FAKE_CALLS/../running"  # the trap is set: a Ctrl+C from now on is recorded
wait $sleeper
"""


def copy_pages(pages: list[tuple[str, str]], dest: Path, source: Path = IFORAL) -> Path:
    for folder, page in pages:
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for ext in (".xml", ".jpg"):
            shutil.copy(source / folder / f"{page}{ext}", dest / folder / f"{page}{ext}")
    return dest


def script(name: str, *settings: str, env: dict | None = None, cwd: Path = ROOT, timeout: int = 600):
    """Run one of the scripts with NAME=value arguments; returns the finished process."""
    full_env = {**os.environ, "LOGHI_FT_PYTHON": sys.executable, "RUNNER": "local", **(env or {})}
    return subprocess.run([str(ROOT / name), *settings], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pages")
    return {"train": copy_pages(TRAIN_PAGES, root / "train"), "val": copy_pages(VAL_PAGES, root / "val"),
            "test": copy_pages(TEST_PAGES, root / "test")}


@pytest.fixture(scope="module")
def scratch_run(pages, tmp_path_factory) -> Path:
    """train.sh from a VGSL spec on a few real pages, in a local run: the run folder."""
    out = tmp_path_factory.mktemp("out")
    proc = script("train.sh", f"spec={SPEC}", f"trainpages={pages['train']}", f"valpages={pages['val']}",
                  "testpages=", "epochs=2", "batch_size=8", "model_name=scratch", f"outputdir={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "scratch"


def fake_client(tmp_path: Path, name: str) -> dict:
    """A PATH on which `name` is the recording stand-in; the environment to use it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / name).write_text(FAKE_CLIENT)
    (bin_dir / name).chmod(0o755)
    (tmp_path / "calls").mkdir()
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CALLS": str(tmp_path / "calls"), "RUNNER": name}


def runs(tmp_path: Path) -> list[list[str]]:
    """The recorded `run` calls, in order, each as its argument list."""
    calls = sorted((tmp_path / "calls").iterdir(), key=lambda p: int(p.name))
    return [args for args in (p.read_text().splitlines() for p in calls) if args[0] == "run"]


def option_values(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == option]


@pytest.mark.slow
def test_train_sh_trains_from_a_spec_and_reports_best_val(scratch_run):
    info = json.loads((scratch_run / "best_val" / "model.json").read_text())
    assert info["spec"].startswith("None,None,32,1 Cr3,3,8")
    assert 0.0 <= info["training"]["val_cer"] <= 1.0
    assert (scratch_run / "data" / "train" / "training_all.txt").is_file()


@pytest.mark.slow
def test_finetune_sh_takes_environment_and_arguments(scratch_run, pages, tmp_path):
    proc = script("finetune.sh", f"HTRBASEMODEL={scratch_run / 'best_val'}", f"trainpages={pages['train']}",
                  f"valpages={pages['val']}", f"testpages={pages['test']}", "model_name=tuned", "freeze=conv",
                  env={"epochs": "1", "batch_size": "8", "outputdir": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "finetune.sh: epochs=1 (from the environment)" in proc.stdout
    run_dir = tmp_path / "tuned"
    info = json.loads((run_dir / "best_val" / "model.json").read_text())
    cer = info["training"]["val_cer"]
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # row 0 is the base model; epochs=1 from the environment beat the file's 3
    assert [row["epoch"] for row in rows] == ["0", "1"]
    lines = proc.stdout.strip().splitlines()
    assert lines[-4].split() == ["CER", "validation", "testpages", "(never", "trained", "on)"]
    base_row = lines[-3].split()
    assert base_row[:3] == ["base", "model", f"{100 * float(rows[0]['val_cer']):.2f}%"] and base_row[3].endswith("%")
    tuned_row = lines[-2].split()
    assert tuned_row[:3] == ["fine-tuned", "(best_val)", f"{100 * cer:.2f}%"] and tuned_row[3].endswith("%")
    assert lines[-1] == (f"finetune.sh: done. best model: {run_dir / 'best_val'} "
                         f"(validation CER {100 * cer:.2f}%); metrics and plots in {run_dir}")


def test_unknown_setting_is_refused_with_the_known_ones(tmp_path):
    proc = script("finetune.sh", "epoch=3", f"outputdir={tmp_path}")
    assert proc.returncode == 1
    assert "unknown setting 'epoch'" in proc.stderr and "epochs" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_help_prints_the_settings_block():
    proc = script("inference.sh", "--help")
    assert proc.returncode == 0
    assert "beam_width=1" in proc.stdout and "settings_done" not in proc.stdout


def test_missing_folder_is_named(tmp_path):
    proc = script("inference.sh", f"model={tmp_path / 'nope'}", f"outputdir={tmp_path}")
    assert proc.returncode == 1
    assert f"model={tmp_path / 'nope'}: no such folder" in proc.stderr


def test_cpu_run_in_docker_passes_no_gpus_and_mounts_only_what_it_needs(pages, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    out = tmp_path / "recognised"
    proc = script("inference.sh", f"model={model}", NO_LAYOUT, f"inputpages={pages['test']}", f"outputdir={out}",
                  "GPU=-1", env=fake_client(tmp_path, "docker"))
    assert proc.returncode == 0, proc.stderr
    [args] = runs(tmp_path)
    assert "--gpus" not in args and not any(a.startswith("nvidia.com/gpu") for a in args)
    assert sorted(option_values(args, "-v")) == sorted([f"{model}:{model}:ro", f"{pages['test']}:{pages['test']}:ro",
                                                        f"{out}:{out}:rw"])
    assert option_values(args, "--user") == [f"{os.getuid()}:{os.getgid()}"]
    assert "--init" in args
    assert option_values(args, "--gpu") == ["-1"]


def test_inference_hands_a_language_model_text_to_the_beam_search(pages, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    text = tmp_path / "texts" / "registers.txt"
    text.parent.mkdir()
    text.write_text("Du dit jour huit Janvier\n", encoding="utf-8")
    out = tmp_path / "recognised"
    common = [f"model={model}", NO_LAYOUT, f"inputpages={pages['test']}", f"outputdir={out}", f"lm={text}"]
    env = fake_client(tmp_path, "docker")
    proc = script("inference.sh", *common, env=env)
    assert proc.returncode == 1 and "set beam_width too" in proc.stderr  # greedy decoding cannot use it
    proc = script("inference.sh", *common, "beam_width=10", env=env)
    assert proc.returncode == 0, proc.stderr
    [args] = runs(tmp_path)
    assert option_values(args, "--lm") == [str(text)] and option_values(args, "--beam-width") == ["10"]
    assert f"{text.parent}:{text.parent}:ro" in option_values(args, "-v")


def test_inference_in_a_container_mounts_the_layout_model_and_passes_redolayout(pages, tmp_path):
    model, layout = tmp_path / "model", tmp_path / "layout"
    model.mkdir()
    layout.mkdir()
    env = fake_client(tmp_path, "docker")
    proc = script("inference.sh", f"model={model}", f"layoutmodel={layout}", "redolayout=on",
                  f"inputpages={pages['test']}", f"outputdir={tmp_path / 'out'}", env=env)
    assert proc.returncode == 0, proc.stderr
    [args] = runs(tmp_path)
    assert option_values(args, "--layout-model") == [str(layout)] and "--redo-layout" in args
    assert f"{layout}:{layout}:ro" in option_values(args, "-v")
    proc = script("inference.sh", f"model={model}", f"layoutmodel={tmp_path / 'nope'}", f"inputpages={pages['test']}",
                  f"outputdir={tmp_path / 'out'}", env=env)
    assert proc.returncode == 1 and f"layoutmodel={tmp_path / 'nope'}: no such folder" in proc.stderr
    assert len(runs(tmp_path)) == 1


@pytest.mark.slow
def test_inference_sh_shards_words_and_text(model, tmp_path):  # noqa: F811
    source = copy_pages(TRAIN_PAGES + VAL_PAGES + TEST_PAGES, tmp_path / "in")
    out = tmp_path / "out"
    common = [f"model={model}", NO_LAYOUT, f"inputpages={source}", f"outputdir={out}", "text=on"]
    done = []
    for k in (1, 2):
        before = set(out.rglob("*.xml"))
        proc = script("inference.sh", *common, "words=on", f"shard={k}/2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "--shard" in proc.stdout and f"{k}/2" in proc.stdout
        assert "all-pages.txt is left to one run without shard" in proc.stdout
        done.append(set(out.rglob("*.xml")) - before)
    assert done[0] and done[1] and not done[0] & done[1]
    pages = sorted(done[0] | done[1])
    assert [p.relative_to(out) for p in pages] == sorted(p.relative_to(source) for p in source.rglob("*.xml"))
    for xml in pages:
        assert "<Word " in xml.read_text(encoding="utf-8")
        assert xml.with_suffix(".txt").is_file()
    assert not (out / "all-pages.txt").exists()
    # once every shard is done, one run without shard reads nothing again and writes the folder's text
    proc = script("inference.sh", *common)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 pages, 0 lines recognised" in proc.stdout and f"{len(pages)} already done by this model" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"inference.sh: done: every page and line recognised, written into {out}"
    expected = "".join(f"=== {xml.relative_to(out).as_posix()} ===\n" + xml.with_suffix(".txt").read_text("utf-8")
                       for xml in pages)
    assert (out / "all-pages.txt").read_text(encoding="utf-8") == expected


def test_inference_sh_passes_the_partial_status_through(model, tmp_path):  # noqa: F811
    source = copy_pages(TEST_PAGES, tmp_path / "in")
    lost = source / "lost"
    lost.mkdir()
    shutil.copy(IFORAL / "foral_de_gouveia_1217" / "3.xml", lost / "3.xml")  # its image is not there
    proc = script("inference.sh", f"model={model}", NO_LAYOUT, f"inputpages={source}", f"outputdir={tmp_path / 'out'}")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"{lost / '3.xml'}" in proc.stderr and "image" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == ("inference.sh: done, but not everything: the pages or lines listed "
                                                    "above were skipped (exit status 3)")
    assert (tmp_path / "out" / TEST_PAGES[0][0] / f"{TEST_PAGES[0][1]}.xml").is_file()


def test_finetune_in_a_container_on_gpus_hands_over_the_devices(pages, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    env = fake_client(tmp_path, "docker")
    proc = script("finetune.sh", f"HTRBASEMODEL={base}", f"trainpages={pages['train']}", f"valpages={pages['val']}",
                  "testpages=", "GPU=2,3", f"outputdir={tmp_path / 'out'}", env=env)
    # the stand-in trains nothing, so the script ends saying so after prepare, prepare, train
    assert proc.returncode == 1 and "left no model" in proc.stderr
    prepare_train, prepare_val, train = runs(tmp_path)
    assert option_values(train, "--gpus") == ['"device=2,3"']  # quoted, or docker splits it at the comma
    assert option_values(train, "--gpu") == ["0,1"]  # the container numbers its two GPUs from 0
    assert option_values(prepare_train, "--gpus") == ['"device=2,3"']
    assert f"{pages['train']}:{pages['train']}:ro" in option_values(train, "-v")
    assert option_values(train, "--base-model") == [str(base)]

    cpu = tmp_path / "cpu"
    cpu.mkdir()
    env = fake_client(cpu, "podman")
    script("finetune.sh", f"HTRBASEMODEL={base}", f"trainpages={pages['train']}", f"valpages={pages['val']}",
           "testpages=", "GPU=-1", f"outputdir={tmp_path / 'out'}", env=env)
    assert all("--gpus" not in args and "--device" not in args for args in runs(cpu))
    assert len(runs(cpu)) == 3


def default_interrupt() -> None:
    """In the child before exec: Ctrl+C as a terminal delivers it. A shell started with SIGINT ignored can never trap
    it, and the full suite's process has been seen to pass SIGINT on ignored (the test that leaves it so is unknown)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted_in_a_container(name: str, settings: list[str], tmp_path: Path) -> tuple[int, str, str]:
    """Run a script with the docker stand-in and press Ctrl+C once its first command runs: status, stdout, stderr."""
    env = {**os.environ, "LOGHI_FT_PYTHON": sys.executable, **fake_client(tmp_path, "docker"), "FAKE_RUN_SECONDS": "30"}
    proc = subprocess.Popen([str(ROOT / name), *settings], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=default_interrupt,
                            text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "running").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=90)  # a loaded machine (a training beside the tests) took more than 20 s
    assert (tmp_path / "signal").read_text().strip() == "INT"
    return proc.returncode, out, err


def test_ctrl_c_reaches_the_container_client_and_the_script_stops(pages, tmp_path):
    status, out, err = interrupted_in_a_container(
        "finetune.sh", [f"HTRBASEMODEL={tmp_path}", f"trainpages={pages['train']}", f"valpages={pages['val']}",
                        f"outputdir={tmp_path / 'out'}"], tmp_path)
    assert status == 130, out + err
    assert len(runs(tmp_path)) == 1  # stopped during the first command; nothing after it started


@pytest.mark.slow
def test_ctrl_c_stops_training_and_keeps_best_val(scratch_run, pages, tmp_path):
    env = {**os.environ, "LOGHI_FT_PYTHON": sys.executable, "RUNNER": "local"}
    proc = subprocess.Popen([str(ROOT / "finetune.sh"), f"HTRBASEMODEL={scratch_run / 'best_val'}",
                             f"trainpages={pages['train']}", f"valpages={pages['val']}", "testpages=",
                             "epochs=500", "batch_size=8", "patience=0", f"outputdir={tmp_path}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_interrupt)
    best = tmp_path / "finetuned" / "best_val"
    deadline = time.monotonic() + 300
    while not (best / "model.json").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "finetune.sh: stopped." in out
    assert f"The best model so far: {best} (validation CER" in out
    assert (best / "model.safetensors").is_file() and (tmp_path / "finetuned" / "last" / "model.json").is_file()
    assert "done." not in out


def test_list_files_mount_their_folder_and_the_folder_of_their_images(tmp_path):
    lists, images = tmp_path / "lists", tmp_path / "images"
    for page in ("p1", "p2"):
        (images / page).mkdir(parents=True)
    lists.mkdir()
    (lists / "train.txt").write_text(f"# Loghi list\n{images / 'p1' / 'l1.png'}\tfoo\n{images / 'p2' / 'l2.png'}\tbar\n")
    (lists / "val.txt").write_text("relative/l3.png\tbaz\n")
    env = fake_client(tmp_path, "docker")
    script("finetune.sh", f"HTRBASEMODEL={tmp_path}", "trainpages=", f"listdir={lists}",
           f"trainlist={lists / 'train.txt'}", f"validationlist={lists / 'val.txt'}", f"outputdir={tmp_path / 'out'}",
           env=env)
    [train] = runs(tmp_path)
    assert sorted(option_values(train, "-v")) == sorted([f"{tmp_path}:{tmp_path}:ro", f"{tmp_path / 'out'}:{tmp_path / 'out'}:rw",
                                                         f"{lists}:{lists}:rw", f"{images}:{images}:rw"])
    assert option_values(train, "--train-list") == [str(lists / "train.txt")]
    assert option_values(train, "--val-list") == [str(lists / "val.txt")]


def split_of(folder: str, page: str) -> str:
    """The split htromance-fr's splits.tsv gives a page."""
    with open(HTROMANCE / "splits.tsv", newline="", encoding="utf-8") as f:
        return next(row["split"] for row in csv.DictReader(f, delimiter="\t")
                    if row["xml"] == f"data/fr/{folder}/{page}.xml")


@pytest.fixture(scope="module")
def layout_pages(tmp_path_factory) -> dict[str, Path]:
    assert {split_of(*p) for p in LAYOUT_TRAIN} == {"train"} and {split_of(*p) for p in LAYOUT_VAL} == {"val"}
    root = tmp_path_factory.mktemp("layout")  # no space: trainpages are space-separated
    recipe = root / "tiny layout.yaml"
    recipe.write_text(LAYOUT_RECIPE)
    return {"train": copy_pages(LAYOUT_TRAIN, root / "train", HTROMANCE / "data" / "fr"),
            "val": copy_pages(LAYOUT_VAL, root / "val", HTROMANCE / "data" / "fr"), "recipe": recipe}


def printed_figures(stdout: str) -> dict[str, list[float]]:
    """finetune-layout.sh's closing table: row label -> score, baseline F1, region mIoU."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["validation", "score", "baseline", "F1",
                                                                      "region", "mIoU"])
    rows = {}
    for line in lines[start + 1:-1]:
        words = line.rsplit(maxsplit=3)
        rows[words[0].strip()] = [float(w) for w in words[1:]]
    return rows


def csv_figures(row: dict) -> list[float]:
    return [round(float(row[k]), 4) for k in ("val_score", "val_baseline_f1", "val_region_miou")]


@pytest.fixture(scope="module")
def layout_run(layout_pages, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """finetune-layout.sh training a new tiny layout model on htromance pages, locally: the run and its folder."""
    out = tmp_path_factory.mktemp("layout out")
    proc = script("finetune-layout.sh", "LAYOUTBASEMODEL=", f"trainpages={layout_pages['train']}",
                  f"valpages={layout_pages['val']}", f"recipe={layout_pages['recipe']}", "epochs=4", "batch_size=1",
                  "learning_rate=0.01", "model_name=new layout", f"outputdir={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, out / "new layout"


@pytest.mark.slow
def test_finetune_layout_sh_trains_a_new_layout_model_and_prints_its_figures(layout_run):
    proc, run_dir = layout_run
    info = json.loads((run_dir / "best_val" / "model.json").read_text())
    assert info["format"] == "loghi-ft-layout-model"
    assert info["size"] == 256 and info["backbone"] == "mobilenet_v3_small"  # from the recipe
    assert {"MainZone", "NumberingZone"} <= set(info["region_types"])
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4"]  # a new model: no row 0
    [best] = [row for row in rows if int(row["step"]) == info["training"]["step"]]
    assert float(best["val_score"]) == max(float(row["val_score"]) for row in rows)
    assert float(best["val_baseline_f1"]) > 0
    assert printed_figures(proc.stdout) == {f"best_val (epoch {best['epoch']})": csv_figures(best)}
    assert proc.stdout.splitlines()[-1] == (f"finetune-layout.sh: done. best model: {run_dir / 'best_val'} "
                                            f"(validation score {float(best['val_score']):.4f}); metrics and plots "
                                            f"in {run_dir}")


@pytest.mark.slow
def test_finetune_layout_sh_fine_tunes_a_base_and_shows_it_beside_best_val(layout_run, layout_pages, tmp_path):
    base = layout_run[1] / "best_val"
    proc = script("finetune-layout.sh", f"LAYOUTBASEMODEL={base}", f"trainpages={layout_pages['train']}",
                  f"valpages={layout_pages['val']}", "epochs=1", "batch_size=2", f"outputdir={tmp_path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"fine-tunes the layout model {base}" in proc.stdout
    run_dir = tmp_path / "layout"
    info = json.loads((run_dir / "best_val" / "model.json").read_text())
    assert info["size"] == 256 and info["training"]["base_model"] == str(base)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # row 0 is the base model, measured before the first step: the score it was kept for
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert float(rows[0]["val_score"]) == json.loads((base / "model.json").read_text())["training"]["val_score"]
    best = max(rows, key=lambda row: float(row["val_score"]))
    assert printed_figures(proc.stdout) == {"base model": csv_figures(rows[0]),
                                            f"best_val (epoch {best['epoch']})": csv_figures(best)}


@pytest.mark.slow
def test_inference_sh_segments_a_bare_image_with_the_trained_layout_model(layout_run, layout_pages, tmp_path):
    folder, page = LAYOUT_VAL[0]
    bare = tmp_path / "scans"
    bare.mkdir()
    shutil.copy(layout_pages["val"] / folder / f"{page}.jpg", bare / f"{page}.jpg")
    out = tmp_path / "recognised"
    proc = script("inference.sh", f"model={ROOT / 'models' / 'timeus-1858-small'}",
                  f"layoutmodel={layout_run[1] / 'best_val'}", f"inputpages={bare}", f"outputdir={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p.name for p in out.iterdir()] == [f"{page}.xml"]
    tree = etree.parse(str(out / f"{page}.xml"))
    assert etree.XMLSchema(etree.parse(str(PAGE_XSD))).validate(tree)
    ns = {"pc": tree.getroot().nsmap[None]}
    # the new page names its image relative to where it lies
    assert (out / tree.find("pc:Page", ns).get("imageFilename")).resolve() == (bare / f"{page}.jpg").resolve()
    lines = tree.findall(".//pc:TextLine", ns)
    assert lines and all(line.find("pc:Coords", ns) is not None and line.find("pc:Baseline", ns) is not None
                         for line in lines)
    texts = [line.findtext("pc:TextEquiv/pc:Unicode", namespaces=ns) for line in lines]
    assert None not in texts and any(texts)


def test_finetune_layout_sh_refuses_missing_folders_and_folders_without_pages_before_it_starts(layout_pages, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(layout_pages["val"] / LAYOUT_VAL[0][0] / f"{LAYOUT_VAL[0][1]}.jpg", scans / "1.jpg")
    (scans / "notes.xml").write_text("<notes><page>1</page></notes>")
    out = tmp_path / "out"
    common = ["LAYOUTBASEMODEL=", f"outputdir={out}"]
    proc = script("finetune-layout.sh", *common, f"trainpages={scans}", f"valpages={layout_pages['val']}")
    assert proc.returncode == 1
    assert f"trainpages: {scans} holds no PAGE XML (or ALTO) file" in proc.stderr
    proc = script("finetune-layout.sh", *common, f"trainpages={layout_pages['train']}", f"valpages={tmp_path / 'nope'}")
    assert proc.returncode == 1
    assert f"valpages={tmp_path / 'nope'}: no such folder" in proc.stderr
    proc = script("finetune-layout.sh", *common, f"trainpages={layout_pages['train']}", "valpages=")
    assert proc.returncode == 1 and "valpages is empty" in proc.stderr
    linked = tmp_path / "linked"  # pages as symbolic links to the files pass the check: the next setting fails
    linked.mkdir()
    for page in layout_pages["train"].rglob("*"):
        if page.is_file():
            (linked / page.name).symlink_to(page)
    proc = script("finetune-layout.sh", *common, f"trainpages={linked}", f"valpages={scans}")
    assert proc.returncode == 1 and f"valpages: {scans} holds no PAGE XML" in proc.stderr
    proc = script("finetune-layout.sh", f"LAYOUTBASEMODEL={tmp_path / 'nope'}", f"outputdir={out}",
                  f"trainpages={layout_pages['train']}", f"valpages={layout_pages['val']}")
    assert proc.returncode == 1
    assert f"LAYOUTBASEMODEL={tmp_path / 'nope'}: no such folder" in proc.stderr
    assert not out.exists()  # nothing made before the settings were found sound


def test_finetune_layout_in_a_container_mounts_the_pages_and_hands_over_the_gpu(layout_pages, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    out = tmp_path / "out"
    env = fake_client(tmp_path, "docker")
    proc = script("finetune-layout.sh", f"LAYOUTBASEMODEL={base}", f"trainpages={layout_pages['train']}",
                  f"valpages={layout_pages['val']}", f"recipe={layout_pages['recipe']}", "GPU=1", "resume=on",
                  "epochs=7", "model_name=letters", f"outputdir={out}", env=env)
    # the stand-in trains nothing, so the script ends saying so after its one command
    assert proc.returncode == 1 and "left no model" in proc.stderr
    [args] = runs(tmp_path)
    assert args[args.index("segtrain") - 1].startswith("loghi-ft:")  # the image, then the command
    assert option_values(args, "--gpus") == ['"device=1"'] and option_values(args, "--gpu") == ["0"]
    recipe = layout_pages["recipe"]
    assert sorted(option_values(args, "-v")) == sorted(
        [f"{layout_pages['train']}:{layout_pages['train']}:ro", f"{layout_pages['val']}:{layout_pages['val']}:ro",
         f"{base}:{base}:ro", f"{recipe.parent}:{recipe.parent}:ro", f"{out}:{out}:rw"])
    assert option_values(args, "--base-model") == [str(base)] and option_values(args, "--config") == [str(recipe)]
    assert option_values(args, "--epochs") == ["7"] and option_values(args, "--model-name") == ["letters"]
    assert "--resume" in args


def test_ctrl_c_during_layout_training_names_the_best_model_so_far(layout_pages, tmp_path):
    out = tmp_path / "out"
    best = out / "layout" / "best_val"
    best.mkdir(parents=True)
    info = {"format": "loghi-ft-layout-model", "training": {"val_score": 0.61234}}
    (best / "model.json").write_text(json.dumps(info))
    status, stdout, stderr = interrupted_in_a_container(
        "finetune-layout.sh", ["LAYOUTBASEMODEL=", f"trainpages={layout_pages['train']}",
                               f"valpages={layout_pages['val']}", f"outputdir={out}"], tmp_path)
    assert status == 130, stdout + stderr
    assert "finetune-layout.sh: stopped." in stdout
    assert f"The best model so far: {best} (validation score 0.6123); resume=on continues the run." in stdout

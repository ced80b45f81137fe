import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, TIMEUS
from loghi_ft.cli import main
from loghi_ft.pages.listfile import read_list, write_list

# a tiny model on 32-pixel lines: these tests are about the mechanics (and the overfit test about learning at all)
TINY = "None,None,32,1 Cr3,3,16 Bn Mp2,2,2,2 Cr3,3,32 Bn Mp2,2,2,2 Rc3 Bl64 D10"
QUICK = ["--threads", "1", "--workers", "0", "--no-augment", "--warmup-steps", "5"]


@pytest.fixture(scope="session")
def lines(tmp_path_factory) -> Path:
    """Real timeus-1858 lines cut by `prepare`: 12 training pages, 3 validation pages, with list files."""
    from loghi_ft.pages.prepare import prepare

    rows = list(csv.DictReader(open(TIMEUS / "splits.tsv", encoding="utf-8"), delimiter="\t"))
    pages = [TIMEUS / r["xml"] for r in rows if r["split"] == "train"][:12]
    pages += [TIMEUS / r["xml"] for r in rows if r["split"] == "val"][:3]
    out = tmp_path_factory.mktemp("lines")
    prepare(pages, out, split_file=TIMEUS / "splits.tsv", workers=2, progress=False)
    return out


def subset(lines: Path, split: str, name: str, pick) -> Path:
    """A list file of some of the prepared lines."""
    samples = read_list(lines / f"training_all_{split}.txt")
    path = lines / f"{name}.txt"
    write_list(path, pick(samples))
    return path


def train(tmp: Path, name: str, *options: str) -> int:
    return main(["train", "--output", str(tmp), "--model-name", name, *options])


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def read_lines(list_file: Path, height: int) -> tuple[list[np.ndarray], list[str]]:
    from loghi_ft.pages.cache import ensure_cache
    cache = ensure_cache(list_file, height)
    return [cache[i][0] for i in range(len(cache))], list(cache.texts)


def recognise(folder: Path, strips: list[np.ndarray]) -> list[str]:
    from loghi_ft.model.codec import Codec
    from loghi_ft.model.decode import Decoder
    from loghi_ft.model.folder import load_model
    from loghi_ft.model.pixels import preprocess
    model, info = load_model(folder)
    x, widths = preprocess(strips, info)
    with torch.no_grad():
        logits = model(x)
    return [d.text for d in Decoder(Codec(info.charset))(logits, model.output_lengths(widths))]


@pytest.fixture(scope="session")
def handful(lines, tmp_path_factory) -> Path:
    """A tiny model that has learnt 8 short lines by heart (the base for the fine-tuning tests)."""
    def pick(samples):
        return [s for s in samples if 15 <= len(s.text) <= 30][:8]
    few = subset(lines, "train", "few", pick)
    often = subset(lines, "train", "often", lambda s: pick(s) * 10)
    out = tmp_path_factory.mktemp("handful")
    # stops early: three validations after reaching its best (0%, which cannot improve)
    rc = train(out, "few", "--train-list", str(often), "--val-list", str(few), "--spec", TINY, "--epochs", "40",
               "--batch-size", "8", "--learning-rate", "5e-3", "--patience", "3", *QUICK)
    assert rc == 0
    return out / "few"


@pytest.mark.slow
def test_a_model_overfits_a_handful_of_lines(handful):
    info = json.loads((handful / "best_val" / "model.json").read_text(encoding="utf-8"))
    assert info["training"]["val_cer"] < 0.02
    rows = list(csv.DictReader(open(handful / "metrics.csv", encoding="utf-8")))
    assert float(rows[0]["val_cer"]) > 0.9
    assert len(rows) < 40  # early stopping
    assert "early stopping" in (handful / "train.log").read_text(encoding="utf-8")
    assert (handful / "loss.png").stat().st_size > 1000 and (handful / "cer.png").stat().st_size > 1000


@pytest.mark.slow
def test_fine_tuning_with_new_characters_keeps_the_trained_rows_and_readings(handful, lines, tmp_path):
    base = handful / "best_val"
    base_info = json.loads((base / "model.json").read_text(encoding="utf-8"))
    val = lines / "training_all_val.txt"
    rc = train(tmp_path, "ft", "--train-list", str(lines / "training_all_train.txt"), "--val-list", str(val),
               "--base-model", str(base), "--max-steps", "0", *QUICK)
    assert rc == 0
    tuned = tmp_path / "ft" / "best_val"
    info = json.loads((tuned / "model.json").read_text(encoding="utf-8"))
    old = base_info["charset"]
    assert info["charset"][:len(old)] == old and len(info["charset"]) > len(old) + 10
    before, after = weights(base), weights(tuned)
    for key, tensor in before.items():
        if tensor.shape == after[key].shape:
            assert torch.equal(tensor, after[key]), key
        else:  # the output layer: the trained rows bit for bit, new rows below them
            assert torch.equal(tensor, after[key][:len(old) + 1]), key
    strips, texts = read_lines(lines / "training_all_train.txt", 32)
    known = [strips[i] for i, t in enumerate(texts) if set(t) <= set(old)]
    assert len(known) >= 8
    assert recognise(tuned, known) == recognise(base, known)
    # the new rows start too unlikely to win a single frame, on any line
    assert recognise(tuned, strips[:60]) == recognise(base, strips[:60])


@pytest.mark.slow
def test_a_fine_tune_that_reads_worse_keeps_the_base_model_as_best_val(handful, lines, tmp_path, capsys):
    base = handful / "best_val"
    few = lines / "few.txt"  # the 8 lines the base learnt by heart: it reads them almost perfectly
    base_cer = json.loads((base / "model.json").read_text(encoding="utf-8"))["training"]["val_cer"]
    # a learning rate that wrecks the model in a few steps
    rc = train(tmp_path, "worse", "--train-list", str(few), "--val-list", str(few), "--base-model", str(base),
               "--charset-mode", "keep", "--epochs", "3", "--batch-size", "4", "--learning-rate", "0.5", *QUICK)
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "worse" / "metrics.csv", encoding="utf-8")))
    assert (rows[0]["epoch"], rows[0]["step"]) == ("0", "0") and len(rows) == 4
    assert float(rows[0]["val_cer"]) == pytest.approx(base_cer, abs=1e-6)
    assert all(float(r["val_cer"]) > float(rows[0]["val_cer"]) + 0.1 for r in rows[1:])
    kept = weights(tmp_path / "worse" / "best_val")
    assert all(torch.equal(tensor, kept[key]) for key, tensor in weights(base).items())
    out = capsys.readouterr().out
    assert "fine-tuning did not beat the base model on validation: best_val is the base model" in out
    assert "epoch 0 step 0: the starting model: " in out


@pytest.mark.slow
def test_charset_keep_drops_lines_with_unknown_characters(handful, lines, tmp_path, capsys):
    base = handful / "best_val"
    old = set(json.loads((base / "model.json").read_text(encoding="utf-8"))["charset"])
    unknown = subset(lines, "val", "unknown", lambda s: [x for x in s if not set(x.text) <= old][:5])
    rc = train(tmp_path, "keep", "--train-list", str(unknown), "--val-list", str(unknown), "--base-model", str(base),
               "--charset-mode", "keep", *QUICK)
    assert rc == 1
    err = capsys.readouterr().err
    assert "no training lines left" in err and "5 have characters the model does not know" in err


@pytest.mark.slow
def test_interrupted_then_resumed_ends_where_an_uninterrupted_run_does(lines, tmp_path):
    some = subset(lines, "train", "some", lambda s: s[:40])
    val = subset(lines, "val", "someval", lambda s: s[:8])
    common = ["--train-list", str(some), "--val-list", str(val), "--spec", TINY, "--epochs", "2", "--batch-size", "8",
              "--threads", "1", "--warmup-steps", "3", "--seed", "5"]
    # augmentation on, dropout in the spec: the per-line distortions and the RNG states must both resume
    assert train(tmp_path, "whole", *common, "--workers", "0") == 0
    assert train(tmp_path, "parts", *common, "--workers", "0", "--max-steps", "7") == 0
    state = json.loads((tmp_path / "parts" / "last" / "state.json").read_text(encoding="utf-8"))
    assert (state["step"], state["epoch"]) == (7, 1) and 0 < state["position"]
    assert train(tmp_path, "parts", *common, "--workers", "2", "--resume") == 0
    whole, parts = weights(tmp_path / "whole" / "last"), weights(tmp_path / "parts" / "last")
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_processes_under_torchrun_train_together(lines, tmp_path, processes):
    # one process alone still joins a process group (the path a one-GPU torchrun check takes)
    some = subset(lines, "train", "ddp", lambda s: s[:48])
    val = subset(lines, "val", "ddpval", lambda s: s[:8])
    proc = run_cli(["torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", "loghi_ft", "train",
                    "--train-list", str(some), "--val-list", str(val), "--spec", TINY, "--output", str(tmp_path),
                    "--model-name", "ddp", "--epochs", "2", "--batch-size", "8", *QUICK])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert out.strip().splitlines()[-1].startswith(f"best_val: {tmp_path / 'ddp' / 'best_val'} (val CER ")
    config = (tmp_path / "ddp" / "config.yaml").read_text(encoding="utf-8")
    assert f"# processes: {processes}" in config and f"# steps_per_epoch: {6 // processes}" in config
    state = json.loads((tmp_path / "ddp" / "last" / "state.json").read_text(encoding="utf-8"))
    assert state["step"] == 12 // processes and state["epoch"] == 2
    from loghi_ft.model.folder import load_model
    load_model(tmp_path / "ddp" / "best_val")


@pytest.mark.slow
def test_sigint_mid_epoch_writes_last_and_leaves_a_loadable_best_val(lines, tmp_path):
    proc = run_cli(["loghi_ft", "train", "--train-list", str(lines / "training_all_train.txt"),
                    "--val-list", str(subset(lines, "val", "sigval", lambda s: s[:4])), "--spec", TINY,
                    "--output", str(tmp_path), "--model-name", "sig", "--epochs", "5", "--batch-size", "4",
                    "--val-every", "3", *QUICK, "--workers", "1"], start_new_session=True)
    best = tmp_path / "sig" / "best_val"
    deadline = time.time() + 120
    while not (best / "model.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl+C in a terminal: the loader worker gets it too
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGINT" in err
    assert out.strip().splitlines()[-1].startswith(f"best_val: {best} (val CER ")
    state = json.loads((tmp_path / "sig" / "last" / "state.json").read_text(encoding="utf-8"))
    assert state["epoch"] == 0 and 3 <= state["position"] < 90
    from loghi_ft.model.folder import load_model
    load_model(best)
    load_model(tmp_path / "sig" / "last")


@pytest.mark.slow
def test_a_run_killed_without_warning_resumes_from_its_last_validation(lines, tmp_path, capsys):
    common = ["--train-list", str(lines / "training_all_train.txt"), "--val-list",
              str(subset(lines, "val", "killval", lambda s: s[:4])), "--spec", TINY, "--output", str(tmp_path),
              "--model-name", "kill", "--epochs", "5", "--batch-size", "4", "--val-every", "3", *QUICK]
    proc = run_cli(["loghi_ft", "train", *common], start_new_session=True)
    last = tmp_path / "kill" / "last" / "state.json"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: only what was on disk survives
    proc.communicate(timeout=60)
    state = json.loads(last.read_text(encoding="utf-8"))
    assert state["step"] % 3 == 0 and state["step"] == state["rows"][-1]["step"] > 0
    assert main(["train", *common, "--resume", "--max-steps", str(state["step"] + 2)]) == 0
    assert f"resuming from {tmp_path / 'kill' / 'last'}: epoch 1, step {state['step']}" in capsys.readouterr().out


@pytest.mark.slow
def test_small_preset_learns_to_read_held_out_lines(lines, tmp_path):
    # from scratch: about 390 training lines of 12 pages, 300 steps of 16; validation on the 95 lines of 3 other pages.
    # A fresh CTC model first predicts only blanks (CER 100%); measured: 100% -> 58.6% after 300 steps
    # (no augmentation, peak learning rate 3e-3; at 1e-3 it had not left the blank plateau by then)
    rc = train(tmp_path, "small", "--train-list", str(lines / "training_all_train.txt"),
               "--val-list", str(lines / "training_all_val.txt"), "--spec", "small", "--epochs", "16",
               "--max-steps", "300", "--batch-size", "16", "--learning-rate", "3e-3", "--patience", "0",
               "--no-augment", "--workers", "1")
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "small" / "metrics.csv", encoding="utf-8")))
    assert float(rows[0]["val_cer"]) > 0.95
    assert float(rows[-1]["val_cer"]) < 0.75
    assert float(rows[-1]["val_loss"]) < 0.8 * float(rows[0]["val_loss"])


@pytest.mark.slow
def test_list_file_weights_scale_each_lines_loss(lines, tmp_path):
    # the same lines once with their texts and once with the texts reversed (same characters, other targets):
    # at weight 1 the two runs learn different models; at weight 0 neither learns anything, so they stay equal
    from dataclasses import replace
    few = [s for s in read_list(lines / "training_all_train.txt") if 15 <= len(s.text) <= 30][:8]
    for weight in (1.0, 0.0):
        runs = []
        for name, texts in (("fwd", [s.text for s in few]), ("rev", [s.text[::-1] for s in few])):
            listed = tmp_path / f"{name}{weight:g}.txt"
            write_list(listed, [replace(s, text=t, weight=weight) for s, t in zip(few, texts)])
            name = f"{name}{weight:g}"
            assert train(tmp_path, name, "--train-list", str(listed), "--val-list", str(listed), "--spec", TINY,
                         "--epochs", "2", "--batch-size", "4", "--weight-decay", "0", "--patience", "0", *QUICK) == 0
            runs.append(weights(tmp_path / name / "last"))
        same = all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
        assert same == (weight == 0.0), f"weight {weight}"


def test_user_mistakes_get_one_line_messages(lines, tmp_path, capsys):
    val = str(lines / "training_all_val.txt")
    assert train(tmp_path, "x", "--train-list", str(tmp_path / "nope.txt"), "--val-list", val, "--spec", TINY) == 1
    assert "nope.txt: list file not found" in capsys.readouterr().err
    assert train(tmp_path, "x", "--train-list", val, "--val-list", val, "--base-model", str(tmp_path / "none")) == 1
    assert "none: model folder not found" in capsys.readouterr().err
    assert train(tmp_path, "x", "--train-list", val, "--val-list", val) == 1
    assert "--base-model DIR" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert train(tmp_path, "x", "--train-list", val, "--val-list", val, "--spec", TINY, "--gpu", "0,1") == 1
        assert "--gpu 0,1: no CUDA device is available here" in capsys.readouterr().err
    empty = lines / "empty.txt"
    empty.write_text("# nothing\n", encoding="utf-8")
    assert train(tmp_path, "x", "--train-list", str(empty), "--val-list", val, "--spec", TINY) == 1
    assert "no training lines in" in capsys.readouterr().err


def test_width_batches_cover_every_line_once_with_little_padding(lines):
    from loghi_ft.pages.cache import ensure_cache
    from loghi_ft.train.dataset import WidthBatches

    widths = np.asarray(ensure_cache(lines / "training_all_train.txt", 32).widths)
    one = WidthBatches(widths, 8, seed=3)
    batches = one.epoch_batches(0)
    assert sorted(i for b in batches for i in b) == list(range(len(widths)))
    assert len(batches) == len(one)
    assert batches == WidthBatches(widths, 8, seed=3).epoch_batches(0) != one.epoch_batches(1)

    def padding(bs):
        return sum(len(b) * widths[b].max() - widths[b].sum() for b in bs) / widths.sum()
    shuffled = np.random.default_rng(0).permutation(len(widths))
    assert padding(batches) < 0.2 * padding([shuffled[k:k + 8] for k in range(0, len(widths), 8)])
    # two ranks: disjoint halves of the same batches, as many each
    ranks = [WidthBatches(widths, 8, seed=3, rank=r, world=2).epoch_batches(0) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(WidthBatches(widths, 8, seed=3, world=2))
    assert {tuple(b) for b in ranks[0] + ranks[1]} == {tuple(b) for b in batches}



def test_the_loop_ends_its_loaders_persistent_workers():
    """At exit multiprocessing stops worker processes with SIGTERM, which ours ignore (quiet_worker), and waits for
    them: a fine-tune (160 lines, 32 val lines, --workers 1) printed best_val and then hung for ever. The loop
    ends them itself."""
    from torch.utils.data import DataLoader

    from loghi_ft.train.dataset import quiet_worker
    from loghi_ft.train.loop import close_loaders

    loader = DataLoader(list(range(8)), batch_size=4, num_workers=1, persistent_workers=True,
                        worker_init_fn=quiet_worker)
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    workers = list(loader._iterator._workers)
    assert workers and all(w.is_alive() for w in workers)
    close_loaders(loader, None)
    assert loader._iterator is None and not any(w.is_alive() for w in workers)

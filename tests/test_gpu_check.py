"""benchmarks/gpu_check.sh, the GPU check of issue 16, run tiny on the CPU (--cpu-smoke): every step gives its
figures in the one JSON file, so the script is known to work before GPU time is spent on it."""

import json
import subprocess

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_cpu_smoke_run_writes_every_steps_figures(tmp_path):
    result = tmp_path / "gpu_check.json"
    subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", str(result)], check=True, timeout=900,
                   capture_output=True)
    report = json.loads(result.read_text(encoding="utf-8"))
    steps = report["steps"]
    assert [name for name, step in steps.items() if not step["ok"]] == [], report["notes"]
    assert report["machine"]["imports"]["loghi_ft"] == "0.1.0" and report["machine"]["torch"]
    assert steps["prepare"]["lines"] == {"train": 406, "val": 134}  # samples/train and samples/val
    for name in ("train_small", "train_recommended", "train_small_augmented"):
        for config in steps[name]["configs"]:
            # the first epoch is left out: at least two later ones, each with the trainer's own rate
            assert len(config["epoch_lines_per_s"]) >= 2 and all(r > 0 for r in config["epoch_lines_per_s"])
            assert config["device"] == "cpu" and config["precision"] == "bfloat16"
    assert [c["batch_size"] for c in steps["train_small"]["configs"]] == [4, 8]
    assert steps["train_small_augmented"]["configs"][0]["augment"] is True
    assert steps["infer"]["pages"]["lines"] == 162  # samples/test: 2 pages
    assert steps["infer"]["list_runs"]["4"]["lines"] == 4 * steps["infer"]["list_runs"]["1"]["lines"] == 256
    assert steps["torchrun"]["best_val_written"] and steps["torchrun"]["processes"] == 1
    assert steps["nccl_probe"]["backend"] == "gloo" and steps["nccl_probe"]["grads_finite"]
    summary = report["summary"]
    assert summary["small_lines_per_s"] == max(c["lines_per_s"] for c in steps["train_small"]["configs"])
    assert summary["targets_met"] == {"small_lines_per_s": False, "gpu_busy": False}  # a CPU is no GPU
    assert (tmp_path / "gpu_check.log").stat().st_size > 0

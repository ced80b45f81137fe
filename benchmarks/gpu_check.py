"""The GPU check of issue 16: training and inference speed on one NVIDIA GPU, written to one JSON file.

    python benchmarks/gpu_check.py [--cpu-smoke] [--budget SECONDS] [RESULT.json]   (benchmarks/gpu_check.sh runs it)

Steps, in this order, each under its own time limit and all within --budget: install the package (`pip install
-e .`; from the wheels in ./.whl and no registry when that folder exists), read the machine (GPU, driver, torch,
CUDA), cut the sample pages with `loghi-ft prepare`, train the `small` and then the `recommended` preset at bf16
at several batch sizes, `loghi-ft infer` on the sample pages and on a long list of their lines, one `loghi-ft
train` under torchrun, an NCCL + DDP probe under torchrun (world size 1), and `small` once more with
augmentation on (whether loading lines keeps up). A training figure is the steady state: the trainer's own lines/s
(metrics.csv, as bench_train.py reads it) of each epoch after the first, the training lines repeated so that an
epoch takes a few seconds; the GPU's busy fraction is nvidia-smi's utilization sampled every 200 ms during the
training part of those epochs. The JSON is rewritten after every step, so a step that fails or runs out of time
leaves the others' figures; RESULT.log beside it holds every command's output.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import ROOT, run_sampled

sys.path.insert(0, str(ROOT))
from loghi_ft.pages.listfile import read_list, write_list  # no torch: the parent process stays light

TARGETS = {"small_lines_per_s": 20000, "gpu_busy": 0.90}  # issue 16
LEAST_STEP_SECONDS = 20  # a step with less time left than this is skipped, not started


@dataclass(frozen=True)
class Profile:
    """How big each step is: the GPU check, or the same steps tiny on the CPU."""
    gpu: str
    batches: dict = field(default_factory=lambda: {"small": [64, 128, 256], "recommended": [64, 128, 256]})
    first_epoch_lines: dict = field(default_factory=lambda: {"small": 12000, "recommended": 6000})
    epoch_seconds: float = 3.0        # later batch sizes get as many lines per epoch as take this long
    steady_seconds: float = 10.0      # steady training measured after the first epoch (at least 2 epochs)
    first_epoch_seconds: float = 40.0  # a first epoch longer than this stops the batch size without a figure
    val_lines: int | None = None      # validation lines (None: all of samples/val)
    workers: int | None = None        # loader processes: loghi-ft's default (one per core left, at most 4)
    threads: int = 0
    infer_inputs: tuple = ("samples/train", "samples/val", "samples/test")
    infer_repeats: int = 40           # the prepared lines this many times: recognition's steady rate
    infer_list_lines: int | None = None  # of the prepared lines, so many (None: all; at least 64, infer's chunk)
    infer_batch: int = 128
    torchrun_steps: int = 30
    budget: float = 450.0
    limits: dict = field(default_factory=lambda: {
        "install": 150, "machine": 60, "prepare": 90, "train_small": 150, "train_recommended": 150,
        "infer": 100, "torchrun": 100, "nccl_probe": 60, "train_small_augmented": 70})


GPU = Profile(gpu="0")
CPU_SMOKE = Profile(gpu="-1", batches={"small": [4, 8], "recommended": [2]}, first_epoch_lines={"small": 16,
                    "recommended": 2}, epoch_seconds=1.0, steady_seconds=2.0, first_epoch_seconds=60.0, val_lines=8,
                    workers=1, threads=1, infer_inputs=("samples/test",), infer_repeats=4, infer_list_lines=64,
                    infer_batch=16, torchrun_steps=3, budget=600.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", nargs="?", type=Path, help="the JSON file (default: $OUT/gpu_check.json)")
    parser.add_argument("--cpu-smoke", action="store_true", help="the same steps, tiny, on the CPU (tests the script)")
    parser.add_argument("--budget", type=float, help="seconds for all steps (default: 450; 600 with --cpu-smoke)")
    parser.add_argument("--part", nargs=2, metavar=("NAME", "JSON"), help=argparse.SUPPRESS)  # a child's work
    args = parser.parse_args()
    if args.part:
        PARTS[args.part[0]](json.loads(args.part[1]))
        return 0
    result = args.result or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if result is None:
        parser.error("give the JSON file's path, or set OUT")
    profile = CPU_SMOKE if args.cpu_smoke else GPU
    profile = replace(profile, budget=args.budget or profile.budget)
    # children import the package from this checkout whether or not the install step worked
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    report = Report(result, profile, "cpu-smoke" if args.cpu_smoke else "gpu")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        check(report, Path(work))
    print(report.summary_text())
    return 0


def check(report: Report, work: Path) -> None:
    """Every step in order; each one's figures land in the report whatever happens to the others."""
    p = report.profile
    report.step("install", install)
    report.step("machine", machine, work)
    lists = report.step("prepare", prepare, work)
    if lists is None:
        report.note("no prepared lines: the training, inference and torchrun steps cannot run")
        return
    for preset in ("small", "recommended"):
        report.step(f"train_{preset}", train_preset, work, lists, preset, p.batches[preset], False)
    report.step("infer", infer, work, lists)
    report.step("torchrun", torchrun_train, work, lists)
    report.step("nccl_probe", nccl_probe, work)
    best = report.best("small")
    if best:
        report.step("train_small_augmented", train_preset, work, lists, "small", [best["batch_size"]], True)


class Report:
    """The JSON file, rewritten after every step, and the log of every command's output beside it."""

    def __init__(self, path: Path, profile: Profile, mode: str):
        self.path, self.profile = path.resolve(), profile
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = self.path.with_suffix(".log")
        self.log_path.write_text("", encoding="utf-8")
        self.start = time.time()
        self.deadline = self.start + profile.budget
        self.data = {"mode": mode, "started": datetime.now().isoformat(timespec="seconds"), "budget_s": profile.budget,
                     "profile": asdict(profile), "targets": TARGETS, "machine": {}, "steps": {}, "summary": {},
                     "notes": []}
        self.save()

    def step(self, name: str, fn, *args):
        """Run fn(report, *args) under the step's time limit; record its figures or why it failed."""
        left = self.deadline - time.time()
        if left < LEAST_STEP_SECONDS:
            self.data["steps"][name] = {"ok": False, "skipped": f"out of time ({left:.0f} s of the budget left)"}
            self.note(f"{name}: skipped, out of time")
            return None
        self.step_deadline = time.time() + min(self.profile.limits[name], left)
        print(f"[{time.time() - self.start:5.0f} s] {name} (at most {self.step_deadline - time.time():.0f} s)",
              flush=True)
        started, value = time.time(), None
        try:
            value = fn(self, *args)
            entry = {"ok": True, **(value if isinstance(value, dict) else {})}
        except Exception as exc:  # a failing step is a finding: record it, go on with the next
            entry = {"ok": False, "error": str(exc)[-2000:]}
            self.note(f"{name}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)}")
            self.log(f"--- {name} failed\n{traceback.format_exc()}")
        entry["seconds"] = round(time.time() - started, 1)
        self.data["steps"][name] = {**self.data["steps"].get(name, {}), **entry}
        self.summarise()
        self.save()
        print(f"[{time.time() - self.start:5.0f} s] {name}: {'ok' if entry['ok'] else 'FAILED'} "
              f"({entry['seconds']} s)", flush=True)
        return value

    def run(self, cmd: list[str], env: dict | None = None) -> tuple[str, float]:
        """A command's output and wall seconds, killed at the step's deadline; an exception when it fails."""
        limit = max(1, int(self.step_deadline - time.time()))
        wrapped = ["timeout", "-k", "5", str(limit)] + (["env"] + [f"{k}={v}" for k, v in env.items()] if env else [])
        self.log(f"$ {' '.join(map(str, cmd))}")
        try:
            output, seconds = run_sampled(wrapped + [str(c) for c in cmd], lambda pid: None, 1.0, ROOT)
        except SystemExit as failed:  # run_sampled leaves with the output's end when the command fails
            self.log(str(failed))
            raise RuntimeError(f"{' '.join(map(str, cmd[:6]))} ... failed"
                               f"{' (killed at its time limit)' if '(124)' in str(failed) else ''}: {failed}") from None
        self.log(output)
        return output, seconds

    def part(self, name: str, params: dict, work: Path, launcher: tuple = (sys.executable,), env: dict | None = None):
        """Run one of this file's PARTS in a child process; its JSON result, also when the child failed."""
        result = work / f"{name}-{len(list(work.glob(name + '-*.json')))}.json"
        params = {**params, "result": str(result), "deadline": self.step_deadline - 5}
        try:
            self.run([*launcher, Path(__file__).resolve(), "--part", name, json.dumps(params)], env)
        except RuntimeError as exc:
            exc.partial = json.loads(result.read_text(encoding="utf-8")) if result.exists() else None
            raise
        return json.loads(result.read_text(encoding="utf-8"))

    def note(self, text: str) -> None:
        self.data["notes"].append(text)

    def log(self, text: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")

    def best(self, preset: str) -> dict | None:
        """The batch size of `preset` that trained fastest (without augmentation)."""
        configs = [c for c in self.data["steps"].get(f"train_{preset}", {}).get("configs", []) if c.get("lines_per_s")]
        return max(configs, key=lambda c: c["lines_per_s"], default=None)

    def summarise(self) -> None:
        steps, s = self.data["steps"], self.data["summary"]
        for preset in ("small", "recommended"):
            best = self.best(preset)
            if best:
                s[f"{preset}_lines_per_s"], s[f"{preset}_batch_size"] = best["lines_per_s"], best["batch_size"]
                s[f"{preset}_gpu_busy"] = best.get("gpu_busy")
        configs = [c for k, v in steps.items() if k.startswith("train_") for c in v.get("configs", [])]
        for key in ("gpu_memory_used_peak_mib", "torch_peak_reserved_mib"):  # nvidia-smi's counts CUDA's context too
            s[key] = max((c[key] for c in configs if c.get(key)), default=None)
        augmented = (steps.get("train_small_augmented", {}).get("configs") or [{}])[0]
        s["small_augmented_lines_per_s"], s["small_augmented_gpu_busy"] = (augmented.get("lines_per_s"),
                                                                         augmented.get("gpu_busy"))
        infer, torchrun = steps.get("infer", {}), steps.get("torchrun", {})
        s["infer_pages_lines_per_s"] = infer.get("pages", {}).get("lines_per_s")
        s["infer_list_lines_per_s"] = infer.get("list_lines_per_s")
        s["torchrun_ok"], s["torchrun_nccl"] = torchrun.get("ok"), torchrun.get("nccl_initialised")
        s["nccl_probe_ok"] = steps.get("nccl_probe", {}).get("ok")
        s["targets_met"] = {"small_lines_per_s": (s.get("small_lines_per_s") or 0) >= TARGETS["small_lines_per_s"],
                            "gpu_busy": (s.get("small_gpu_busy") or 0) >= TARGETS["gpu_busy"]}

    def summary_text(self) -> str:
        self.data["total_s"] = round(time.time() - self.start, 1)
        self.save()
        lines = [f"gpu_check ({self.data['mode']}) in {self.data['total_s']} s; result {self.path}"]
        lines += [f"  {k}: {v}" for k, v in self.data["summary"].items()]
        lines += [f"  note: {n}" for n in self.data["notes"]]
        return "\n".join(lines)

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.path)


# ---------------------------------------------------------------- steps (in the parent process)

def install(report: Report) -> dict:
    """pip install -e . of this checkout: from ./.whl and the installed packages where no registry is reachable."""
    cmd = [sys.executable, "-m", "pip", "install", "-e", str(ROOT)]
    if importlib.util.find_spec("setuptools"):
        cmd.append("--no-build-isolation")  # build with the installed setuptools: nothing to fetch for the build
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    cmd += ["--no-index", "--find-links", str(ROOT / ".whl")] if wheels else ["--timeout", "15", "--retries", "1"]
    if report.data["mode"] == "cpu-smoke":
        cmd.append("--dry-run")  # here the package is installed already, and others use this environment
    result = {"source": f"wheels in .whl ({', '.join(w.name for w in wheels)}), no registry" if wheels
              else "the registry"}
    try:
        output, seconds = report.run(cmd)
    except RuntimeError as exc:
        # a dependency that neither the machine nor .whl has: the package alone, so the steps can say what is missing
        report.note(f"install: {str(exc).strip().splitlines()[-1]}; installing without dependencies")
        result["with_dependencies_failed"] = str(exc)[-1000:]
        cmd.append("--no-deps")
        output, seconds = report.run(cmd)
    return {**result, "command": " ".join(cmd), "install_seconds": round(seconds, 1),
            "output_tail": output.strip().splitlines()[-1:]}


def machine(report: Report, work: Path) -> dict:
    """The GPU (nvidia-smi), and torch, CUDA and the package's imports as the children will see them."""
    info = report.data["machine"]
    if shutil.which("nvidia-smi"):
        output, _ = report.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                "--format=csv,noheader,nounits"])
        name, driver, memory, clock = [x.strip() for x in output.strip().splitlines()[0].split(",")][:4]
        info.update(nvidia_smi_gpu=name, driver=driver, gpu_memory_total_mib=float(memory), sm_clock_max_mhz=clock)
    else:
        info["nvidia_smi"] = "not found"
    info.update(report.part("machine", {"gpu": report.profile.gpu}, work) or {})
    if report.profile.gpu != "-1" and not info.get("cuda_available"):
        raise RuntimeError("torch sees no CUDA device")
    return {}


def prepare(report: Report, work: Path) -> dict:
    """The sample pages cut into lines: training from samples/train, validation from samples/val."""
    lists = {}
    for part in ("train", "val"):
        report.run([sys.executable, "-m", "loghi_ft", "prepare", ROOT / "samples" / part, "--output",
                    work / "data" / part, "--val-fraction", "0"])
        lists[part] = str(work / "data" / part / "training_all_train.txt")
    counts = {part: len(read_list(Path(path))) for part, path in lists.items()}
    lists["val"] = str(first_lines(Path(lists["val"]), report.profile.val_lines))
    return {**lists, "lines": counts, "validation_lines_used": len(read_list(Path(lists["val"])))}


def train_preset(report: Report, work: Path, lists: dict, preset: str, batches: list[int], augment: bool) -> dict:
    """One preset at each batch size in turn, in one child process; the figures of each batch size."""
    p = report.profile
    params = {"preset": preset, "batches": batches, "augment": augment, "train_list": lists["train"],
              "val_list": lists["val"], "work": str(work / "runs"), "gpu": p.gpu, "workers": p.workers,
              "threads": p.threads, "first_epoch_lines": p.first_epoch_lines[preset], "epoch_seconds": p.epoch_seconds,
              "steady_seconds": p.steady_seconds, "first_epoch_seconds": p.first_epoch_seconds}
    name = f"train_{preset}" + ("_augmented" if augment else "")
    try:
        configs = report.part("train", params, work)
    except RuntimeError as exc:  # killed at its time limit, say: the batch sizes it finished still count
        report.data["steps"][name] = {"configs": getattr(exc, "partial", None) or []}
        raise
    failed = [f"batch {c['batch_size']}: {c['error']}" for c in configs if c.get("error")]
    if failed:
        report.note(f"{name}: " + "; ".join(failed))
    if not any(c.get("lines_per_s") for c in configs):
        raise RuntimeError("no batch size gave a steady figure")
    return {"configs": configs}


def infer(report: Report, work: Path, lists: dict) -> dict:
    """`loghi-ft infer` on the sample pages (end to end), then its recognition rate on a long list of lines: the
    marginal rate between the prepared lines once and the same lines many times (start-up cancels out)."""
    p = report.profile
    best = report.best("small")
    if best is None:
        raise RuntimeError("no trained `small` model to read with (its training step failed)")
    model = Path(best["run"]) / "best_val"
    options = ["--model", model, "--gpu", p.gpu, "--batch-size", str(p.infer_batch), "--precision", "bf16"]
    output, wall = report.run([sys.executable, "-m", "loghi_ft", "infer", *[ROOT / i for i in p.infer_inputs],
                               "--output", work / "infer-pages", *options])
    pages = {**own_rate(output), "wall_seconds": round(wall, 1), "inputs": list(p.infer_inputs),
             "batch_size": p.infer_batch}
    samples = (read_list(Path(lists["train"])) + read_list(Path(lists["val"])))[:p.infer_list_lines]
    runs = {}
    for repeats in (p.infer_repeats, 1):  # the long run first: the cold start (files, kernels) falls in it
        listed = work / f"infer-{repeats}x.txt"
        write_list(listed, samples * repeats)
        output, _ = report.run([sys.executable, "-m", "loghi_ft", "infer", listed, "--output", work / "infer-lists",
                                *options])
        runs[repeats] = own_rate(output)
    once, many = runs[1], runs[p.infer_repeats]
    rate = None
    if many["seconds"] > once["seconds"] + 0.5:
        rate = round((many["lines"] - once["lines"]) / (many["seconds"] - once["seconds"]), 1)
    else:  # too few lines for the difference to stand out of the noise (the CPU smoke run's lists)
        report.note(f"infer: the list runs took {once['seconds']} and {many['seconds']} s: no marginal rate")
    return {"model": f"small, batch {best['batch_size']} run (briefly trained)", "pages": pages,
            "list_runs": {str(k): v for k, v in runs.items()}, "list_lines_per_s": rate}


def own_rate(output: str) -> dict:
    """Lines, seconds and lines/s from infer's last line ('N pages, L lines recognised in S s (R lines/s)')."""
    found = re.search(r"(\d+) lines recognised in ([\d.]+) s \(([\d.]+) lines/s\)", output)
    if not found:
        raise RuntimeError(f"infer printed no rate: {output.strip()[-300:]}")
    return {"lines": int(found[1]), "seconds": float(found[2]), "lines_per_s": float(found[3])}


def torchrun_train(report: Report, work: Path, lists: dict) -> dict:
    """`loghi-ft train` as one process under torchrun (the launch that several GPUs use), NCCL's log switched on."""
    p = report.profile
    run = work / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", "loghi_ft",
           "train", "--train-list", lists["train"], "--val-list", lists["val"], "--spec", "small", "--output", work,
           "--model-name", run.name, "--epochs", "1", "--max-steps", str(p.torchrun_steps), "--batch-size",
           str(p.batches["small"][0]), "--gpu", p.gpu, "--precision", "bf16", "--no-augment"]
    if p.workers is not None:
        cmd += ["--workers", str(p.workers)]
    output, seconds = report.run(cmd, env={"NCCL_DEBUG": "INFO"})
    nccl = [line for line in output.splitlines() if "NCCL INFO" in line]
    version = re.search(r"NCCL version ([\w.+-]+)", output)
    place = re.search(r"steps per epoch on (\S+) x(\d+)", output)
    result = {"exit_status": 0, "wall_seconds": round(seconds, 1), "nccl_initialised": bool(nccl),
              "nccl_version": version[1] if version else None, "nccl_log_lines": len(nccl),
              "device": place[1] if place else None, "processes": int(place[2]) if place else None,
              "best_val_written": (run / "best_val" / "model.safetensors").exists()}
    if p.gpu != "-1" and not nccl:
        report.note("torchrun: loghi-ft train ran and ended cleanly under torchrun with one process, but NCCL was "
                    "not started: loop.start_process calls init_process_group only when WORLD_SIZE > 1 (see "
                    "nccl_probe for NCCL + DDP on our model)")
    if not result["best_val_written"]:
        raise RuntimeError(f"torchrun: no best_val in {run}")
    return result


def nccl_probe(report: Report, work: Path) -> dict:
    """NCCL (gloo on the CPU) and DDP on the `small` model, one process under torchrun."""
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1")
    result = report.part("nccl", {"gpu": report.profile.gpu}, work, launcher, env={"NCCL_DEBUG": "WARN"})
    if not result or not result.get("ok"):
        raise RuntimeError(f"the probe did not end well: {result}")
    return result


# ---------------------------------------------------------------- parts (each in a child process)

def machine_part(p: dict) -> None:
    """torch, CUDA, the GPU and a bf16 matrix product's rate; which of the package's imports work."""
    import torch

    info = {"python": sys.version.split()[0], "python_executable": sys.executable, "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "cpu_count": os.cpu_count(),
            "cuda_available": torch.cuda.is_available(), "imports": {}}
    for module in ("numpy", "cv2", "lxml", "safetensors", "yaml", "tqdm", "matplotlib", "rapidfuzz", "loghi_ft"):
        try:
            info["imports"][module] = getattr(importlib.import_module(module), "__version__", "ok")
        except Exception as exc:
            info["imports"][module] = f"FAILED: {exc}"
    if torch.cuda.is_available() and p["gpu"] != "-1":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                    bf16=torch.cuda.is_bf16_supported())
        a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        for _ in range(3):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            a @ b
        end.record()
        torch.cuda.synchronize()
        info["bf16_matmul_tflops"] = round(10 * 2 * 8192**3 / (start.elapsed_time(end) / 1000) / 1e12, 1)
    Path(p["result"]).write_text(json.dumps(info), encoding="utf-8")


def train_part(p: dict) -> None:
    """Train one preset at each batch size in turn (in this one process: start-up paid once); results after each."""
    import torch

    # a stop signal that reaches us between two runs is harmless (during a run the trainer's own handler takes it)
    signal.signal(signal.SIGTERM, lambda *_: None)
    results, lines_per_epoch = [], p["first_epoch_lines"]
    for batch in p["batches"]:
        if time.time() + p["first_epoch_seconds"] / 2 + p["steady_seconds"] > p["deadline"]:
            results.append({"batch_size": batch, "error": "skipped: out of time"})
            break
        result = train_config(p, batch, lines_per_epoch)
        results.append(result)
        Path(p["result"]).write_text(json.dumps(results), encoding="utf-8")
        if result.get("error", "").startswith("out of GPU memory"):
            break
        if result.get("lines_per_s"):
            lines_per_epoch = max(4 * batch, round(result["lines_per_s"] * p["epoch_seconds"]))
        if p["gpu"] != "-1":
            torch.cuda.empty_cache()
    Path(p["result"]).write_text(json.dumps(results), encoding="utf-8")


def train_config(p: dict, batch: int, lines_per_epoch: int) -> dict:
    """Train at one batch size until a few steady epochs are done; its figures (see steady_figures)."""
    import torch

    from loghi_ft.train.loop import train
    from loghi_ft.train.settings import TrainSettings

    run = Path(p["work"]) / (f"{p['preset']}-b{batch}" + ("-augmented" if p["augment"] else ""))
    run.parent.mkdir(parents=True, exist_ok=True)
    # the same list given many times: as many lines per epoch as wanted, through the one cache prepare built
    listed = first_lines(Path(p["train_list"]), lines_per_epoch)
    repeats = max(1, math.ceil(lines_per_epoch / len(read_list(listed))))
    s = TrainSettings(train_list=[listed] * repeats, val_list=Path(p["val_list"]), spec=p["preset"],
                      output=run.parent, model_name=run.name, epochs=10**6, batch_size=batch, precision="bf16",
                      gpu=p["gpu"], workers=p["workers"], threads=p["threads"], no_augment=not p["augment"],
                      patience=0)
    cuda = p["gpu"] != "-1"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sampler = GpuSampler(run.with_suffix(".smi.csv")) if cuda and shutil.which("nvidia-smi") else None
    marks, done = {}, threading.Event()
    watcher = threading.Thread(target=stop_when_steady, args=(run / "metrics.csv", p, marks, done), daemon=True)
    watcher.start()
    result = {"batch_size": batch, "augment": p["augment"], "list_repeats": repeats, "run": str(run)}
    try:
        train(s)
    except torch.cuda.OutOfMemoryError:
        result["error"] = "out of GPU memory"
    except Exception as exc:  # recorded; the next batch size may still run
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        done.set()
        watcher.join()
        samples = sampler.stop() if sampler else []
    if cuda:
        result.update(torch_peak_allocated_mib=round(torch.cuda.max_memory_allocated() / 2**20),
                      torch_peak_reserved_mib=round(torch.cuda.max_memory_reserved() / 2**20))
    if samples:
        result["gpu_memory_used_peak_mib"] = max(m for _, _, m in samples)
    result.update(steady_figures(run, marks, samples, "error" in result))
    return result


def first_lines(list_file: Path, count: int | None) -> Path:
    """The list file, or a list of its first `count` lines beside it when it has more."""
    samples = read_list(list_file)
    if count is None or count >= len(samples):
        return list_file
    head = list_file.with_name(f"{list_file.stem}.first{count}.txt")
    write_list(head, samples[:count])
    return head


def stop_when_steady(metrics: Path, p: dict, marks: dict, done: threading.Event) -> None:
    """Once the first epoch is in metrics.csv, let the run train `steady_seconds` and at least two more epochs
    (giving up after more than twice as long as the first took), then stop it as a batch system would (SIGTERM:
    the trainer finishes its step, writes last/ and returns)."""
    start, rows = time.time(), 0
    while not done.wait(0.05):
        now = time.time()
        if metrics.exists():
            rows = metrics.read_text(encoding="utf-8").count("\n") - 1
            if rows >= 1:
                marks.setdefault("first", now)
        first = marks.get("first")
        steady = first is not None and now - first >= p["steady_seconds"] and rows >= 3
        late = (now - start > p["first_epoch_seconds"] if first is None
                else now - first > max(3 * p["steady_seconds"], 2.5 * (first - start)))
        if (steady or late or now > p["deadline"] - 10) and now - marks.get("stop", 0) > 5:
            marks["stop"] = now  # again every 5 s, in case the first one came before the trainer listened
            os.kill(os.getpid(), signal.SIGTERM)


def steady_figures(run: Path, marks: dict, samples: list, failed: bool) -> dict:
    """The trainer's lines/s of every epoch after the first (their harmonic mean: lines over time), and the GPU's
    busy fraction during the training part of those epochs, placed in time by metrics.csv."""
    metrics = run / "metrics.csv"
    rows = list(csv.DictReader(metrics.read_text(encoding="utf-8").splitlines())) if metrics.exists() else []
    header = dict(line[2:].split(": ", 1) for line in (run / "config.yaml").read_text(encoding="utf-8").splitlines()
                  if line.startswith("# ") and ": " in line) if (run / "config.yaml").exists() else {}
    out = {k: int(v) if v.isdigit() else v for k, v in header.items()
           if k in ("device", "precision", "loader_workers", "training_lines", "steps_per_epoch")}
    out.update(epochs=len(rows), first_epoch_lines_per_s=float(rows[0]["train_lines_per_s"]) if rows else None,
               val_cer_last=float(rows[-1]["val_cer"]) if rows else None)
    steady = rows[1:]
    if not steady:
        return out if failed else {**out, "error": "no epoch after the first finished in time"}
    speeds = [float(r["train_lines_per_s"]) for r in steady]
    out.update(epoch_lines_per_s=speeds, lines_per_s=round(len(speeds) / sum(1 / v for v in speeds), 1))
    if not samples or "first" not in marks:
        return out
    lines, val_lines = int(header["training_lines"]), int(header["validation_lines"])
    zero = marks["first"] - float(rows[0]["seconds"])  # metrics.csv appeared just after the first row was made
    spans = []
    for r in steady:  # an epoch's training ends where its validation begins; the row is made after that
        end = zero + float(r["seconds"]) - val_lines / float(r["val_lines_per_s"])
        spans.append((end - lines / float(r["train_lines_per_s"]), end))
    busy = [u for t, u, _ in samples if any(a <= t <= b for a, b in spans)]
    out.update(gpu_busy=round(statistics.mean(busy) / 100, 3) if busy else None, gpu_busy_samples=len(busy))
    return out


class GpuSampler:
    """nvidia-smi's utilization and memory of GPU 0 every 200 ms, with its own timestamps, into a file."""

    QUERY = ("nvidia-smi", "-i", "0", "--query-gpu=timestamp,utilization.gpu,memory.used",
             "--format=csv,noheader,nounits", "-lms", "200")

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "w", encoding="utf-8")
        line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []  # no sample lost when it is stopped
        self.proc = subprocess.Popen([*line_buffered, *self.QUERY], stdout=self.file, stderr=subprocess.DEVNULL)

    def stop(self) -> list[tuple[float, float, float]]:
        """(time, busy percent, MiB used) of each sample."""
        self.proc.terminate()
        self.proc.wait(10)
        self.file.close()
        samples = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                stamp, busy, used = (x.strip() for x in line.split(","))
                samples.append((datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp(), float(busy), float(used)))
            except ValueError:
                continue  # a line cut short by the stop, or a value nvidia-smi could not read
        return samples


def nccl_part(p: dict) -> None:
    """Under torchrun: join the process group (NCCL on a GPU), wrap `small` in DDP, one backward pass (DDP
    all-reduces the gradients), one all_reduce, a barrier, and leave the group."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from loghi_ft.model.vgsl import build_model

    cuda = p["gpu"] != "-1"
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    model = build_model("small", 40).to(device)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if cuda else None)
    net(torch.rand(8, 1, 64, 512, device=device)).float().logsumexp(-1).mean().backward()
    total = torch.ones(1, device=device)
    dist.all_reduce(total)
    grads_finite = all(q.grad is not None and bool(torch.isfinite(q.grad).all()) for q in model.parameters())
    result = {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "all_reduce": total.item(),
              "grads_finite": grads_finite}
    dist.barrier()
    dist.destroy_process_group()
    result["ok"] = grads_finite and result["all_reduce"] == result["world_size"]
    if cuda:
        result["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
    Path(p["result"]).write_text(json.dumps(result), encoding="utf-8")


PARTS = {"machine": machine_part, "train": train_part, "nccl": nccl_part}

if __name__ == "__main__":
    sys.exit(main())

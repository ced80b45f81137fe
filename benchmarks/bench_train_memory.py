"""Memory of a long `loghi-ft train` run: resident memory of the trainer as the steps go by.

    python benchmarks/bench_train_memory.py [--pages 60] [--steps 600] [--spec small]

Cuts the first --pages training pages of timeus-1858 (and 2 validation pages) once, then trains the same model
from scratch twice for --steps steps of 16 lines: as loghi-ft does (batch widths rounded up to a multiple of
32 px) and with each batch exactly as wide as its widest line, as it did before. On the CPU every batch shape
gets its own kernels and buffers in oneDNN and the allocator, so with one shape per pixel width the memory
climbs for as long as new widths come; with widths rounded it should level off. Prints the trainer's resident
memory (main process, the one that runs the model) at each fifth of the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import TIMEUS, run_sampled  # noqa: E402

VAL_PAGES = 2
# runs the trainer in-process with another batch width step (1: the batch is as wide as its widest line)
RUNNER = "import sys, loghi_ft.train.dataset as t; t.BATCH_WIDTH_STEP = int(sys.argv[1]); " \
         "from loghi_ft.cli import main; sys.exit(main(sys.argv[2:]))"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=60, help="timeus training pages to train on (default: 60)")
    parser.add_argument("--steps", type=int, default=600, help="training steps of each run (default: 600)")
    parser.add_argument("--spec", default="small", help="preset or VGSL spec (default: small)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average before {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench_mem_") as tmp:
        tmp = Path(tmp)
        splits = [line.split("\t") for line in (TIMEUS / "splits.tsv").read_text(encoding="utf-8").splitlines()[1:]]
        pages = [TIMEUS / s[0] for s in splits if s[2] == "train"][:args.pages] + \
                [TIMEUS / s[0] for s in splits if s[2] == "val"][:VAL_PAGES]
        subprocess.run([sys.executable, "-m", "loghi_ft", "prepare", *map(str, pages), "--output", str(tmp / "data"),
                        "--split-file", str(TIMEUS / "splits.tsv"), "--workers", "2"], check=True, capture_output=True)
        for step in (32, 1):
            cmd = [sys.executable, "-c", RUNNER, str(step), "train", "--spec", args.spec, "--output", str(tmp / "runs"),
                   "--model-name", f"w{step}", "--train-list", str(tmp / "data" / "training_all_train.txt"),
                   "--val-list", str(tmp / "data" / "training_all_val.txt"), "--epochs", "1000",
                   "--max-steps", str(args.steps), "--batch-size", "16", "--workers", "1", "--patience", "0"]
            samples, seconds = rss_over_time(cmd)
            fifths = [max(r for t, r in samples if t <= seconds * k / 5) / 2**20 for k in range(1, 6)]
            label = "batch widths rounded up to 32 px" if step == 32 else "batch as wide as its widest line"
            print(f"{label}: resident MiB at each fifth of {args.steps} steps: "
                  + ", ".join(f"{m:.0f}" for m in fifths) + f" ({seconds:.0f} s)")
    return 0


def rss_over_time(cmd: list[str]) -> tuple[list[tuple[float, int]], float]:
    """(seconds, resident bytes of the process) every half second while `cmd` runs, and its wall time."""
    start, samples, page = time.perf_counter(), [], os.sysconf("SC_PAGE_SIZE")

    def sample(pid: int) -> None:
        try:
            with open(f"/proc/{pid}/statm") as f:
                samples.append((time.perf_counter() - start, int(f.read().split()[1]) * page))
        except OSError:
            pass

    _, seconds = run_sampled(cmd, sample, 0.5)
    return samples, seconds


if __name__ == "__main__":
    sys.exit(main())

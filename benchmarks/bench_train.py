"""Training lines per second of `loghi-ft train` against kraken's `ketos train`: same lines, same architecture, same run.

    python benchmarks/bench_train.py [--lines 32,160] [--repeats 3] [--threads 2] [--precision bf16] [--skip-kraken] [--gpu 0]

Both tools train kraken's default architecture (our `kraken` preset: kraken's spec in Loghi's spelling,
height 120) at batch size 16 on the same timeus-1858 training lines (cut once by `loghi-ft prepare
--height 120`), from scratch, without augmentation, with `--threads` torch threads and one data-loading
worker, for one epoch, then validate on the same 32 validation lines. Each tool runs twice, on the first
A and then the first B training lines (--lines A,B); the training rate is (B - A) lines over the
difference of the two runs' wall-clock times, so start-up, data preparation and validation, which the two
runs share, cancel out. The tools take turns --repeats times, and the figures are medians: the
machine's speed drifts by a third over minutes on shared hosts. Validation lines/s of ours comes from its
metrics.csv. kraken 7.1.1 is installed on first use into benchmarks/.venv-kraken (see bench_prepare.py).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import TIMEUS, install_kraken, timed  # noqa: E402

from loghi_ft.pages.listfile import Sample, read_list, write_list  # noqa: E402
from loghi_ft.model.vgsl import presets  # noqa: E402

VAL_LINES = 32
TRAIN_PAGES = 12  # enough pages for the largest run
VAL_PAGES = 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", default="32,160", help="training lines of the short and the long run (default: 32,160)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both tools (default: 2)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32", "auto"],
                        help="our precision (default: bf16; kraken runs at its default, fp32)")
    parser.add_argument("--gpu", default="-1", help="our device: -1 for the CPU (default), 0 for the first GPU")
    parser.add_argument("--skip-kraken", action="store_true", help="time loghi-ft only")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool, taking turns; medians (default: 3)")
    args = parser.parse_args()
    short, long = (int(n) for n in args.lines.split(","))
    print(f"{os.cpu_count()} cores, {args.threads} threads, load average before {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp = Path(tmp)
        train, val = prepare_lines(tmp, long)
        lists = {n: tmp / f"train{n}.txt" for n in (short, long)}
        for n, path in lists.items():
            write_list(path, train[:n])
        write_list(tmp / "val.txt", val)

        ketos = None if args.skip_kraken else install_kraken()
        rates: dict[str, list[float]] = {"loghi-ft": [], "kraken": []}
        # the two tools take turns, repeat after repeat: a machine that slows down for a while slows both
        for repeat in range(1, args.repeats + 1):
            seconds = {}
            for n, path in lists.items():
                out = tmp / f"ours{repeat}-{n}"
                cmd = [sys.executable, "-m", "loghi_ft", "train", "--train-list", str(path),
                       "--val-list", str(tmp / "val.txt"), "--spec", "kraken", "--output", str(out),
                       "--model-name", "bench", "--epochs", "1", "--batch-size", "16", "--no-augment",
                       "--threads", str(args.threads), "--workers", "1", "--precision", args.precision,
                       "--gpu", args.gpu, "--warmup-steps", "0"]
                seconds[n], cpu, _ = timed(cmd)
                row = list(csv.DictReader(open(out / "bench" / "metrics.csv", encoding="utf-8")))[-1]
                print(f"[{repeat}] loghi-ft train, {n} lines: {seconds[n]:.1f} s wall, {cpu:.1f} CPU s; its own figures: "
                      f"{float(row['train_lines_per_s']):.2f} training lines/s, "
                      f"{float(row['val_lines_per_s']):.1f} validation lines/s")
            rates["loghi-ft"].append((long - short) / (seconds[long] - seconds[short]))
            if ketos is None:
                continue
            for n in (short, long):
                out = tmp / f"kraken{repeat}-{n}"
                cmd = [str(ketos), "--device", "cpu", "--threads", str(args.threads), "--workers", "1",
                       "train", "-f", "path", "-B", "16", "-N", "1", "-q", "fixed", "--no-augment", "-s", kraken_spec(),
                       "-o", str(out), "-e", str(tmp / "kraken_val.txt")] + [str(s.path) for s in train[:n]]
                seconds[n], cpu, _ = timed(cmd)
                print(f"[{repeat}] kraken ketos train, {n} lines: {seconds[n]:.1f} s wall, {cpu:.1f} CPU s")
            rates["kraken"].append((long - short) / (seconds[long] - seconds[short]))
            print(f"[{repeat}] training lines/s (marginal, {long - short} lines): loghi-ft {rates['loghi-ft'][-1]:.2f}, "
                  f"kraken {rates['kraken'][-1]:.2f}, ratio {rates['loghi-ft'][-1] / rates['kraken'][-1]:.1f}x")
    ours_rate = statistics.median(rates["loghi-ft"])
    if ketos is None:
        print(f"loghi-ft: {ours_rate:.2f} training lines/s (median of {args.repeats}, marginal, {long - short} lines)")
        return 0
    theirs_rate = statistics.median(rates["kraken"])
    ratios = sorted(a / b for a, b in zip(rates["loghi-ft"], rates["kraken"]))
    print(f"training lines/s, median of {args.repeats}: loghi-ft {ours_rate:.2f}, kraken {theirs_rate:.2f}, "
          f"ratio {ours_rate / theirs_rate:.1f}x (per repeat {', '.join(f'{r:.1f}x' for r in ratios)}); "
          f"load average after {os.getloadavg()[0]:.1f}")
    return 0


def prepare_lines(tmp: Path, count: int) -> tuple[list[Sample], list[Sample]]:
    """Lines of timeus training and validation pages cut at height 120, with kraken's .gt.txt beside each image."""
    splits = [line.split("\t") for line in (TIMEUS / "splits.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    pages = [TIMEUS / s[0] for s in splits if s[2] == "train"][:TRAIN_PAGES] + \
            [TIMEUS / s[0] for s in splits if s[2] == "val"][:VAL_PAGES]
    out = tmp / "data"
    subprocess.run([sys.executable, "-m", "loghi_ft", "prepare", *map(str, pages), "--output", str(out), "--height", "120",
                    "--split-file", str(TIMEUS / "splits.tsv"), "--workers", "2"], check=True, capture_output=True)
    train = read_list(out / "training_all_train.txt")
    val = read_list(out / "training_all_val.txt")[:VAL_LINES]
    if len(train) < count:
        sys.exit(f"only {len(train)} training lines in {TRAIN_PAGES} pages; ask for fewer with --lines")
    for s in train + val:
        Path(s.path).with_suffix(".gt.txt").write_text(s.text, encoding="utf-8")
    (tmp / "kraken_val.txt").write_text("".join(f"{s.path}\n" for s in val), encoding="utf-8")
    return train, val


def kraken_spec() -> str:
    """kraken's own spelling of the `kraken` preset (its default spec), to be sure both train the same network."""
    ours = presets()["kraken"].split()
    assert ours[0] == "None,120,None,1" and "Rc3" in ours
    body = " ".join(ours[1:]).replace("Rc3", "S1(1x0)1,3").replace("Bl200", "Lbx200")
    return f"[1,120,0,1 {body}]"


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"benchmark took {time.perf_counter() - start:.0f} s")
    sys.exit(code)

"""Lines per second and peak memory of `loghi-ft prepare` against kraken's `ketos compile`, same pages, same run.

    python benchmarks/bench_prepare.py [--pages DIR] [--workers 2] [--repeats 1] [--skip-kraken] [--baseline DIR]

--baseline times the loghi_ft of another checkout (say `git worktree add /tmp/old <commit>`) in turns with this
one, so that a change is measured before and after under the same load.

kraken 7.1.1 is installed on first use into benchmarks/.venv-kraken (with the system site packages when
its pins allow, otherwise a plain virtual environment). Peak memory is the largest sum of the resident
memory of the command and all its child processes, sampled every 50 ms from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEUS = ROOT.parent / "shared" / "data" / "timeus-1858"
VENV = ROOT / "benchmarks" / ".venv-kraken"
KRAKEN = "kraken==7.1.1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, default=TIMEUS, help="folder of PAGE XML + images (default: timeus-1858)")
    parser.add_argument("--workers", type=int, default=2, help="processes for both tools (default: 2)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each tool; the median is reported")
    parser.add_argument("--skip-kraken", action="store_true", help="time loghi-ft only")
    parser.add_argument("--baseline", type=Path, help="checkout whose loghi_ft is timed too, in turns with this one")
    args = parser.parse_args()
    xmls = sorted(str(p) for p in args.pages.glob("*.xml"))
    print(f"{len(xmls)} pages in {args.pages}, {args.workers} workers, {os.cpu_count()} cores, "
          f"load average before {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        ours, baseline = [], []
        for i in range(args.repeats):
            ours.append(time_prepare("loghi-ft", ROOT, args, Path(tmp) / f"ours{i}"))
            if args.baseline:
                baseline.append(time_prepare("baseline", args.baseline.resolve(), args, Path(tmp) / f"baseline{i}"))
        ours_rate, ours_cpu, ours_peak = medians("loghi-ft", ours)
        if args.baseline:
            base_rate, base_cpu, _ = medians(f"baseline {args.baseline}", baseline)
            print(f"loghi-ft against baseline: {ours_rate / base_rate:.2f}x lines/s, "
                  f"{ours_cpu / base_cpu:.2f}x lines per CPU second")
        if args.skip_kraken:
            return 0

        ketos = install_kraken()
        theirs = []
        for i in range(args.repeats):
            arrow = Path(tmp) / f"kraken{i}.arrow"
            # --workers is an option of ketos itself in kraken 7, not of its compile subcommand
            cmd = [str(ketos), "--workers", str(args.workers), "compile", "-f", "xml", "-o", str(arrow)] + xmls
            seconds, cpu, peak = timed(cmd)
            lines = arrow_lines(arrow)
            theirs.append((lines / seconds, lines / cpu, peak))
            print(f"kraken ketos compile: {lines} lines in {seconds:.1f} s = {lines / seconds:.1f} lines/s; "
                  f"{cpu:.1f} CPU s = {lines / cpu:.1f} lines per CPU second; peak memory {peak / 2**20:.0f} MiB")
        theirs_rate, theirs_cpu = statistics.median(r[0] for r in theirs), statistics.median(r[1] for r in theirs)
    print(f"load average after {os.getloadavg()[0]:.1f}")
    # other work on a shared machine slows wall time; CPU time shows the work each tool itself does
    print(f"median lines per CPU second: loghi-ft {ours_cpu:.0f}, kraken {theirs_cpu:.1f}, "
          f"ratio {ours_cpu / theirs_cpu:.1f}x")
    print(f"median lines/s: loghi-ft {ours_rate:.0f}, kraken {theirs_rate:.1f}, ratio {ours_rate / theirs_rate:.1f}x; "
          f"peak memory loghi-ft {ours_peak / 2**20:.0f} MiB, kraken {max(r[2] for r in theirs) / 2**20:.0f} MiB")
    return 0


def time_prepare(label: str, checkout: Path, args: argparse.Namespace, out: Path) -> tuple[float, float, int]:
    """Lines/s, lines per CPU second and peak memory of one `prepare` by the loghi_ft of `checkout`."""
    split_file = args.pages / "splits.tsv"
    # run from the checkout: `python -m` puts the working folder first on the path, before the installed package
    cmd = [sys.executable, "-m", "loghi_ft", "prepare", str(args.pages.resolve()), "--output", str(out),
           "--workers", str(args.workers)]
    if split_file.exists():
        cmd += ["--split-file", str(split_file.resolve())]
    seconds, cpu, peak = timed(cmd, cwd=checkout)
    lines = json.loads((out / "prepare_report.json").read_text(encoding="utf-8"))["lines"]["written"]
    print(f"{label} prepare: {lines} lines in {seconds:.1f} s = {lines / seconds:.0f} lines/s; "
          f"{cpu:.1f} CPU s = {lines / cpu:.0f} lines per CPU second; peak memory {peak / 2**20:.0f} MiB")
    return lines / seconds, lines / cpu, peak


def medians(label: str, runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    """Median lines/s and lines per CPU second and the largest peak memory of `runs`, printed."""
    rate, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    peak = max(r[2] for r in runs)
    print(f"{label}: median {rate:.0f} lines/s, {cpu:.0f} lines per CPU second, peak {peak / 2**20:.0f} MiB")
    return rate, cpu, peak


def timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak summed resident memory (bytes) of `cmd` and its child processes."""
    peak, cpu = [0], {}

    def sample(pid: int) -> None:
        rss = 0
        for child, (child_rss, child_cpu) in tree(pid).items():
            rss += child_rss
            cpu[child] = max(cpu.get(child, 0.0), child_cpu)
        peak[0] = max(peak[0], rss)

    _, seconds = run_sampled(cmd, sample, 0.05, cwd)
    return seconds, sum(cpu.values()), peak[0]


def run_sampled(cmd: list[str], sample: Callable[[int], None], interval: float,
                cwd: Path | None = None) -> tuple[str, float]:
    """Run `cmd`, calling `sample(pid)` every `interval` seconds while it runs; its output and wall seconds.
    Exits with the end of the output if the command fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            sample(proc.pid)
            done.wait(interval)

    sampler = threading.Thread(target=loop, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd[:8])} ...\n{output[-3000:]}")
    return output, seconds


def tree(root: int) -> dict[int, tuple[int, float]]:
    """Resident bytes and CPU seconds so far of `root` and each of its descendants, read from /proc."""
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    parents, stats = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        stats[int(entry)] = (int(fields[21]) * page, (int(fields[11]) + int(fields[12])) / tick)
    found = {}
    for pid, stat in stats.items():
        p = pid
        while p in parents and p != root and p > 1:
            p = parents[p]
        if p == root:
            found[pid] = stat
    return found


def install_kraken() -> Path:
    """ketos from benchmarks/.venv-kraken, installing kraken 7.1.1 there on first use."""
    ketos = VENV / "bin" / "ketos"
    if ketos.exists():
        return ketos
    print(f"installing {KRAKEN} into {VENV} (first run only)")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    # reuse the installed torch when kraken accepts its version; otherwise pip installs the one kraken pins
    plan = subprocess.run(pip + ["--dry-run", "--report", "-", KRAKEN], capture_output=True, text=True)
    if '"name": "torch"' in plan.stdout:
        print("kraken pins another torch than the installed one: using a plain virtual environment")
        shutil.rmtree(VENV)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(pip + [KRAKEN], check=True)
    return ketos


def arrow_lines(arrow: Path) -> int:
    """Lines in a kraken arrow file, counted by the kraken environment's pyarrow."""
    code = "import sys, pyarrow as pa; print(pa.ipc.open_file(pa.memory_map(sys.argv[1])).read_all().num_rows)"
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", code, str(arrow)], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


if __name__ == "__main__":
    sys.exit(main())

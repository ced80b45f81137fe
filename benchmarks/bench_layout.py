"""Baseline F1, seconds per page and peak memory of `loghi-ft segment` and kraken 7.1.1's blla, same pages, same run.

    python benchmarks/bench_layout.py [--set htromance-test|iforal|timeus-test|samples-test] [--model DIR] [--limit N]
        [--repeats 1] [--tolerance 10] [--threads N] [--skip-kraken] [--recognizer MODEL]

Both tools see only copies of the pages' images (no ground truth) in one temporary folder and segment all of them
in one process each, so loading the model counts once: ours as `loghi-ft segment --model M IMAGES --output OUT`,
kraken's as `kraken --threads N -d cpu -i IMG OUT.xml ... -x segment -bl` (one `-i` pair per page; `-x` before
the subcommand selects PAGE XML, `-bl` after it the baseline segmenter with the blla model kraken ships).
Both PAGE outputs are read by read_layout and scored against the ground truth by
loghi_ft.evaluation.layout_metrics (baselines summed over pages, `--tolerance` page pixels). Seconds per page are
wall-clock seconds of the whole command over the pages (the median of `--repeats` runs, the tools taking turns);
peak memory is the largest summed resident memory of the command and its children (bench_prepare.timed).
kraken 7.1.1 is installed on first use into benchmarks/.venv-kraken (bench_prepare.install_kraken).

--recognizer MODEL adds the end-to-end figure, as `loghi-ft segeval` computes it (evaluation/layout_eval.py
read_both): the recogniser reads the lines each tool found and the ground-truth lines; each page's text is its
lines' readings in reading order (pages/layout.py reading_order, for the truth and for both tools), one per line,
scored by character error rate against the ground-truth text in the same order; and again from only the found
lines inside the area the ground truth transcribes (read_both's docstring says why and how).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import ROOT, install_kraken, timed  # noqa: E402

from loghi_ft.errors import UserError  # noqa: E402
from loghi_ft.evaluation.layout_eval import lines_inside, read_both  # noqa: E402
from loghi_ft.evaluation.layout_metrics import BaselineCounts, LayoutEvaluation  # noqa: E402
from loghi_ft.pages.layout import Layout, read_layout, reading_order  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODEL = ROOT / "models" / "layout-base"
# page set -> (folder, split of its splits.tsv; None: every page of the folder)
SETS = {"htromance-test": (DATA / "htromance-fr", "test"), "iforal": (DATA / "iforal-sample", None),
        "timeus-test": (DATA / "timeus-1858", "test"),
        # the held-out charter of finetune.sh's samples (2 pages of iforal): a layout fine-tuned on samples/train
        "samples-test": (ROOT / "samples" / "test", None)}


@dataclass
class BenchPage:
    key: str            # p000, p001, ...: the name of its image copy and of each tool's PAGE file
    truth: Layout       # the ground truth, read from the set's PAGE file
    image: Path         # the copy of its image that the tools see


@dataclass
class ToolRun:
    label: str
    output: Path        # the PAGE files of its first run, OUTPUT/<key>.xml
    seconds: list[float]
    peaks: list[int]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="htromance-test", choices=sorted(SETS), help="pages (default: htromance-test)")
    parser.add_argument("--model", type=Path, default=MODEL, help=f"our layout model (default: {MODEL})")
    parser.add_argument("--limit", type=int, help="only the first N pages of the set")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each tool; the median time is reported")
    parser.add_argument("--tolerance", type=float, default=10.0, help="baseline tolerance in page pixels (10)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads for both tools (default: all cores)")
    parser.add_argument("--skip-kraken", action="store_true", help="run and score loghi-ft only")
    parser.add_argument("--recognizer", type=Path, help="recognition model: also the end-to-end CER")
    args = parser.parse_args()
    if not args.model.exists():
        sys.exit(f"no layout model at {args.model}: give one with --model DIR")
    # torch reads it in both tools; kraken also gets --threads, since its own default is 1
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    kraken = None if args.skip_kraken else install_kraken().with_name("kraken")

    with tempfile.TemporaryDirectory(prefix="bench_layout_") as tmp:
        tmp = Path(tmp)
        pages = stage(page_set(args.set)[:args.limit], tmp / "images")
        print(f"{args.set}: {len(pages)} pages, {sum(len(p.truth.lines) for p in pages)} true lines; "
              f"{os.cpu_count()} cores, {args.threads} threads; load average before {os.getloadavg()[0]:.1f}")
        runs = [ToolRun("loghi-ft", tmp / "ours0", [], []), ToolRun("kraken blla", tmp / "kraken0", [], [])]
        for i in range(args.repeats):
            time_run(runs[0], segment_ours(args.model, tmp / "images", tmp / f"ours{i}"), len(pages))
            if kraken:
                time_run(runs[1], segment_kraken(kraken, pages, tmp / f"kraken{i}", args.threads), len(pages))
        runs = [r for r in runs if r.seconds]
        print(f"load average after {os.getloadavg()[0]:.1f}")
        found = {run.label: read_outputs(pages, run.output) for run in runs}
        print_table(runs, {label: score(pages, layouts, args.tolerance) for label, (layouts, _) in found.items()},
                    {label: score(pages, layouts, args.tolerance, inside=True)
                     for label, (layouts, _) in found.items()},
                    {label: failed for label, (_, failed) in found.items()}, len(pages))
        if args.recognizer:
            print_cer(end_to_end(pages, args.recognizer, {label: layouts for label, (layouts, _) in found.items()}))
    return 0


def page_set(name: str) -> list[Path]:
    """The ground-truth PAGE files of a page set, in a fixed order."""
    folder, split = SETS[name]
    if split is None:
        return sorted(folder.glob("*/*.xml"))
    with open(folder / "splits.tsv", newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [folder / row["xml"] for row in rows if row["split"] == split]


def stage(truths: list[Path], images: Path) -> list[BenchPage]:
    """Read each page's truth and copy its image alone to IMAGES/pNNN.ext, where no tool can see the truth."""
    images.mkdir(parents=True)
    pages = []
    for i, xml in enumerate(truths):
        truth = read_layout(xml)
        image = images / f"p{i:03d}{truth.image_path.suffix.lower()}"
        shutil.copyfile(truth.image_path, image)
        pages.append(BenchPage(image.stem, truth, image))
    return pages


def segment_ours(model: Path, images: Path, output: Path) -> list[str]:
    # run from the checkout: `python -m` puts it first on the path, before an installed loghi_ft
    return [sys.executable, "-m", "loghi_ft", "segment", "--model", str(model.resolve()), str(images),
            "--output", str(output)]


def segment_kraken(kraken: Path, pages: list[BenchPage], output: Path, threads: int) -> list[str]:
    output.mkdir()
    pairs = [word for page in pages for word in ("-i", str(page.image), str(output / f"{page.key}.xml"))]
    return [str(kraken), "--threads", str(threads), "-d", "cpu", *pairs, "-x", "segment", "-bl"]


def time_run(run: ToolRun, cmd: list[str], pages: int) -> None:
    """Run `cmd`, adding its seconds per page and peak memory to `run`."""
    seconds, _, peak = timed(cmd, cwd=ROOT)
    run.seconds.append(seconds / pages)
    run.peaks.append(peak)
    print(f"{run.label}: {seconds:.1f} s for {pages} pages = {seconds / pages:.2f} s/page, "
          f"peak memory {peak / 2**20:.0f} MiB")


def read_outputs(pages: list[BenchPage], output: Path) -> tuple[list[Layout], list[str]]:
    """Each page's layout as a tool wrote it to OUTPUT/<key>.xml; a page without a readable file gets an empty
    layout (nothing found) and a line in the list of failures."""
    layouts, failed = [], []
    for page in pages:
        xml = output / f"{page.key}.xml"
        try:
            if not xml.exists():
                raise UserError(f"{xml}: not written")
            layouts.append(read_layout(xml))
        except UserError as exc:
            failed.append(f"{page.truth.xml_path}: {exc}")
            layouts.append(Layout(page.image, page.truth.width, page.truth.height, xml_path=xml))
    return layouts, failed


def score(pages: list[BenchPage], found: list[Layout], tolerance: float, inside: bool = False) -> BaselineCounts:
    """Baseline counts of the layouts found against the truth, summed over pages; `inside`: of the lines found in
    the area the truth transcribes only (layout_eval.transcribed_area: text the annotators left out is not counted
    against precision)."""
    evaluation = LayoutEvaluation(tolerance)
    for page, layout in zip(pages, found, strict=True):
        if inside:
            layout = lines_inside(page.truth, layout)
        evaluation.add(page.truth, layout)
    return evaluation.baselines


def print_table(runs: list[ToolRun], scores: dict[str, BaselineCounts], inside: dict[str, BaselineCounts],
                failed: dict[str, list[str]], pages: int) -> None:
    """The side-by-side table (markdown), then the ratios and any page a tool failed; `inside`: the scores of the
    lines found in the transcribed area."""
    rows = {"pages scored": lambda r: f"{pages - len(failed[r.label])} of {pages}",
            "lines found": lambda r: str(scores[r.label].predicted),
            "baseline precision": lambda r: f"{scores[r.label].precision:.3f}",
            "baseline recall": lambda r: f"{scores[r.label].recall:.3f}",
            "baseline F1": lambda r: f"{scores[r.label].f1:.3f}",
            "found outside the transcribed area": lambda r: str(scores[r.label].predicted - inside[r.label].predicted),
            "inside it: precision, F1": lambda r: f"{inside[r.label].precision:.3f}, {inside[r.label].f1:.3f}",
            f"s/page (wall, median of {len(runs[0].seconds)})": lambda r: f"{statistics.median(r.seconds):.2f}",
            "peak memory": lambda r: f"{max(r.peaks) / 2**20:.0f} MiB"}
    print("\n| | " + " | ".join(r.label for r in runs) + " |\n|---|" + "---|" * len(runs))
    for name, cell in rows.items():
        print(f"| {name} | " + " | ".join(cell(r) for r in runs) + " |")
    if len(runs) == 2:
        ours, theirs = runs
        speed = statistics.median(theirs.seconds) / statistics.median(ours.seconds)
        print(f"\nloghi-ft faster per page by {speed:.1f}x; "
              f"peak memory loghi-ft/kraken {max(ours.peaks) / max(theirs.peaks):.2f}")
    for label, lines in failed.items():
        for line in lines:
            print(f"{label} failed: {line}")


def end_to_end(pages: list[BenchPage], recognizer: Path, found: dict[str, list[Layout]]) -> dict[str, float]:
    """Page CER of the text read by `recognizer` from each tool's lines and from the ground-truth lines, as
    `loghi-ft segeval` computes it (every text in one reading order)."""
    cers = {}
    for label, layouts in found.items():
        pairs = [(page.truth, reading_order(layout)) for page, layout in zip(pages, layouts, strict=True)]
        reading = read_both(pairs, recognizer, gpu="-1", precision="auto", batch_size=32,
                            log=lambda m: print(m, file=sys.stderr))
        cers[f"{label} lines"], cers["ground-truth lines"] = reading.segmented, reading.truth_lines
        cers[f"{label} lines in the transcribed area ({reading.outside} outside)"] = reading.transcribed
    return cers


def print_cer(cers: dict[str, float]) -> None:
    reference = cers["ground-truth lines"]
    print("\n| end to end: page CER read from | CER | against ground-truth lines |\n|---|---|---|")
    for label in ["ground-truth lines"] + [k for k in cers if k != "ground-truth lines"]:
        ratio = f"{cers[label] / reference:.2f}x" if reference else "-"
        print(f"| {label} | {100 * cers[label]:.2f}% | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())

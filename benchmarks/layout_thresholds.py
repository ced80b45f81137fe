"""Baseline F1 of a layout model's validation pages for each extraction threshold: how MIN_BASELINE and MIN_CONF
(loghi_ft/layout/extract.py) were chosen.

    python benchmarks/layout_thresholds.py --model DIR --pages VAL.txt [--shortest 12,24,40,56,80] [--conf 0.6,0.7,0.8]
                                           [--threshold 0.5]

VAL.txt lists PAGE files, one per line (scripts/train-base-layout.sh writes WORK/val.txt): choose on validation
pages, never on test pages. Each page's probabilities are computed once; then, for every pair, the baselines are
traced and filtered by `extract`'s own function (kept_baselines) and scored against the page's own baselines
(Transkribus scheme, 10 page pixels, summed over pages), overall and per collection (the folder above the page's
manuscript folders).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

from loghi_ft.evaluation.layout_metrics import BaselineCounts, baseline_counts
from loghi_ft.layout.extract import kept_baselines, page_points
from loghi_ft.layout.net import BASELINE
from loghi_ft.layout.segment import open_layout_model, page_probabilities
from loghi_ft.pages.layout import read_layout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="layout model folder")
    parser.add_argument("--pages", type=Path, required=True, help="list file of validation PAGE files")
    parser.add_argument("--shortest", default="12,24,40,56,80", help="MIN_BASELINE values (at a 1024-pixel page)")
    parser.add_argument("--conf", default="0.6,0.7,0.8", help="MIN_CONF values")
    parser.add_argument("--threshold", default="0.5", help="baseline probabilities above it are traced (extract's "
                        "threshold)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                        help="the shared data folder, to name each page's collection (default: ../shared/data)")
    args = parser.parse_args()
    model, device, autocast = open_layout_model(args.model, "-1", "auto")
    pages = []
    for line in args.pages.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        truth = read_layout(line.strip())
        probs, scale, _ = page_probabilities(model, truth.image_path, device, autocast)
        path = Path(line.strip()).resolve()
        source = path.relative_to(args.data.resolve()).parts[0] if path.is_relative_to(args.data.resolve()) else "-"
        pages.append((source, [ln.baseline for ln in truth.lines], probs[BASELINE], scale))
    print(f"{len(pages)} pages, model {args.model}")
    for threshold, shortest, conf in itertools.product([float(v) for v in args.threshold.split(",")],
                                                       [int(v) for v in args.shortest.split(",")],
                                                       [float(v) for v in args.conf.split(",")]):
        counts: dict[str, BaselineCounts] = defaultdict(BaselineCounts)
        for source, truth, baseline, scale in pages:
            found = [page_points(trace, scale) for trace, _, _ in
                     kept_baselines(baseline, model.info.size, threshold, shortest, conf)]
            counts[source] = counts[source] + baseline_counts(truth, found)
        total = sum(counts.values(), BaselineCounts())
        each = ", ".join(f"{k} {c.f1:.3f}" for k, c in sorted(counts.items()))
        print(f"threshold {threshold:.2f} MIN_BASELINE {shortest:3} MIN_CONF {conf:.2f}: F1 {total.f1:.3f} "
              f"(P {total.precision:.3f}, R {total.recall:.3f}); {each}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

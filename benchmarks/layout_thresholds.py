"""Baseline F1 of a layout model's validation pages for each extraction threshold: how MIN_BASELINE and MIN_CONF
(loghi_ft/layout/extract.py) were chosen.

    python benchmarks/layout_thresholds.py --model DIR --pages VAL.txt [--shortest 12,24,40,56,80] [--conf 0.6,0.7,0.8]

VAL.txt lists PAGE files, one per line (scripts/train-base-layout.sh writes WORK/val.txt): choose on validation
pages, never on test pages. Each page's probabilities are computed once; then, for every pair, the baselines are
traced and filtered as `extract` does and scored against the page's own baselines (Transkribus scheme, 10 page
pixels, summed over pages), overall and per collection (the folder above the page's manuscript folders).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import torch

from loghi_ft.evaluation.layout_metrics import BaselineCounts, baseline_counts
from loghi_ft.layout import extract as ex
from loghi_ft.layout.net import probabilities
from loghi_ft.layout.segment import open_layout_model
from loghi_ft.pages.images import load_page_image
from loghi_ft.pages.layout import read_layout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="layout model folder")
    parser.add_argument("--pages", type=Path, required=True, help="list file of validation PAGE files")
    parser.add_argument("--shortest", default="12,24,40,56,80", help="MIN_BASELINE values (at a 1024-pixel page)")
    parser.add_argument("--conf", default="0.6,0.7,0.8", help="MIN_CONF values")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                        help="the shared data folder, to name each page's collection (default: ../shared/data)")
    args = parser.parse_args()
    model, _, autocast = open_layout_model(args.model, "-1", "auto")
    info = model.info
    pages = []
    for line in args.pages.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        truth = read_layout(line.strip())
        image = load_page_image(truth.image_path, max_side=info.size)
        scale = info.size / max(image.width, image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        pixels = image.pixels if (image.pixels.shape[1], image.pixels.shape[0]) == size else \
            cv2.resize(image.pixels, size, interpolation=cv2.INTER_AREA)
        with torch.no_grad(), autocast:
            probs = probabilities(model(torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div_(255)), info)[0]
        path = Path(line.strip()).resolve()
        source = path.relative_to(args.data.resolve()).parts[0] if path.is_relative_to(args.data.resolve()) else "-"
        pages.append((source, [ln.baseline for ln in truth.lines], probs[ex.BASELINE], scale))
    print(f"{len(pages)} pages, model {args.model}")
    for shortest, conf in itertools.product([int(v) for v in args.shortest.split(",")],
                                            [float(v) for v in args.conf.split(",")]):
        counts: dict[str, BaselineCounts] = defaultdict(BaselineCounts)
        for source, truth, baseline, scale in pages:
            found = [ex._page(trace, scale) for trace, px in
                     ex.trace_baselines(baseline > 0.5, max(3, round(shortest * info.size / 1024)))
                     if float(baseline[px[:, 0], px[:, 1]].mean()) >= conf]
            counts[source] = counts[source] + baseline_counts(truth, found)
        total = sum(counts.values(), BaselineCounts())
        each = ", ".join(f"{k} {c.f1:.3f}" for k, c in sorted(counts.items()))
        print(f"MIN_BASELINE {shortest:3} MIN_CONF {conf:.2f}: F1 {total.f1:.3f} (P {total.precision:.3f}, "
              f"R {total.recall:.3f}); {each}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Baseline F1 of the lines a layout model finds, for each gutter setting: how GUTTER_LINES and GUTTER_BAND
(loghi_ft/layout/extract.py split_at_gutters) were chosen.

    python benchmarks/layout_gutters.py --model DIR --pages VAL.txt [--pages OTHER.txt ...]
        [--settings 0/0,3/0.6,4/0.4,5/0.4,6/0.6]

Each list file names PAGE files, one per line. Each page is segmented as `loghi-ft segment` does (enlarged where
its lines are close together), its probabilities kept; then, for every LINES/BAND pair (0/0: no cutting), the
page's lines are extracted with lines cut at the gutters so defined and scored against its own baselines
(Transkribus scheme, 10 page pixels, summed over the pages of each list), over the whole page and over the lines
found inside the transcribed area (as `segeval` reports both). Pages without columns (the validation pages of
timeus-1858 and htromance-fr) say what a setting costs where there is no gutter to find: it should cut nothing
there; pages with columns (iForal's charters) what it gains.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

import loghi_ft.layout.extract as extraction
from loghi_ft.evaluation.layout_eval import lines_inside
from loghi_ft.evaluation.layout_metrics import BaselineCounts, baseline_counts
from loghi_ft.layout.segment import model_pixels, open_layout_model, page_probabilities, segment_image
from loghi_ft.pages.layout import Layout, read_layout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="layout model folder")
    parser.add_argument("--pages", type=Path, action="append", required=True,
                        help="list file of PAGE files (repeat for several sets, each scored apart)")
    parser.add_argument("--settings", default="0/0,3/0.6,4/0.4,5/0.4,6/0.6",
                        help="LINES/BAND pairs, comma-separated (0/0: lines are not cut)")
    args = parser.parse_args()
    settings = [(int(lines), float(band)) for lines, band in (pair.split("/") for pair in args.settings.split(","))]
    model, device, autocast = open_layout_model(args.model, "-1", "auto")
    for listed in args.pages:
        pages = []
        for line in listed.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            truth = read_layout(Path(line.strip()))
            size = segment_image(model, Path(truth.image_path), device, autocast).size
            probs, scale, image = page_probabilities(model, Path(truth.image_path), device, autocast, size=size)
            gray = cv2.cvtColor(model_pixels(image, probs.shape[1:]), cv2.COLOR_RGB2GRAY)
            pages.append((truth, probs, scale, image, gray))
        print(f"{listed}: {len(pages)} pages, model {args.model}")
        for lines, band in settings:
            extraction.GUTTER_LINES, extraction.GUTTER_BAND = lines, band
            whole, inside, cut, pages_cut = BaselineCounts(), BaselineCounts(), 0, 0
            for truth, probs, scale, image, gray in pages:
                found = extraction.extract(probs, model.info, scale, gray=gray if lines else None)
                layout = Layout(truth.image_path, image.width, image.height, found.regions, found.lines)
                true = [x.baseline for x in truth.lines]
                whole = whole + baseline_counts(true, [x.baseline for x in found.lines])
                inside = inside + baseline_counts(true, [x.baseline for x in lines_inside(truth, layout).lines])
                cut, pages_cut = cut + found.cut, pages_cut + (found.cut > 0)
            label = f"lines {lines} band {band:.2f}" if lines else "not cut"
            print(f"  {label}: F1 {whole.f1:.4f} (P {whole.precision:.3f}, R {whole.recall:.3f}), inside the "
                  f"transcribed area F1 {inside.f1:.4f}; {cut} lines cut on {pages_cut} pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())

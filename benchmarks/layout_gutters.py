"""Baseline F1 of the lines a layout model finds, for each setting of the rules that cut found lines: how
GUTTER_LINES and GUTTER_BAND (loghi_ft/layout/extract.py split_at_gutters) and LEADER_WIDTH and LEADER_FLAT
(split_at_leaders) were chosen.

    python benchmarks/layout_gutters.py --model DIR --pages VAL.txt [--pages OTHER.txt ...]
        [--settings 0/0,3/0.6,4/0.4,5/0.4,6/0.6] [--leaders 0/0,2/0.06,2/0.08,2/0.09,2/0.10,2/0.12,1.5/0.09,3/0.09]

Each list file names PAGE files, one per line. Each page is segmented as `loghi-ft segment` does (enlarged where
its lines are close together), its probabilities kept; then, for every gutter setting LINES/BAND (0/0: no
cutting; lines are not cut at leaders in this sweep) and every leader setting WIDTH/FLAT (0/0: no cutting;
gutters at their shipped setting), the page's lines are extracted and scored against its own baselines
(Transkribus scheme, 10 page pixels, summed over the pages of each list), over the whole page and over the lines
found inside the transcribed area (as `segeval` reports both). Pages without columns (the validation pages of
timeus-1858 and htromance-fr) say what a gutter setting costs where there is no gutter to find: it should cut
nothing there; pages with columns (iForal's charters) what it gains. Leaders: the tables of htromance-fr's
training pages (label, dots, value) what cutting gains, the val pages what it costs.
"""

from __future__ import annotations

import argparse
import math
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
                        help="gutters: LINES/BAND pairs, comma-separated (0/0: lines are not cut; '': none)")
    parser.add_argument("--leaders", default="0/0,2/0.06,2/0.08,2/0.09,2/0.10,2/0.12,1.5/0.09,3/0.09",
                        help="dot leaders: WIDTH/FLAT pairs, comma-separated (0/0: lines are not cut; '': none)")
    args = parser.parse_args()
    shipped = dict(GUTTER_LINES=extraction.GUTTER_LINES, GUTTER_BAND=extraction.GUTTER_BAND,
                   LEADER_WIDTH=extraction.LEADER_WIDTH, LEADER_FLAT=extraction.LEADER_FLAT)
    settings = []       # (label, the constants it sets, whether lines are cut at all)
    for pair in filter(None, args.settings.split(",")):
        count, share = pair.split("/")
        lines, band = int(count), float(share)
        settings.append((f"gutters: lines {lines} band {band:.2f}" if lines else "not cut",
                         dict(shipped, GUTTER_LINES=lines, GUTTER_BAND=band, LEADER_WIDTH=math.inf), lines > 0))
    for pair in filter(None, args.leaders.split(",")):
        width, flat = (float(v) for v in pair.split("/"))
        settings.append((f"leaders: width {width:g} flat {flat:.2f}" if width else "gutters only",
                         dict(shipped, LEADER_WIDTH=width or math.inf, LEADER_FLAT=flat), True))
    model, device, autocast = open_layout_model(args.model, "-1", "auto")
    for listed in args.pages:
        for name, value in shipped.items():    # pages are segmented as shipped
            setattr(extraction, name, value)
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
        for label, constants, cutting in settings:
            for name, value in constants.items():
                setattr(extraction, name, value)
            whole, inside, cut, pages_cut = BaselineCounts(), BaselineCounts(), 0, 0
            for truth, probs, scale, image, gray in pages:
                found = extraction.extract(probs, model.info, scale, gray=gray if cutting else None)
                layout = Layout(truth.image_path, image.width, image.height, found.regions, found.lines)
                true = [x.baseline for x in truth.lines]
                whole = whole + baseline_counts(true, [x.baseline for x in found.lines])
                inside = inside + baseline_counts(true, [x.baseline for x in lines_inside(truth, layout).lines])
                cut, pages_cut = cut + found.cut + found.leaders, pages_cut + (found.cut + found.leaders > 0)
            print(f"  {label}: F1 {whole.f1:.4f} (P {whole.precision:.3f}, R {whole.recall:.3f}), inside the "
                  f"transcribed area F1 {inside.f1:.4f}; {cut} lines cut on {pages_cut} pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())

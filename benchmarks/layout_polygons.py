"""Page CER of the lines a layout model finds on validation pages, for each line polygon setting: how UP and DOWN
(loghi_ft/layout/extract.py) were chosen.

    python benchmarks/layout_polygons.py --model DIR --recognizer MODEL --pages VAL.txt
        [--settings 0.85/0.35,0.7/0.3,0.6/0.3]

VAL.txt lists PAGE files, one per line: choose on validation pages, never on test pages. Each page's probabilities
are computed once; then, for every UP/DOWN pair (the share of the gap to the baseline above and below that a line
polygon may reach), `extract` makes the page's lines and the recogniser reads them, and the text is scored as
`loghi-ft segeval --recognizer` scores it (evaluation/layout_eval.py read_both: every text in reading order, page
CER against the ground-truth text), beside the CER read from the ground-truth lines. Baselines, and so baseline F1,
do not depend on these settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loghi_ft.evaluation.layout_eval import read_both
from loghi_ft.layout.extract import extract
from loghi_ft.layout.segment import open_layout_model, page_probabilities
from loghi_ft.pages.layout import Layout, read_layout, reading_order


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="layout model folder")
    parser.add_argument("--recognizer", type=Path, required=True, help="recognition model that reads the lines")
    parser.add_argument("--pages", type=Path, required=True, help="list file of validation PAGE files")
    parser.add_argument("--settings", default="0.85/0.35,0.7/0.3,0.6/0.3", help="UP/DOWN pairs, comma-separated")
    args = parser.parse_args()
    settings = [tuple(float(v) for v in pair.split("/")) for pair in args.settings.split(",")]
    model, device, autocast = open_layout_model(args.model, "-1", "auto")
    pages = []
    for line in args.pages.read_text(encoding="utf-8").splitlines():
        if line.strip():
            truth = read_layout(Path(line.strip()))
            probs, scale, image = page_probabilities(model, Path(truth.image_path), device, autocast)
            pages.append((truth, probs, scale, image))
    print(f"{len(pages)} pages, layout model {args.model}, recogniser {args.recognizer}")
    for up, down in settings:
        found = []
        for truth, probs, scale, image in pages:
            lines = extract(probs, model.info, scale, reach=(up, down))
            found.append((truth, reading_order(Layout(truth.image_path, image.width, image.height, lines.regions,
                                                      lines.lines))))
        reading = read_both(found, args.recognizer, "-1", "auto", 32, log=lambda _: None)
        print(f"UP {up:.2f} DOWN {down:.2f}: page CER from the found lines {reading.segmented:.2%}, from the "
              f"ground-truth lines {reading.truth_lines:.2%} ({reading.segmented / reading.truth_lines:.2f}x)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

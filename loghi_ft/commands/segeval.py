"""Measure a layout model on ground-truth pages: baseline precision/recall/F1 (Transkribus scheme), region IoU and
COCO AP per class, seconds per page; with --recognizer, the page CER read from the lines it finds beside the CER
read from the ground-truth lines.

GT: PAGE XML or ALTO files or folders, with their images. Each page's image is segmented as a bare scan (its lines
are not shown to the model). Exit status 0 when every page was scored, 3 when some could not be (each named).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from loghi_ft.settings import setting


@dataclass
class Settings:
    inputs: list[Path] = setting([], "ground-truth PAGE XML or ALTO files or folders", positional=True,
                                 required=True, metavar="GT")
    model: Path | None = setting(None, "layout model folder (or its training output folder)")
    recognizer: Path | None = setting(None, "line recogniser: also compare the text read from the found lines with "
                                      "the text read from the ground-truth lines")
    tolerance: float = setting(10.0, "a baseline point within this many page pixels of the truth scores fully "
                               "(falls to 0 at 3x)")
    batch_size: int = setting(32, "lines per batch of the recogniser")
    gpu: str = setting("-1", "-1 for the CPU, 0 for the first GPU")
    precision: str = setting("auto", "auto: bf16 where the GPU or CPU computes it natively, else fp32",
                             choices=("auto", "fp32", "bf16"))
    json: Path | None = setting(None, "also write the figures to this JSON file")


def run(s: Settings) -> int:
    from loghi_ft.atomic import write_atomic
    from loghi_ft.errors import PARTIAL, UserError
    from loghi_ft.evaluation.layout_eval import evaluate_layout
    from loghi_ft.layout.train import page_files

    if s.model is None:
        raise UserError("segeval: give the layout model: --model DIR")
    report = evaluate_layout(page_files(s.inputs), s.model, tolerance=s.tolerance, recognizer_path=s.recognizer,
                             gpu=s.gpu, precision=s.precision, batch_size=s.batch_size,
                             log=lambda m: print(f"loghi-ft: {m}", file=sys.stderr))
    print(report.text())
    if s.json:
        write_atomic(s.json, (json.dumps(asdict(report), indent=1) + "\n").encode("utf-8"))
    return PARTIAL if report.skipped else 0

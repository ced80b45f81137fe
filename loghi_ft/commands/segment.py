"""Find the regions and lines of pages with a layout model and write them as PAGE XML 2019 (regions, lines with
polygon and baseline, reading order).

INPUT: folders, images (jpg, png, tif, ...) or PAGE/ALTO files. A bare image gets a new PAGE file; a page without
lines gets the model's; a page with lines keeps them unless --redo. Results go under --output, mirroring the input
tree (a bare image a.jpg -> OUTPUT/a.xml). Reading order: regions in columns left to right, each top to bottom
(a region across columns first); lines top to bottom within their region, side by side left to right.
Exit status: 0 when every page was done, 3 when some could not be (each named), 1 on an error that stopped the run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from loghi_ft.settings import setting


@dataclass
class Settings:
    inputs: list[Path] = setting([], "folders, images or PAGE XML files", positional=True, required=True,
                                 metavar="INPUT")
    model: Path | None = setting(None, "layout model folder (or its training output folder)")
    output: Path | None = setting(None, "folder for the PAGE XML, mirroring the input tree")
    redo: bool = setting(False, "replace the lines of pages that have some (default: keep them)")
    gpu: str = setting("-1", "-1 for the CPU, 0 for the first GPU")
    precision: str = setting("auto", "auto: bf16 where the GPU or CPU computes it natively, else fp32",
                             choices=("auto", "fp32", "bf16"))


def run(s: Settings) -> int:
    from loghi_ft.errors import PARTIAL, UserError
    from loghi_ft.layout.segment import run_segment

    if s.model is None or s.output is None:
        raise UserError("segment: give the layout model (--model DIR) and where the pages go (--output DIR)")
    done = run_segment(s.inputs, s.model, s.output, redo=s.redo, gpu=s.gpu, precision=s.precision,
                       log=lambda m: print(f"loghi-ft: {m}", file=sys.stderr))
    print(f"segment: {done.text()}")
    return PARTIAL if done.failed else 0

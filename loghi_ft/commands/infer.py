"""Recognise the lines of PAGE XML pages with a model and write the text into the XML (or a Loghi results file).

INPUT: folders (PAGE XML beside its images or in page/), PAGE/ALTO files, or a Loghi list file of line
images; with --layout-model also bare images (jpg, png, tif, ...), segmented first (then OUTPUT/<list name>.results.txt gets `path<TAB>confidence<TAB>text`). Pages go to --output,
mirroring the input tree, or back into the input files with --in-place. A page already written by the same
model is skipped unless --overwrite; each page is written whole or not at all. --text writes each page's plain
text beside it (3.xml -> 3.txt; see `loghi-ft text`).

A line that cannot be recognised (no Coords, too few points, a polygon outside the image) is written with no
text and confidence 0, so no old transcription passes for a reading, and is listed with its file and id; a line
without an id of its own (none, or one used twice) cannot be addressed and keeps what it had, listed too.
Exit status: 0 when every page and line was done (now or by an earlier run of the same model); 3 when the run
finished but skipped pages (image missing, unreadable XML, not writable) or lines, each listed and counted in
the last line; 1 for an error that stopped the run, 2 for a usage error, 130 after Ctrl+C.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from loghi_ft.commands.common import RecognitionSettings
from loghi_ft.settings import setting


@dataclass
class Settings(RecognitionSettings):
    inputs: list[Path] = setting([], "PAGE XML folders or files, or a list file", positional=True, required=True,
                                 metavar="INPUT")
    output: Path | None = setting(None, "folder for the recognised pages, mirroring the input tree")
    in_place: bool = setting(False, "write the text into the input files themselves (instead of --output)")
    words: bool = setting(False, "also write Word elements with Coords and confidence")
    text: bool = setting(False, "also write each page's plain text beside it, in reading order: 3.xml -> 3.txt")
    overwrite: bool = setting(False, "redo pages already written by this model")
    shard: str = setting("1/1", "K/N: do only the K-th of N shares of the pages")
    layout_model: Path | None = setting(None, "layout model: bare images and pages without lines are segmented "
                                        "first (see `loghi-ft segment`); empty: pages must have lines")
    redo_layout: bool = setting(False, "with --layout-model, replace the lines of pages that have some")


def run(s: Settings) -> int:
    from loghi_ft.errors import PARTIAL, UserError
    from loghi_ft.inference.pages import parse_shard
    from loghi_ft.inference.recognise import run_inference

    if s.model is None:
        raise UserError("infer: give the model: --model DIR (or a .onnx file)")
    if (s.output is None) == (not s.in_place):
        raise UserError("infer: give one of --output DIR (copies of the pages) or --in-place (the pages themselves)")
    s.check()
    summary = run_inference(s.inputs, s.model, None if s.in_place else s.output,
                            batch_size=s.batch_size, gpu=s.gpu, beam_width=s.beam_width,
                            overwrite=s.overwrite, shard=parse_shard(s.shard), workers=s.workers,
                            words=s.words, lm=s.lm, lm_weight=s.lm_weight, precision=s.precision, text=s.text,
                            layout_model=s.layout_model, redo_layout=s.redo_layout,
                            log=lambda m: print(f"loghi-ft: {m}", file=sys.stderr))
    print(f"infer: {summary.text()}")
    return 0 if summary.complete else PARTIAL

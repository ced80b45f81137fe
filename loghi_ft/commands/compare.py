"""Compare models line by line against ground truth in one self-contained HTML report.

Each --pred folder holds the pages one model wrote (infer --output); pages are matched to the ground truth
by relative path, lines by id. The report has a summary table (CER/WER per model with 95% intervals),
then every line: its image, the ground truth and each model's reading with the differences marked,
filterable to lines where the models disagree or all fail, and sortable by CER.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from loghi_ft.settings import setting


@dataclass
class Settings:
    gt: Path | None = setting(None, "folder of ground-truth PAGE XML with its images", required=True)
    pred: list[Path] = setting([], "folder of one model's predicted PAGE XML; give --pred once per model",
                               repeat=True, required=True)
    name: list[str] = setting([], "display name of each --pred, in the same order (default: folder names)",
                              repeat=True)
    html: Path | None = setting(None, "the report file to write", required=True)


def run(args: Settings) -> int:
    from loghi_ft.errors import UserError
    from loghi_ft.evaluation.compare_page import build_report

    if args.name and len(args.name) != len(args.pred):
        raise UserError(f"--name given {len(args.name)} times for {len(args.pred)} --pred folders")
    if not args.html.parent.is_dir():
        raise UserError(f"{args.html.parent}: folder for the report not found")
    lines = build_report(args.gt, args.pred, args.html, args.name,
                         log=lambda m: print(f"loghi-ft: {m}", file=sys.stderr))
    print(f"compare: {lines} lines of {len(args.pred)} models written to {args.html}")
    return 0

"""Cut the transcribed lines of PAGE/ALTO pages into line images and Loghi list files, split by page.

Writes OUTPUT/training_all.txt, training_all_train.txt, training_all_val.txt (and training_all_test.txt
when the split file names test pages), the line images under OUTPUT/lines/, the packed strips that training
reads beside the train and val lists (<list>.h<height>.cache/), and OUTPUT/prepare_report.json.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from loghi_ft.settings import setting

MAX_WARNINGS = 20


@dataclass
class Settings:
    inputs: list[Path] = setting([], "PAGE/ALTO files or folders (searched recursively, page/ subfolders included)",
                                 positional=True, required=True, metavar="INPUT")
    output: Path | None = setting(None, "folder for the line images, list files and report", required=True)
    split_file: Path | None = setting(None, "TSV with columns xml and split (train/val/test), paths relative to the TSV")
    val_fraction: float = setting(0.1, "share of pages drawn at random for validation (without --split-file)")
    seed: int = setting(1, "seed of the random page split")
    height: int = setting(64, "height of the line images in pixels")
    normalize: str = setting("NFC", "Unicode normalisation of the transcriptions", choices=("NFC", "NFD", "none"))
    keep_whitespace: bool = setting(False, "keep repeated, leading and trailing spaces (default: collapse and strip)")
    workers: int | None = setting(None, "processes cutting pages; 0: none, the main process cuts; empty: one per core")
    strict: bool = setting(False, "exit non-zero when any page or line was skipped")


def run(args: Settings) -> int:
    from loghi_ft.errors import UserError
    from loghi_ft.pages.prepare import EMPTY, prepare

    report = prepare(args.inputs, args.output, split_file=args.split_file, val_fraction=args.val_fraction,
                     seed=args.seed, height=args.height, normalize=args.normalize,
                     clean_whitespace=not args.keep_whitespace, workers=args.workers)
    warnings = [s["message"] for s in report["skipped"] if s["reason"] != EMPTY]
    for message in warnings[:MAX_WARNINGS]:
        print(f"loghi-ft: skipped: {message}", file=sys.stderr)
    if len(warnings) > MAX_WARNINGS:
        print(f"loghi-ft: ... and {len(warnings) - MAX_WARNINGS} more, listed in the report", file=sys.stderr)
    splits = ", ".join(f"{name} {s['lines']}" for name, s in report["splits"].items() if s["pages"])
    reasons = ", ".join(f"{n} {reason}" for reason, n in report["skipped_by_reason"].items()) or "none"
    print(f"prepare: {report['pages']['found']} pages, {report['lines']['written']} lines written ({splits}) "
          f"in {report['seconds']:.1f} s; skipped: {reasons}; report {Path(args.output) / 'prepare_report.json'}")
    skipped = report["pages"]["skipped"] + report["lines"]["skipped"]
    if args.strict and skipped:
        raise UserError(f"--strict: {skipped} pages or lines were skipped (see {args.output}/prepare_report.json)")
    return 0

"""Cut the transcribed lines of PAGE/ALTO pages into line images and Loghi list files, split by page.

Writes OUTPUT/training_all.txt, training_all_train.txt, training_all_val.txt (and training_all_test.txt
when the split file names test pages), the line images under OUTPUT/lines/, and OUTPUT/prepare_report.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loghi_ft.commands.common import add_config, add_output

MAX_WARNINGS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="PAGE/ALTO files or folders (searched recursively, page/ subfolders included)")
    add_output(parser, help="folder for the line images, list files and report")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--split-file", type=Path,
                       help="TSV with columns xml and split (train/val/test), paths relative to the TSV")
    split.add_argument("--val-fraction", type=float, default=0.1,
                       help="share of pages drawn at random for validation (default: 0.1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random page split (default: 1)")
    parser.add_argument("--height", type=int, default=64, help="height of the line images in pixels (default: 64)")
    parser.add_argument("--normalize", choices=["NFC", "NFD", "none"], default="NFC",
                        help="Unicode normalisation of the transcriptions (default: NFC)")
    parser.add_argument("--keep-whitespace", action="store_true",
                        help="keep repeated, leading and trailing spaces (default: collapse and strip them)")
    parser.add_argument("--workers", type=int, default=0, help="processes cutting pages (default: one per core)")
    parser.add_argument("--strict", action="store_true", help="exit non-zero when any page or line was skipped")
    add_config(parser)


def run(args: argparse.Namespace) -> int:
    from loghi_ft.errors import UserError
    from loghi_ft.pages.prepare import EMPTY, prepare

    report = prepare(args.inputs, args.output, split_file=args.split_file, val_fraction=args.val_fraction,
                     seed=args.seed, height=args.height, normalize=args.normalize,
                     clean_whitespace=not args.keep_whitespace, workers=args.workers or None)
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

"""Convert a Loghi model folder (best_val/: model.keras, tokenizer.json, config.json) into a loghi-ft model folder.

The converted model reads lines as Loghi does (its pixel scaling and padding travel with it) and gives
the same outputs; fine-tune it with `loghi-ft train --base-model DST`. Legacy SavedModel folders
(saved_model.pb) need TensorFlow: pip install 'loghi-ft[tensorflow]'.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, metavar="SRC", help="Loghi model folder (holds model.keras or saved_model.pb)")
    parser.add_argument("dst", type=Path, metavar="DST", help="loghi-ft model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace DST when it already holds a model")


def run(args: argparse.Namespace) -> int:
    from loghi_ft.errors import UserError
    from loghi_ft.model.loghi import import_loghi

    if args.dst.exists() and any(args.dst.iterdir()) and not args.overwrite:
        raise UserError(f"{args.dst}: exists and is not empty; give --overwrite to replace it")
    info = import_loghi(args.src, args.dst)
    print(f"imported {args.src} -> {args.dst}")
    print(f"spec: {info.spec}")
    print(f"input: {info.channels}x{info.height}xW, {len(info.charset) - 1} characters (+ Loghi's [UNK] as U+FFFD)")
    return 0

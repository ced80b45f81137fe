"""Recognise the lines of PAGE XML pages with a model and write the text into the XML (or a Loghi results file).

INPUT: folders (PAGE XML beside its images or in page/), PAGE/ALTO files, or a Loghi list file of line
images (then OUTPUT/<list name>.results.txt gets `path<TAB>confidence<TAB>text`). Pages go to --output,
mirroring the input tree, or back into the input files with --in-place. A page already written by the same
model is skipped unless --overwrite; each page is written whole or not at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loghi_ft.commands.common import add_batch_size, add_config, add_gpu


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="PAGE XML folders or files, or a list file")
    parser.add_argument("--model", type=Path, required=True, help="model folder (or its training output folder), or a .onnx file")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", type=Path, help="folder for the recognised pages, mirroring the input tree")
    where.add_argument("--in-place", action="store_true", help="write the text into the input files themselves")
    add_batch_size(parser, 32)
    add_gpu(parser)
    parser.add_argument("--beam-width", type=int, default=1, help="CTC beam search with this many beams (default: 1, greedy)")
    parser.add_argument("--lm", type=Path, help="text file (one line or word per line, or a Loghi list file) whose "
                        "character 6-gram biases the beam search toward its words")
    parser.add_argument("--lm-weight", type=float, default=0.3, help="weight of the --lm log probability (default: 0.3)")
    parser.add_argument("--words", action="store_true", help="also write Word elements with Coords and confidence")
    parser.add_argument("--overwrite", action="store_true", help="redo pages already written by this model")
    parser.add_argument("--shard", default="1/1", help="K/N: do only the K-th of N shares of the pages (default: 1/1)")
    parser.add_argument("--workers", type=int, default=-1,
                        help="processes cutting lines while the model runs (default: cores - 1, at most 4; 0: none)")
    add_precision(parser)
    add_config(parser)


def add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 where the GPU or CPU computes it natively (AVX512-BF16, AMX), else fp32; "
                             "bf16 takes about 60%% of the time at the same accuracy (default: auto)")


def run(args: argparse.Namespace) -> int:
    from loghi_ft.errors import UserError
    from loghi_ft.inference.pages import parse_shard
    from loghi_ft.inference.recognise import run_inference

    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.beam_width < 1:
        raise UserError(f"--beam-width {args.beam_width}: must be at least 1")
    summary = run_inference(args.inputs, args.model, None if args.in_place else args.output,
                            batch_size=args.batch_size, gpu=args.gpu, beam_width=args.beam_width,
                            overwrite=args.overwrite, shard=parse_shard(args.shard), workers=args.workers,
                            words=args.words, lm=args.lm, lm_weight=args.lm_weight, precision=args.precision,
                            log=lambda m: print(f"loghi-ft: {m}", file=sys.stderr))
    print(f"infer: {summary.text()}")
    return 0

"""Recognise the lines of PAGE XML pages with a model and write the text into the XML (or a Loghi results file).

INPUT: folders (PAGE XML beside its images or in page/), PAGE/ALTO files, or a Loghi list file of line
images (then OUTPUT/<list name>.results.txt gets `path<TAB>confidence<TAB>text`). Pages go to --output,
mirroring the input tree, or back into the input files with --in-place. A page already written by the same
model is skipped unless --overwrite; each page is written whole or not at all.
"""

from __future__ import annotations

import argparse
import os
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
    import torch

    from loghi_ft.errors import UserError
    from loghi_ft.inference.run import parse_shard, run_inference

    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.beam_width < 1:
        raise UserError(f"--beam-width {args.beam_width}: must be at least 1")
    workers = args.workers if args.workers >= 0 else max(0, min(4, (os.cpu_count() or 1) - 1))
    # the cores the cutting workers leave: OpenMP threads that must share a core spin-wait (measured on 2 cores:
    # 2 threads beside 1 worker took 10x the CPU time and 5x the wall time of 1 thread)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    summary = run_inference(args.inputs, args.model, None if args.in_place else args.output,
                            batch_size=args.batch_size, gpu=args.gpu, beam_width=args.beam_width,
                            overwrite=args.overwrite, shard=parse_shard(args.shard), workers=workers,
                            words=args.words, lm=args.lm, lm_weight=args.lm_weight, precision=args.precision,
                            log=lambda m: print(f"loghi-ft: {m}", file=sys.stderr))
    print(f"infer: {summary.text()}")
    return 0

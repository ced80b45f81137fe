"""Export a model folder as one ONNX file (dynamic batch and width; charset and model description in its metadata).

The ONNX model takes `image` (N, C, H, W) float32, preprocessed as `loghi-ft infer` does, and gives
`logits` (N, T, K) with row 0 the CTC blank; `loghi-ft infer --model FILE.onnx` runs it with onnxruntime.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="model folder (or a training output holding best_val/)")
    parser.add_argument("--onnx", type=Path, required=True, help="ONNX file to write")


def run(args: argparse.Namespace) -> int:
    from loghi_ft.model.onnx import export

    path = export(args.model, args.onnx)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0

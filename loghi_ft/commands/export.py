"""Export a model folder as one ONNX file (dynamic batch and width; charset and model description in its metadata).

The ONNX model takes `image` (N, C, H, W) float32, preprocessed as `loghi-ft infer` does, and gives
`logits` (N, T, K) with row 0 the CTC blank; `loghi-ft infer --model FILE.onnx` runs it with onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loghi_ft.settings import setting


@dataclass
class Settings:
    model: Path | None = setting(None, "model folder (or a training output holding best_val/)", required=True)
    onnx: Path | None = setting(None, "ONNX file to write", required=True)


def run(args: Settings) -> int:
    from loghi_ft.model.onnx import export

    path = export(args.model, args.onnx)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0

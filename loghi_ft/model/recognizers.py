"""The recognisers `infer` and `eval` run: a model folder on a torch device, or an exported .onnx file run by
onnxruntime. Both map a preprocessed batch (N, C, H, W) and its widths (N,) to logits (N, T, K) and valid lengths
(N,), on the CPU, and carry the model's ModelInfo (`info`), a short hash of its weights (`hash`) and a `name`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from loghi_ft.devices import autocast_dtype, inference_device
from loghi_ft.errors import UserError
from loghi_ft.model.folder import ModelInfo, find_model_folder, load_model, model_hash
from loghi_ft.model.onnx import INFO_KEY
from loghi_ft.model.vgsl import build_model


class TorchRecognizer:
    """A model folder on a torch device, with bf16 autocast when `dtype` is torch.bfloat16."""

    def __init__(self, path: Path, device: str = "cpu", dtype: torch.dtype | None = None):
        folder = find_model_folder(path)
        self.model, self.info = load_model(folder, device)
        self.model.to(memory_format=torch.channels_last)  # NHWC convolutions run faster, on CPU as on GPU
        self.device = device
        self.dtype = dtype
        self.hash = model_hash(folder)
        self.name = f"{folder.parent.name}/{folder.name}" if folder.name in ("best_val", "last") else folder.name

    def __call__(self, batch: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True, memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
                logits = self.model(x)
            return logits.float().cpu(), self.model.output_lengths(widths).cpu()


class OnnxRecognizer:
    """An exported .onnx model (see model/onnx.py) run by onnxruntime on the CPU."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: ONNX model not found")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise UserError(f"{self.path}: not a loadable ONNX model ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if INFO_KEY not in meta:
            raise UserError(f"{self.path}: no {INFO_KEY} in its metadata; not exported by loghi-ft")
        try:
            self.info = ModelInfo(**json.loads(meta[INFO_KEY]))
        except (json.JSONDecodeError, TypeError) as exc:
            raise UserError(f"{self.path}: unreadable {INFO_KEY} metadata ({exc})") from None
        # the graph gives no lengths: they come from the PyTorch model's own code, on a weightless copy of it
        with torch.device("meta"):
            self.shape_model = build_model(self.info.spec, len(self.info.charset) + 1)
        self.hash = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        self.name = self.path.name

    def __call__(self, batch: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        image = np.ascontiguousarray(batch.numpy(), dtype=np.float32)
        logits = self.session.run(["logits"], {"image": image})[0]
        return torch.from_numpy(logits), self.shape_model.output_lengths(widths.long())


Recognizer = TorchRecognizer | OnnxRecognizer


def open_recognizer(path: Path, gpu: str = "-1", precision: str = "auto") -> Recognizer:
    """An OnnxRecognizer for a .onnx file (on the CPU), else a TorchRecognizer on the device of --gpu."""
    if str(path).lower().endswith(".onnx"):
        return OnnxRecognizer(Path(path))
    device = inference_device(gpu)
    return TorchRecognizer(Path(path), device, autocast_dtype(precision, device))

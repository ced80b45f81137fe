"""Pixels -> model input: line strips resized, coloured and padded into a batch as the model's folder says."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from loghi_ft.model.folder import ModelInfo

# ink high, background low, padding exactly zero: input = 1 - pixel/255
DEFAULT_PREPROCESS = {"scale": -1.0 / 255.0, "offset": 1.0, "pad_value": 255}


def preprocess(strips: list[np.ndarray], info: ModelInfo, width_step: int = 1,
               grounds: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """uint8 line strips -> (N, C, H, W) float batch and widths (N,); the one place pixels become input.

    W is the widest strip rounded up to a multiple of `width_step` (training uses 32: a few dozen batch shapes
    instead of one per width keep the CPU kernels' per-shape caches, and so the memory, bounded). Each strip is
    padded with the model's pad value, or with its own entry of `grounds` (a negative's dark ground)."""
    height, channels, pp = info.height, info.channels, info.preprocess
    pad = int(pp.get("pad_value", 255))
    ready = [_fit(s, height, channels) for s in strips]
    # imported Loghi models read each line with `margin` columns of `margin_value` on both sides
    margin = int(pp.get("margin", 0))
    if margin:
        value = int(pp.get("margin_value", pad))
        ready = [np.pad(s, ((0, 0), (margin, margin), (0, 0)), constant_values=value) for s in ready]
    widths = [s.shape[1] for s in ready]
    batch_width = -(-max(widths, default=1) // width_step) * width_step
    batch = np.full((len(ready), height, batch_width, channels), pad, dtype=np.uint8)
    for i, s in enumerate(ready):
        batch[i, :, : s.shape[1]] = s
        if grounds is not None and grounds[i] != pad:
            batch[i, :, s.shape[1]:] = grounds[i]
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    x = x.mul_(float(pp.get("scale", DEFAULT_PREPROCESS["scale"]))).add_(float(pp.get("offset", DEFAULT_PREPROCESS["offset"])))
    # and a batch padded with an input value no pixel maps to (Loghi: -10)
    if pp.get("pad_input") is not None:
        for i, w in enumerate(widths):
            x[i, :, :, w:] = float(pp["pad_input"])
    return x.contiguous(), torch.tensor(widths, dtype=torch.long)


def _fit(strip: np.ndarray, height: int, channels: int) -> np.ndarray:
    """A strip as (height, W, channels) uint8: resized to the height, grey or colour as the model wants."""
    if strip.ndim == 3 and strip.shape[2] == 1:
        strip = strip[:, :, 0]
    if strip.ndim == 3 and channels == 1:
        strip = cv2.cvtColor(strip, cv2.COLOR_BGRA2GRAY if strip.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    elif strip.ndim == 3 and strip.shape[2] == 4 and channels != 4:
        strip = cv2.cvtColor(strip, cv2.COLOR_BGRA2BGR)
    if strip.shape[0] != height:
        width = max(1, round(strip.shape[1] * height / max(strip.shape[0], 1)))
        strip = cv2.resize(strip, (width, height), interpolation=cv2.INTER_AREA if strip.shape[0] > height else cv2.INTER_LINEAR)
    if strip.ndim == 2:
        strip = np.repeat(strip[:, :, None], min(channels, 3), axis=2)
    if channels == 4:  # RGBA models (Loghi's 4-channel specs) read an opaque image
        strip = np.concatenate([strip, np.full(strip.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return strip

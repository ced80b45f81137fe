"""Random distortions of uint8 line strips (ink dark on white), run in the data-loader workers."""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

WHITE = 255


@dataclass
class Augment:
    """Probability of each distortion per line (0 switches it off) and how strong it may be."""

    elastic: float = 0.3           # smooth random displacement of the pixels
    elastic_alpha: float = 2.5     # largest displacement in pixels
    elastic_grid: int = 12         # pixels between the random control points
    shear: float = 0.5             # slant the writing
    shear_max: float = 0.35        # |horizontal shift / height|
    width: float = 0.5             # stretch or squeeze horizontally
    width_range: tuple[float, float] = (0.8, 1.2)
    blur: float = 0.2              # Gaussian blur
    blur_sigma: tuple[float, float] = (0.4, 1.2)
    crop: float = 0.5              # move the strip's borders a few pixels
    crop_max: int = 4              # pixels, per border
    binarize: float = 0.1          # Otsu threshold to black and white
    # A negative of the strip (light ink on a dark ground). Off by default: scans are dark on light and
    # the model's own input convention (ModelInfo.preprocess) is applied after augmentation, so a
    # negative is only worth training on when the user's images really contain some.
    invert: float = 0.0

    @classmethod
    def off(cls) -> "Augment":
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name in AUGMENTATIONS})

    @property
    def min_width_factor(self) -> float:
        """The narrowest a strip can become, relative to its width (for the CTC length check)."""
        return self.width_range[0] if self.width > 0 else 1.0


AUGMENTATIONS = ("elastic", "shear", "width", "blur", "crop", "binarize", "invert")


def augment(strip: np.ndarray, aug: Augment, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A distorted copy of `strip` with the same height, and the value its background now has."""
    height = strip.shape[0]
    out = strip
    if rng.random() < aug.crop:
        out = crop_jitter(out, aug.crop_max, rng)
    if rng.random() < aug.width:
        factor = rng.uniform(*aug.width_range)
        out = cv2.resize(out, (max(1, round(out.shape[1] * factor)), height), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    if rng.random() < aug.shear:
        out = shear(out, rng.uniform(-aug.shear_max, aug.shear_max))
    if rng.random() < aug.elastic:
        out = elastic(out, aug.elastic_alpha, aug.elastic_grid, rng)
    if rng.random() < aug.blur:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(*aug.blur_sigma))
    if rng.random() < aug.binarize:
        out = binarize(out)
    background = WHITE
    if rng.random() < aug.invert:
        out = WHITE - out
        background = 0
    return np.ascontiguousarray(out, dtype=np.uint8), background


def binarize(strip: np.ndarray) -> np.ndarray:
    """Black ink on white paper by Otsu's threshold between ink and paper."""
    # Ink is the minority: choose among pixels no lighter than the paper's median, so that neither the white
    # outside the line's polygon nor the light seam along it can pull the threshold into the paper
    inside = strip[strip < WHITE]
    if inside.size < 2:
        return strip
    darker = inside[inside <= np.median(inside)]
    threshold = cv2.threshold(darker.reshape(1, -1), 0, WHITE, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[0]
    return np.where(strip > threshold, WHITE, 0).astype(np.uint8)


def crop_jitter(strip: np.ndarray, most: int, rng: np.random.Generator) -> np.ndarray:
    """Move each border by up to `most` pixels: inward crops, outward pads white; the height stays."""
    h, w = strip.shape
    left, right, top, bottom = rng.integers(-most, most + 1, size=4)
    # never crop more than a tenth of a short strip away, so no character is lost
    left, right = (min(int(v), w // 10) for v in (left, right))
    top, bottom = (min(int(v), h // 10) for v in (top, bottom))
    out = strip[max(top, 0):h - max(bottom, 0), max(left, 0):w - max(right, 0)]
    out = cv2.copyMakeBorder(out, max(-top, 0), max(-bottom, 0), max(-left, 0), max(-right, 0), cv2.BORDER_CONSTANT, value=WHITE)
    if out.shape[0] != h:
        out = cv2.resize(out, (max(1, round(out.shape[1] * h / out.shape[0])), h), interpolation=cv2.INTER_AREA)
    return out


def shear(strip: np.ndarray, s: float) -> np.ndarray:
    """Slant by shifting row y by s * (y - middle) pixels; the canvas widens so nothing is cut."""
    h, w = strip.shape
    extra = int(np.ceil(abs(s) * h))
    matrix = np.array([[1.0, s, extra / 2 - s * h / 2], [0.0, 1.0, 0.0]], dtype=np.float32)
    return cv2.warpAffine(strip, matrix, (w + extra, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=WHITE)


def elastic(strip: np.ndarray, alpha: float, grid: int, rng: np.random.Generator) -> np.ndarray:
    """Displace pixels along a smooth random field: random offsets on a coarse grid, interpolated."""
    h, w = strip.shape
    gh, gw = h // grid + 2, w // grid + 2
    dx = cv2.resize(rng.uniform(-alpha, alpha, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(rng.uniform(-alpha, alpha, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.indices((h, w), dtype=np.float32)
    return cv2.remap(strip, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=WHITE)

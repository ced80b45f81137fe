"""Line images: decode a page once, cut each line to its polygon, straighten it along its baseline, fixed height."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from loghi_ft.errors import UserError
from loghi_ft.pages.documents import Page, TextLine
from loghi_ft.pages.images import read_image_bytes

# OpenCV decodes JPEG at 1/2, 1/4, 1/8 size in the DCT domain: far cheaper than decoding then shrinking
REDUCED = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
           4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
# an image whose aspect ratio differs from the XML's by more than this is another image, not a resized one
ASPECT_TOLERANCE = 0.01


class LineError(UserError):
    """A line whose polygon cannot be cut from its page image."""


def load_image(path: str | Path, reduce: int = 1) -> np.ndarray:
    """The image as 2-D uint8 grayscale, decoded at 1/`reduce` size; UserError naming the file when unusable."""
    path = Path(path)
    data = np.frombuffer(read_image_bytes(path), dtype=np.uint8)
    image = cv2.imdecode(data, REDUCED[reduce])
    if image is None:
        raise UserError(f"{path}: not a readable image (corrupt or unsupported format)")
    if image.size == 0:
        raise UserError(f"{path}: image has zero width or height")
    return image


def cut_line(image: np.ndarray, line: TextLine, height: int = 64) -> np.ndarray:
    """One uint8 strip `height` rows high: the polygon's pixels on white, straightened along the baseline."""
    polygon = np.asarray(line.polygon, dtype=np.float64).reshape(-1, 2)
    if len(polygon) < 3:
        raise LineError(f"line {line.id}: polygon has fewer than 3 points")
    if not np.isfinite(polygon).all():
        raise LineError(f"line {line.id}: polygon has coordinates that are not finite numbers")
    if cv2.contourArea(polygon.astype(np.float32)) < 1.0:
        raise LineError(f"line {line.id}: polygon encloses no area")
    img_h, img_w = image.shape[:2]
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int)
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, img_w), min(y1, img_h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise LineError(f"line {line.id}: polygon lies outside the image ({img_w}x{img_h})")
    origin = np.array([x0, y0], dtype=np.float64)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(polygon - origin).astype(np.int32)], 255)
    if not mask.any():
        raise LineError(f"line {line.id}: polygon encloses no pixels")
    # outside the polygon becomes white (crop | 255); inside keeps the crop (crop | 0)
    crop = cv2.bitwise_or(image[y0:y1, x0:x1], cv2.bitwise_not(mask))
    baseline = _clean_baseline(line.baseline, origin)
    if baseline is None:
        return _resize_to_height(_trim(crop, mask), height)
    return _dewarp(crop, polygon - origin, baseline, height, line.id)


def cut_page(page: Page, height: int = 64, image: np.ndarray | None = None
             ) -> Iterator[tuple[TextLine, np.ndarray | None, str | None]]:
    """Every line of the page: (line, strip, None) or (line, None, reason); decodes the image once."""
    if not page.lines:
        return
    if image is None:
        image = load_image(page.image_path, _reduction(page, height))
    sx, sy = _scale(page, image)
    for line in page.lines:
        scaled = line if sx == sy == 1.0 else dataclasses.replace(
            line, polygon=[(x * sx, y * sy) for x, y in line.polygon],
            baseline=None if line.baseline is None else [(x * sx, y * sy) for x, y in line.baseline])
        try:
            yield line, cut_line(image, scaled, height), None
        except LineError as exc:
            yield line, None, str(exc)


def _reduction(page: Page, height: int) -> int:
    """Largest decode reduction at which the page's median line is still at least `height` pixels high."""
    if page.width <= 0 or page.height <= 0:
        return 1  # unknown page size: coordinates could not be mapped onto a reduced image
    extents = sorted(_extent(line) for line in page.lines)
    median = extents[len(extents) // 2]
    reduce = 1
    while reduce < 8 and median / (reduce * 2) >= height:
        reduce *= 2
    return reduce


def _extent(line: TextLine) -> float:
    """Rough height of a line in page pixels: the polygon's vertical span less the baseline's slope."""
    ys = [p[1] for p in line.polygon]
    slope = 0.0
    if line.baseline:
        bys = [p[1] for p in line.baseline]
        slope = max(bys) - min(bys)
    return max(1.0, max(ys) - min(ys) - slope)


def _scale(page: Page, image: np.ndarray) -> tuple[float, float]:
    """Factors from XML coordinates to image pixels; UserError when the image is not the XML's page."""
    img_h, img_w = image.shape[:2]
    if page.width <= 0 or page.height <= 0:
        return 1.0, 1.0
    sx, sy = img_w / page.width, img_h / page.height
    if abs(sx - sy) > ASPECT_TOLERANCE * max(sx, sy):
        raise UserError(f"{page.xml_path}: image {page.image_path.name} is {img_w}x{img_h} but the XML declares "
                        f"{page.width}x{page.height}, a different shape; the coordinates cannot be mapped onto it")
    return (1.0, 1.0) if sx == sy == 1.0 else (sx, sy)


def _clean_baseline(baseline: list[tuple[float, float]] | None, origin: np.ndarray) -> np.ndarray | None:
    """Baseline points in crop coordinates, left to right, without repeated points; None when unusable."""
    if not baseline or len(baseline) < 2:
        return None
    points = np.asarray(baseline, dtype=np.float64).reshape(-1, 2) - origin
    if not np.isfinite(points).all():
        return None
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.hypot(*np.diff(points, axis=0).T) > 1e-6
    points = points[keep]
    if len(points) < 2:
        return None
    if points[-1, 0] < points[0, 0]:
        points = points[::-1]  # drawn right to left: the strip must still read as the page shows it
    return points


def _trim(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return crop[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _resize_to_height(strip: np.ndarray, height: int) -> np.ndarray:
    h, w = strip.shape
    width = max(1, int(round(w * height / h)))
    interp = cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
    return cv2.resize(strip, (width, height), interpolation=interp)


def _dewarp(crop: np.ndarray, polygon: np.ndarray, baseline: np.ndarray, height: int, line_id: str) -> np.ndarray:
    """Sample the crop along the baseline: each output column is the polygon's cross-section at one baseline point."""
    seg = np.diff(baseline, axis=0)
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    unit = seg / seg_len[:, None]
    arc = np.concatenate([[0.0], np.cumsum(seg_len)])
    # each polygon point: position along the baseline (s) and signed distance below it (d), from its nearest segment
    rel = polygon[:, None, :] - baseline[None, :-1, :]
    t = np.einsum("pkc,kc->pk", rel, unit)
    t_clipped = np.clip(t, 0.0, seg_len[None, :])
    t_clipped[:, 0] = np.minimum(t[:, 0], seg_len[0])      # before the first point: extend the first segment
    t_clipped[:, -1] = np.maximum(t[:, -1], 0.0)           # after the last point: extend the last segment
    if len(seg) == 1:
        t_clipped[:, 0] = t[:, 0]
    foot = baseline[None, :-1, :] + t_clipped[..., None] * unit[None]
    nearest = np.argmin(np.hypot(*(polygon[:, None, :] - foot).transpose(2, 0, 1)), axis=1)
    rows = np.arange(len(polygon))
    s = arc[nearest] + t_clipped[rows, nearest]
    normal = np.stack([-unit[:, 1], unit[:, 0]], axis=1)  # points down the page for a left-to-right baseline
    d = np.einsum("pc,pc->p", rel[rows, nearest], normal[nearest])
    above, below = max(0.0, -d.min()), max(0.0, d.max())
    span = above + below
    if span < 1.0 or s.max() - s.min() < 1.0:
        raise LineError(f"line {line_id}: polygon has no area around its baseline")
    scale = height / span
    small, shrink = _prefilter(crop, scale)
    width = max(1, int(round((s.max() - s.min()) * scale)))
    cols = s.min() + (np.arange(width) + 0.5) / scale
    offsets = -above + (np.arange(height) + 0.5) / scale
    # tangent over a window as wide as the line is high: follows the curve, ignores jitter between points
    half = max(span / 2.0, 1.0)
    point, ahead, behind = np.split(_along(baseline, arc, unit, np.concatenate([cols, cols + half, cols - half])), 3)
    tangent = ahead - behind
    tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-9)[:, None]
    map_x = point[None, :, 0] - tangent[None, :, 1] * offsets[:, None]
    map_y = point[None, :, 1] + tangent[None, :, 0] * offsets[:, None]
    map_x = ((map_x + 0.5) / shrink - 0.5).astype(np.float32)
    map_y = ((map_y + 0.5) / shrink - 0.5).astype(np.float32)
    return cv2.remap(small, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def _prefilter(crop: np.ndarray, scale: float) -> tuple[np.ndarray, int]:
    """The crop shrunk by a whole factor and blurred so that sampling it at `scale` does not alias."""
    shrink = max(1, int(1.0 / scale))
    if shrink > 1:
        # area averaging by a whole factor is OpenCV's fast path (about 20x cheaper than a fractional one)
        h, w = crop.shape
        pad_h, pad_w = -h % shrink, -w % shrink
        if pad_h or pad_w:
            crop = cv2.copyMakeBorder(crop, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=255)
        crop = cv2.resize(crop, (crop.shape[1] // shrink, crop.shape[0] // shrink), interpolation=cv2.INTER_AREA)
    rest = scale * shrink
    if rest < 0.9:
        # what is left to shrink (between 1/2 and 1) is done by bilinear sampling after a matching blur
        crop = cv2.GaussianBlur(crop, (0, 0), 0.5 * np.sqrt(1.0 / rest**2 - 1.0), borderType=cv2.BORDER_REPLICATE)
    return crop, shrink


def _along(baseline: np.ndarray, arc: np.ndarray, unit: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Points at arc positions `s` on the baseline, extended straight past both ends."""
    x = np.interp(s, arc, baseline[:, 0])
    y = np.interp(s, arc, baseline[:, 1])
    before, after = s < 0.0, s > arc[-1]
    x[before] = baseline[0, 0] + s[before] * unit[0, 0]
    y[before] = baseline[0, 1] + s[before] * unit[0, 1]
    x[after] = baseline[-1, 0] + (s[after] - arc[-1]) * unit[-1, 0]
    y[after] = baseline[-1, 1] + (s[after] - arc[-1]) * unit[-1, 1]
    return np.stack([x, y], axis=1)

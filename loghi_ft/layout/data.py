"""Pages for the layout trainer: each decoded once at the model's scale, distorted per (seed, epoch, page) and
rasterised into targets in the loader's workers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from loghi_ft.layout.targets import rasterise, transformed
from loghi_ft.pages.images import load_page_image
from loghi_ft.pages.layout import Layout, read_layout


@dataclass
class LayoutPage:
    pixels: np.ndarray   # H x W x 3 uint8 RGB at the model's scale
    layout: Layout       # the ground truth at the model's scale
    truth: Layout        # the ground truth in page pixels (what validation scores against)
    scale: float         # model pixels per page pixel
    has_regions: bool    # the page gives regions (timeus-1858's give none: no region loss there)


def load_pages(xml_paths: list[Path], size: int, log) -> list[LayoutPage]:
    """Every readable page with at least one baseline, at the model's scale; what cannot be used is logged by name."""
    pages = []
    for path in xml_paths:
        try:
            truth = read_layout(path)
            image = load_page_image(truth.image_path, max_side=size)
        except Exception as exc:  # noqa: BLE001 - a user's bad page is named and skipped, the run goes on
            log(f"skipped {path}: {exc}")
            continue
        if truth.problems:  # lines whose baseline was derived from the polygon, regions without coordinates...
            more = f" (and {len(truth.problems) - 3} more)" if len(truth.problems) > 3 else ""
            log(f"{path}: " + "; ".join(truth.problems[:3]) + more)
        truth.lines = [x for x in truth.lines if len(x.baseline) >= 2]
        if not truth.lines:
            log(f"skipped {path}: no line has a baseline")
            continue
        width, height = truth.width or image.width, truth.height or image.height
        scale = size / max(width, height)
        shape = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = cv2.resize(image.pixels, shape, interpolation=cv2.INTER_AREA)
        layout = transformed(truth, np.array([[scale, 0, 0], [0, scale, 0]]))
        pages.append(LayoutPage(pixels, layout, truth, scale, bool(truth.regions)))
    return pages


@dataclass
class PageBatch:
    images: Tensor       # (N, 3, H, W) float in [0, 1], padded with white
    maps: Tensor         # (N, 2 + regions, H, W) uint8 targets
    types: Tensor | None  # (N, H, W) int64 line types, -1 untyped
    valid: Tensor        # (N, 1, H, W) bool: inside the page (not padding)
    has_regions: Tensor  # (N,) bool
    index: list[int]     # which pages

    def __len__(self) -> int:
        return len(self.index)

    def pin_memory(self) -> "PageBatch":
        self.images, self.maps, self.valid = self.images.pin_memory(), self.maps.pin_memory(), self.valid.pin_memory()
        if self.types is not None:
            self.types = self.types.pin_memory()
        return self


@dataclass(frozen=True)
class Distortion:
    """How far a training page may be zoomed (a factor from zoom_out to zoom_in) and turned (degrees either way)."""
    zoom_out: float = 0.8
    zoom_in: float = 1.2
    turn: float = 2.0


class PageSet(Dataset):
    """Items (pixels, maps, types, index, has_regions); training keys (page, epoch) seed each page's distortion."""

    def __init__(self, pages: list[LayoutPage], region_types: list[str], line_types: list[str],
                 augment: Distortion | None, seed: int, crop: int = 0):
        self.pages, self.region_types, self.line_types = pages, region_types, line_types
        self.augment, self.seed, self.crop = augment, seed, crop

    def __len__(self) -> int:
        return len(self.pages)

    def __getitem__(self, key):
        i, epoch = key if isinstance(key, tuple) else (key, None)
        page = self.pages[i]
        pixels, layout = page.pixels, page.layout
        if self.augment or self.crop:
            rng = np.random.default_rng([self.seed, epoch, i])
            if self.augment:
                pixels, layout = distort(pixels, layout, rng, self.augment)
            if self.crop:
                pixels, layout = window(pixels, layout, rng, self.crop)
        maps, types = rasterise(layout, pixels.shape[:2], self.region_types, self.line_types)
        return pixels, maps, types, i, page.has_regions


def distort(pixels: np.ndarray, layout: Layout, rng: np.random.Generator,
            how: Distortion = Distortion()) -> tuple[np.ndarray, Layout]:
    """A random zoom and turn within `how`, then contrast, brightness, colour and blur changes."""
    h, w = pixels.shape[:2]
    zoom, angle = rng.uniform(how.zoom_out, how.zoom_in), rng.uniform(-how.turn, how.turn)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom)
    size = (max(32, round(w * zoom)), max(32, round(h * zoom)))
    matrix[:, 2] += (size[0] - w) / 2, (size[1] - h) / 2
    out = cv2.warpAffine(pixels, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = out.astype(np.float32)
    out = (out - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-30, 30)
    out *= rng.uniform(0.9, 1.1, size=3)  # paper and ink colours
    if rng.random() < 0.2:
        out[:] = out.mean(axis=2, keepdims=True)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    return np.clip(out, 0, 255).astype(np.uint8), transformed(layout, matrix)


def window(pixels: np.ndarray, layout: Layout, rng: np.random.Generator, size: int) -> tuple[np.ndarray, Layout]:
    """A random window of at most size x size pixels (a page's lines cut by its edge are drawn cut)."""
    h, w = pixels.shape[:2]
    top, left = int(rng.integers(0, max(1, h - size + 1))), int(rng.integers(0, max(1, w - size + 1)))
    shift = np.array([[1.0, 0, -left], [0, 1.0, -top]])
    return pixels[top:top + size, left:left + size], transformed(layout, shift)


def collate(items) -> PageBatch:
    """Pages padded with white to the largest in the batch; targets padded with 0, `valid` marks the page."""
    h = max(p.shape[0] for p, *_ in items)
    w = max(p.shape[1] for p, *_ in items)
    n, channels = len(items), items[0][1].shape[0]
    images = torch.ones((n, 3, h, w))
    maps = torch.zeros((n, channels, h, w), dtype=torch.uint8)
    valid = torch.zeros((n, 1, h, w), dtype=torch.bool)
    typed = items[0][2] is not None
    types = torch.full((n, h, w), -1, dtype=torch.long) if typed else None
    for k, (pixels, page_maps, page_types, _, _) in enumerate(items):
        ph, pw = pixels.shape[:2]
        images[k, :, :ph, :pw] = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
        maps[k, :, :ph, :pw] = torch.from_numpy(page_maps)
        valid[k, :, :ph, :pw] = True
        if typed:
            types[k, :ph, :pw] = torch.from_numpy(page_types.astype(np.int64))
    return PageBatch(images, maps, types, valid, torch.tensor([x[4] for x in items]), [x[3] for x in items])


def page_sizes(pages: list[LayoutPage]) -> np.ndarray:
    """Each page's area at the model's scale, so that batches hold pages of similar size (less padding)."""
    return np.array([math.prod(p.pixels.shape[:2]) for p in pages], dtype=np.float64)


def with_types(pages: list[LayoutPage], base_regions: list[str], base_lines: list[str]) -> tuple[list[str], list[str]]:
    """The base model's region and line types followed by the new ones these pages bring (a fine-tune keeps the
    old classes and adds the user's)."""
    regions, lines = list(base_regions), list(base_lines)
    for page in pages:
        regions += [r.type for r in page.truth.regions if r.type not in regions]
        lines += [x.type for x in page.truth.lines if x.type and x.type not in lines]
    return list(dict.fromkeys(regions)), list(dict.fromkeys(lines))


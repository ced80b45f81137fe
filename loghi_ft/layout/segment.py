"""Find the regions and lines of pages with a layout model and write them as PAGE XML: bare images get a new page,
pages without lines (or all, with redo) get the model's lines; pages that have lines keep them."""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from loghi_ft import __version__
from loghi_ft.devices import autocast_dtype, inference_device
from loghi_ft.errors import UserError
from loghi_ft.layout.extract import enlarged_size, extract, ink_spacing, line_spacing, lines_area
from loghi_ft.layout.net import LayoutInfo, LayoutNet, load_layout_model, probabilities
from loghi_ft.pages.documents import find_pages
from loghi_ft.pages.images import PageImage, load_page_image
from loghi_ft.pages.layout import Layout, LayoutLine, read_layout, reading_order, write_layout

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".jp2", ".webp", ".bmp"}


@dataclass
class Job:
    """One page to segment: its image, the PAGE file it has (None for a bare image), where the result goes."""
    image: Path | None
    xml: Path | None
    output: Path
    key: str                # the input's path relative to its input folder (messages, the list of results)


@dataclass
class Segmented:
    written: dict[str, Path] = field(default_factory=dict)  # job key -> the PAGE file written (this shard's)
    planned: set[Path] = field(default_factory=set)  # every input and output PAGE file of a job, in all shards
    kept: int = 0           # pages that had lines and kept them
    lines: int = 0
    bands: int = 0          # lines whose polygon fell back to a band around the baseline
    rescaled: int = 0       # pages segmented again at another size (segment_image)
    cut: int = 0            # lines cut in two at a gutter between columns
    leaders: int = 0        # lines cut or trimmed at a dot leader or a wide blank
    failed: list[str] = field(default_factory=list)  # "FILE: why", one per page not segmented
    seconds: float = 0.0

    def text(self) -> str:
        pages = len(self.written)
        rate = self.seconds / pages if pages else 0.0
        parts = [f"{pages} pages segmented, {self.lines} lines found in {self.seconds:.1f} s ({rate:.2f} s/page)"]
        if self.bands:
            parts.append(f"{self.bands} line polygons drawn as bands around their baselines")
        if self.rescaled:
            parts.append(f"{self.rescaled} pages segmented again, larger (their lines are closer together than the "
                         "layout model's training pages')")
        if self.cut:
            parts.append(f"{self.cut} lines cut in two at the gap between two columns")
        if self.leaders:
            parts.append(f"{self.leaders} lines cut or trimmed at a dot leader or a wide blank")
        if self.kept:
            parts.append(f"{self.kept} pages kept their lines")
        if self.failed:
            parts.append(f"{len(self.failed)} pages not segmented, listed above")
        return "; ".join(parts)


def jobs(inputs: list[Path], output: Path | None, redo: bool) -> tuple[list[Job], int, list[str]]:
    """What to segment among the inputs (folders, images, PAGE/ALTO files) and where each result goes: under
    `output` mirroring the input tree, or (None) a bare image's page beside it in page/ and a PAGE file in place.
    Also how many pages keep the lines they have, and the inputs that cannot be read ("FILE: why")."""
    found, kept, covered, unread = [], 0, set(), []
    for item in map(Path, inputs):
        root = item if item.is_dir() else item.parent
        if not item.exists():
            unread.append(f"{item}: no such file or folder")
            continue
        xmls = [] if item.suffix.lower() in IMAGE_SUFFIXES else list(find_pages([item]))
        for xml in xmls:
            try:
                page = read_layout(xml)
            except UserError as exc:
                unread.append(str(exc))
                continue
            covered.add(Path(page.image_path).resolve())
            if page.lines and not redo:
                kept += 1
                continue
            rel = Path(os.path.relpath(xml, root))
            found.append(Job(Path(page.image_path), xml, xml if output is None else output / rel, rel.as_posix()))
        images = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) \
            if item.is_dir() else [item] if item.suffix.lower() in IMAGE_SUFFIXES else []
        for image in images:
            if image.resolve() in covered:
                continue
            rel = Path(os.path.relpath(image, root)).with_suffix(".xml")
            target = image.parent / "page" / rel.name if output is None else output / rel
            found.append(Job(image, None, target, rel.as_posix()))
    return found, kept, unread


def open_layout_model(path: Path, gpu: str, precision: str) -> tuple[LayoutNet, torch.device, object]:
    """The layout model on the device --gpu names, and the autocast --precision asks for.

    Unlike training and recognition, segmentation leaves glibc's malloc as it is (devices.keep_freed_memory): a
    page is one pass of its own size, and a page enlarged takes a second, larger one, which the blocks freed by a
    smaller pass cannot hold, so keeping them only added to the peak. `loghi-ft segment` on iForal's 11 pages (all
    enlarged), two runs each, 2 cores: kept, 1.67 and 1.56 s/page at 1829 and 2336 MB peak; not kept, 1.96 and
    1.98 s/page at 1533 and 1405 MB. On htromance-fr's 23 test pages (one pass each) 0.32 and 0.32 s/page at
    1504 and 1617 MB against 0.33 and 0.29 s/page at 1335 and 1424 MB."""
    device = torch.device(inference_device(gpu))
    dtype = autocast_dtype(precision, device.type)
    return load_layout_model(path, device), device, torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


@dataclass
class PageLayout:
    """One page image segmented: its layout, how many polygons fell back to bands, what loading the image noted,
    the longer side (pixels) the model saw it at (its own size, or larger where the page's lines are closer
    together than its training pages'), and how many lines were cut at a gutter and at a dot leader."""
    layout: Layout
    bands: int
    notes: list[str]
    size: int
    cut: int = 0        # lines cut in two at a gutter between columns (extract.split_at_gutters)
    leaders: int = 0    # lines cut or trimmed at a dot leader or a wide blank (extract.split_at_leaders)


@torch.no_grad()
def segment_image(model: LayoutNet, image_path: Path, device: torch.device, autocast,
                  rescale: bool = True) -> PageLayout:
    """The layout of one page image, in reading order, in the image's pixels as displayed. Where the baselines
    found are closer together than nearly all of the model's training pages' (the small, dense lines of a charter
    photographed whole), the page is segmented again, larger (rescaled_size)."""
    info = model.info
    probs, scale, image = page_probabilities(model, image_path, device, autocast)
    gray = cv2.cvtColor(model_pixels(image, probs.shape[1:]), cv2.COLOR_RGB2GRAY)
    found, size = extract(probs, info, scale, gray=gray), info.size
    better = rescaled_size(info, found.lines, gray, scale) if rescale else None
    if better is not None:
        probs, scale, image = page_probabilities(model, image_path, device, autocast, size=better)
        gray = cv2.cvtColor(model_pixels(image, probs.shape[1:]), cv2.COLOR_RGB2GRAY)
        found, size = extract(probs, info, scale, gray=gray), better
    layout = Layout(image_path, image.width, image.height, found.regions, found.lines)
    return PageLayout(reading_order(layout), found.bands, image.notes, size, found.cut, found.leaders)


def rescaled_size(info: LayoutInfo, lines: list[LayoutLine], gray: np.ndarray, scale: float) -> int | None:
    """The longer side at which the page would have its lines spaced as the training pages' median, when they are
    closer together than the training pages' 5th percentile (info.spacing); else None. `lines` are those found at
    `scale` model pixels per page pixel, `gray` the page at that scale (grayscale). The spacing is that of the ink
    within the lines' area (extract.ink_spacing), or of the lines themselves where the ink has no period; a page
    needs lines above one another to be measured.

    Never smaller: pages spaced wider than the training pages' 95th percentile are mostly sparse (a title page, a
    few lines of a letter), not large writing, and segmenting them smaller lost lines. On the base layout model's
    54 validation pages (where no page is spaced below the 5th percentile) the three spaced above the 95th went
    from F1 0.949, 0.949, 0.764 to 0.696, 0.913, 0.854."""
    if len(info.spacing) != 3:
        return None
    shape = gray.shape[:2]
    spacing = line_spacing([np.asarray(x.baseline, dtype=np.float64) * scale for x in lines if len(x.baseline) >= 2],
                           shape)
    if spacing is None:
        return None
    area = lines_area([np.asarray(x.polygon, dtype=np.float64) * scale for x in lines], shape)
    ink = ink_spacing(gray, area)
    return enlarged_size(info.size, info.spacing, spacing if ink is None else ink)


def model_pixels(image: PageImage, shape: tuple[int, int]) -> np.ndarray:
    """The page's pixels resized to `shape` (height, width), as the model saw them."""
    if image.pixels.shape[:2] == tuple(shape):
        return image.pixels
    larger = shape[0] > image.pixels.shape[0]
    return cv2.resize(image.pixels, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR if larger else cv2.INTER_AREA)


@torch.no_grad()
def page_probabilities(model: LayoutNet, image_path: Path, device: torch.device, autocast, size: int | None = None
                       ) -> tuple[np.ndarray, float, PageImage]:
    """The model's probability maps (channels, H, W) of a page image scaled so that its longer side is `size`
    (the model's own by default), the model pixels per page pixel, and the image as loaded (as displayed)."""
    info = model.info
    size = size or info.size
    image = load_page_image(image_path, max_side=size)
    scale = size / max(image.width, image.height)
    pixels = model_pixels(image, (max(1, round(image.height * scale)), max(1, round(image.width * scale))))
    batch = torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div_(255).to(device)
    with autocast:
        logits = model(batch)
    return probabilities(logits, info)[0], scale, image


def run_segment(inputs: list[Path], model_path: Path, output: Path | None, *, redo: bool = False, gpu: str = "-1",
                precision: str = "auto", shard: tuple[int, int] = (1, 1),
                log: Callable[[str], None] = print) -> Segmented:
    """Segment what the inputs need (the K-th of N shares of it) and write PAGE XML; a page that cannot be done is
    named and the rest go on."""
    from tqdm import tqdm

    model, device, autocast = open_layout_model(model_path, gpu, precision)
    todo, kept, unread = jobs(inputs, output, redo)
    done = Segmented(kept=kept, planned={p.resolve() for job in todo for p in (job.xml, job.output) if p},
                     failed=unread)
    for message in unread:
        log(f"not segmented: {message}")
    k, n = shard
    todo = todo[k - 1::n]
    started = time.perf_counter()
    metadata = {"loghi-ft": __version__, "layout_model": str(model_path)}
    for job in tqdm(todo, desc="segment", unit="page", disable=None, dynamic_ncols=True):
        try:
            page = segment_image(model, job.image, device, autocast)
            job.output.parent.mkdir(parents=True, exist_ok=True)
            name = os.path.relpath(job.image, job.output.parent)
            write_layout(page.layout, job.output, image_filename=name, metadata=metadata, base_xml=job.xml,
                         replace_lines=redo)
        except (UserError, OSError) as exc:
            done.failed.append(f"{job.key}: {exc}")
            log(f"{job.key}: not segmented: {exc}")
            continue
        for note in page.notes:
            log(f"{job.image}: {note}")
        done.written[job.key] = job.output
        done.lines += len(page.layout.lines)
        done.bands += page.bands
        done.rescaled += page.size != model.info.size
        done.cut += page.cut
        done.leaders += page.leaders
    done.seconds = time.perf_counter() - started
    return done

"""The torch-free half of inference: pages (and list-file line images) streamed in, cut on worker processes, and the
recognised text written back. The cutting workers import this module alone: it must never import torch.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from loghi_ft.atomic import write_atomic
from loghi_ft.errors import PARTIAL, UserError
from loghi_ft.pages.documents import LineResult, Page, WordResult, find_pages, read_page, write_page
from loghi_ft.pages.lines import cut_page, load_image
from loghi_ft.pages.listfile import read_list
from loghi_ft.pages.text import lines_text, save_text, text_path

if TYPE_CHECKING:
    from loghi_ft.model.decode import WordSpan

# a page's output names the model that wrote it, and how many of its lines that run could not recognise; the same
# text ("... model_hash=H ... not_recognised=N", the count only when there were some) is in every format's metadata
DONE_BY = re.compile(rb"model_hash=([0-9a-f]{16})[^\"<\n]*?(?: not_recognised=(\d+))?[\"<\n]")
LIST_CHUNK = 64  # line images of a list file cut per worker task
# documents.py words each line it drops while reading as "line <id>: <why>" (ids are XML IDs: no colon, no space)
DROPPED_LINE = re.compile(r"line ([^\s:]+): ")


@dataclass
class Unit:
    """One piece of input: a PAGE/ALTO file, or a chunk of a Loghi list file's line images."""
    key: str                                   # the page's relative path (mirrored under --output), or list:index
    xml_path: Path | None = None
    output_path: Path | None = None
    images: list[Path] = field(default_factory=list)


@dataclass
class CutUnit:
    unit: Unit
    page: Page | None = None
    # (line id, strip, why not); a line the reader dropped has no strip, and no id when it has none of its own
    strips: list[tuple[str | None, np.ndarray | None, str | None]] = field(default_factory=list)
    error: str | None = None                   # the whole unit could not be read


@dataclass
class Recognised:
    unit: Unit
    page: Page | None
    results: dict[str, LineResult]             # every line of the unit; a line not recognised reads "", conf 0
    # (line id, why) of each line not recognised (not cut, or dropped by the reader); id None: none of its own
    failed: list[tuple[str | None, str]] = field(default_factory=list)
    error: str | None = None


@dataclass
class Summary:
    pages: int = 0
    lines: int = 0
    lines_failed: int = 0                               # lines not recognised (written without text)
    done_before: int = 0                                # pages this model had written before: left as they are
    skipped: Counter = field(default_factory=Counter)   # reason -> pages (or inputs) not written
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """Every page and line was done (now or by an earlier run of this model)."""
        return not self.lines_failed and not self.skipped

    def text(self) -> str:
        rate = self.lines / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{self.pages} pages, {self.lines} lines recognised in {self.seconds:.1f} s ({rate:.1f} lines/s)"]
        if self.done_before:
            parts.append(f"{self.done_before} already done by this model")
        if self.complete:
            return "; ".join(parts + ["complete"])
        missed = [f"{self.lines_failed} lines not recognised (written without text)"] if self.lines_failed else []
        pages = sum(self.skipped.values())
        if pages:
            missed.append(f"{pages} skipped (" + ", ".join(f"{n} {why}" for why, n in self.skipped.most_common()) + ")")
        return "; ".join(parts + [f"INCOMPLETE (exit status {PARTIAL}): " + ", ".join(missed) + ", listed above"])


# ---------------------------------------------------------------- input

def units(inputs: Iterable[str | Path], output: Path | None, shard: tuple[int, int] = (1, 1),
          warn: Callable[[str], None] | None = None, unread: Callable[[str], None] | None = None,
          segmented: tuple[set[Path], dict[str, Path]] | None = None) -> Iterator[Unit]:
    """Pages (and list-file chunks) of the inputs in this shard, with where each page's output goes; an input
    that cannot be read goes to `unread` (default `warn`), one without pages to `warn`. `segmented`: the PAGE files
    a layout pass planned (inputs it segmented and what it wrote, all shards; left out here) and what this shard's
    pass wrote (key -> page: read and written where they are)."""
    k, n = shard
    unread = unread or warn
    planned, written = segmented or (set(), {})
    for key, page in written.items():
        yield Unit(key, page, page)
    found = bool(written)
    index = 0  # over all pages in input order (sorted within each folder): every shard sees the same order
    for item in inputs:
        item = Path(item)
        if item.is_file() and item.suffix.lower() != ".xml":
            try:
                chunks = list(list_units(item, output, shard))
            except UserError as exc:
                if unread:
                    unread(str(exc))
                continue
            found = True
            yield from chunks
            continue
        root = item if item.is_dir() else item.parent
        any_page = False
        try:
            pages = list(find_pages([item])) if not item.is_dir() else find_pages([item])
        except UserError as exc:
            if unread:
                unread(str(exc))
            continue
        for xml in pages:
            any_page = found = True
            if planned and xml.resolve() in planned:
                continue
            rel = Path(os.path.relpath(xml, root))
            index += 1
            if (index - 1) % n != k - 1:
                continue
            yield Unit(rel.as_posix(), xml, xml if output is None else output / rel)
        if not any_page and warn and not written:
            warn(f"{item}: no PAGE XML found")
    if not found:
        raise UserError(f"no PAGE XML in {', '.join(map(str, inputs))}")


def list_units(list_file: Path, output: Path | None, shard: tuple[int, int]) -> Iterator[Unit]:
    """A Loghi list file in chunks; the results file goes to OUTPUT/<name>.results.txt (or beside the list)."""
    samples = read_list(list_file)
    k, n = shard
    samples = [s for i, s in enumerate(samples) if n == 1 or i % n == k - 1]
    target = (output or list_file.parent) / f"{list_file.stem}{'' if n == 1 else f'.{k}of{n}'}.results.txt"
    for start in range(0, len(samples), LIST_CHUNK):
        chunk = samples[start:start + LIST_CHUNK]
        yield Unit(f"{list_file}:{start}", None, target, [s.path for s in chunk])


def done_by(path: Path) -> tuple[str, int] | None:
    """Hash of the model that last wrote this page and the lines it could not recognise, from its loghi-ft
    metadata; None when there is none."""
    try:
        found = DONE_BY.findall(path.read_bytes())
    except OSError:
        return None
    return (found[-1][0].decode(), int(found[-1][1] or 0)) if found else None


# ---------------------------------------------------------------- cutting (runs on the worker processes)

def cut_unit(unit: Unit, height: int) -> CutUnit:
    """Read and cut one unit; never raises for bad input, the reason travels back instead."""
    if unit.xml_path is None:
        strips = []
        for path in unit.images:
            try:
                strips.append((str(path), load_image(path), None))
            except UserError as exc:
                strips.append((str(path), None, str(exc)))
        return CutUnit(unit, None, strips)
    page = None
    try:
        page = read_page(unit.xml_path)
        return CutUnit(unit, page, [(line.id, strip, why) for line, strip, why in cut_page(page, height)]
                       + dropped_lines(page))
    except UserError as exc:
        message = str(exc)
        if not message.startswith(str(unit.xml_path)):
            message = f"{unit.xml_path}: {message}"
        return CutUnit(unit, page, error=message)  # the page, when it was read, still says which lines it has


def dropped_lines(page: Page) -> list[tuple[str | None, None, str]]:
    """The lines read_page dropped (no Coords, too few points...), with their id when it names them alone."""
    kept = {line.id for line in page.lines}
    out = []
    for problem in page.problems:
        m = DROPPED_LINE.match(problem)
        out.append((m.group(1) if m and m.group(1) not in kept else None, None, problem))
    return out


def _init_worker() -> None:
    import cv2
    cv2.setNumThreads(1)  # the workers are the parallelism; OpenCV's own threads would fight them


def cut_stream(todo: Iterable[Unit], height: int, workers: int) -> Iterator[CutUnit]:
    """Cut units in order; with workers, a bounded number run ahead so memory stays flat."""
    if workers <= 0:
        for unit in todo:
            yield cut_unit(unit, height)
        return
    ahead = 2 * workers + 1
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        pending: deque[Future] = deque()
        try:
            for unit in todo:
                pending.append(pool.submit(cut_unit, unit, height))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


# ---------------------------------------------------------------- word geometry

def page_words(spans: list[WordSpan], polygon: list[tuple[float, float]], strip_width: int) -> list[WordResult]:
    """Word results with page polygons: strip x mapped linearly onto the line polygon's x-extent, then the
    polygon clipped to that band (lines.py straightens along the baseline; this is exact for straight lines)."""
    xs = [p[0] for p in polygon]
    left, right = min(xs), max(xs)
    scale = (right - left) / max(strip_width, 1)
    out = []
    for w in spans:
        clipped = clip_band(polygon, left + w.x0 * scale, left + w.x1 * scale)
        out.append(WordResult(unicodedata.normalize("NFC", w.text), w.conf, clipped))
    return out


def clip_band(polygon: list[tuple[float, float]], x0: float, x1: float) -> list[tuple[float, float]]:
    """The part of a polygon between two vertical lines (Sutherland-Hodgman against each)."""
    def clip(points, keep, cross_x):
        out = []
        for i, p in enumerate(points):
            q = points[i - 1]
            if keep(p):
                if not keep(q):
                    out.append(cross(q, p, cross_x))
                out.append(p)
            elif keep(q):
                out.append(cross(q, p, cross_x))
        return out

    def cross(a, b, x):
        t = (x - a[0]) / (b[0] - a[0])
        return (x, a[1] + t * (b[1] - a[1]))

    points = clip(list(polygon), lambda p: p[0] >= x0, x0)
    return clip(points, lambda p: p[0] <= x1, x1) if points else []


# ---------------------------------------------------------------- writing back

def write_back(recognised: Iterable[Recognised], metadata: dict[str, str], summary: Summary,
               log: Callable[[str], None], text: bool = False) -> None:
    """Write each page to its output path (whole or not at all), with `text` its plain text beside it, and each
    list file's readings to its results file (`path<TAB>confidence<TAB>text`); count in `summary` what was
    written and what was not, and say why."""
    listed: dict[Path, list[str]] = {}
    for r in recognised:
        if r.error is not None:
            summary.skipped[skip_reason(r.error)] += 1
            log(f"skipped: {r.error}")
            continue
        summary.lines_failed += len(r.failed)
        for line_id, why in r.failed:
            # the rule: a line not recognised is written with no text, so no old text passes for a reading
            outcome = "written without text" if line_id is not None else \
                "not recognised, and without an id of its own its text could not be emptied"
            log(f"{r.unit.xml_path or r.unit.key}: {why}; {outcome}")
        summary.lines += len(set(r.results) - {line_id for line_id, _ in r.failed})
        if r.unit.xml_path is None:
            listed.setdefault(r.unit.output_path, []).extend(
                f"{key}\t{res.conf:.4f}\t{res.text}" for key, res in r.results.items())
            continue
        try:
            r.unit.output_path.parent.mkdir(parents=True, exist_ok=True)
            write_page(r.unit.xml_path, r.unit.output_path, r.results,
                       {**metadata, "not_recognised": len(r.failed)} if r.failed else metadata)
            if text:
                save_text(text_path(r.unit.output_path), lines_text(r.results[line.id].text for line in r.page.lines))
        except (OSError, UserError) as exc:
            summary.skipped["could not be written"] += 1
            log(f"{r.unit.output_path}: could not write ({getattr(exc, 'strerror', None) or exc})")
            continue
        summary.pages += 1
    for target, rows in listed.items():
        try:
            write_atomic(target, ("\n".join(rows) + "\n").encode("utf-8"))
        except OSError as exc:
            raise UserError(f"{target}: could not write the results file ({exc.strerror})") from None
        log(f"wrote {target} ({len(rows)} lines)")


def check_writable(folder: Path) -> None:
    """UserError when the output folder cannot be made or written to: better now than after the first batch."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{folder}: output folder is not writable")


def skip_reason(error: str) -> str:
    """A short category for the summary of why pages were skipped."""
    for key, reason in (("image not found", "image missing"), ("image", "image unreadable"),
                        ("not a PAGE", "not PAGE XML"), ("XML", "XML unreadable")):
        if key in error:
            return reason
    return "unreadable"


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' with 1 <= K <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UserError(f"--shard {text}: expected K/N with 1 <= K <= N, e.g. 1/4")
    return int(m.group(1)), int(m.group(2))

"""Batch recognition: stream pages, cut lines on worker processes, recognise width-sorted batches, write the text back.

Torch is imported only where a model runs: the cutting workers import this module and need none of it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import unicodedata
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from loghi_ft import __version__
from loghi_ft.errors import UserError
from loghi_ft.pages.lines import cut_page, load_image
from loghi_ft.atomic import write_atomic
from loghi_ft.pages.listfile import read_list
from loghi_ft.pages.documents import LineResult, Page, WordResult, find_pages, read_page, write_page

# a page's output names the model that wrote it; the same text is in every format's metadata (see write_page)
DONE_BY = re.compile(rb"model_hash=([0-9a-f]{16})")
LIST_CHUNK = 64  # line images of a list file cut per worker task
BATCH_COLUMNS = 1024  # padded input columns per line of --batch-size that one batch may hold (bounds memory)


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
    strips: list[tuple[str, np.ndarray | None, str | None]] = field(default_factory=list)  # (line id, strip, why not)
    error: str | None = None                   # the whole unit could not be read


@dataclass
class Recognised:
    unit: Unit
    page: Page | None
    results: dict[str, LineResult]             # every line of the unit; a line that could not be cut reads ""
    failed: dict[str, str] = field(default_factory=dict)  # line id -> why it could not be cut
    error: str | None = None


@dataclass
class Summary:
    pages: int = 0
    lines: int = 0
    lines_failed: int = 0
    skipped: Counter = field(default_factory=Counter)   # reason -> pages
    seconds: float = 0.0

    def text(self) -> str:
        rate = self.lines / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{self.pages} pages, {self.lines} lines recognised in {self.seconds:.1f} s ({rate:.1f} lines/s)",
                 f"{self.lines_failed} lines could not be cut (written without text)"]
        skipped = sum(self.skipped.values())
        parts.append(f"{skipped} pages skipped" + (": " + ", ".join(f"{n} {why}" for why, n in
                                                                     self.skipped.most_common()) if skipped else ""))
        return "; ".join(parts)


# ---------------------------------------------------------------- recognisers

class TorchRecognizer:
    """A model folder on a torch device: a preprocessed batch -> logits (N, T, K) and valid lengths."""

    def __init__(self, path: Path, device: str = "cpu", bf16: bool = False):
        from loghi_ft.model.folder import find_model_folder, load_model, model_hash
        folder = find_model_folder(path)
        self.model, self.info = load_model(folder, device)
        import torch
        self.model.to(memory_format=torch.channels_last)  # NHWC convolutions run faster, on CPU as on GPU
        self.device = device
        self.bf16 = bf16
        self.hash = model_hash(folder)
        self.name = f"{folder.parent.name}/{folder.name}" if folder.name in ("best_val", "last") else folder.name

    def __call__(self, batch, widths):
        import torch
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True, memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(x)
            return logits.float().cpu(), self.model.output_lengths(widths).cpu()


class OnnxEngine:
    """An exported .onnx model run by onnxruntime, behind the same call as TorchRecognizer."""

    def __init__(self, path: Path):
        from loghi_ft.model.onnx import OnnxRecognizer
        if not Path(path).is_file():
            raise UserError(f"{path}: ONNX model not found")
        self.recognizer = OnnxRecognizer(path)
        self.info = self.recognizer.info
        digest = hashlib.sha256(Path(path).read_bytes())
        self.hash = digest.hexdigest()[:16]
        self.name = Path(path).name

    def __call__(self, batch, widths):
        import torch
        logits = self.recognizer(batch.numpy().astype(np.float32, copy=False))
        lengths = self.recognizer.output_lengths(widths.numpy())
        return torch.as_tensor(np.asarray(logits)), torch.as_tensor(np.asarray(lengths))


def open_recognizer(path: Path, gpu: str = "-1", precision: str = "auto"):
    """A TorchRecognizer for a model folder, or an OnnxEngine for a .onnx file."""
    if str(path).lower().endswith(".onnx"):
        return OnnxEngine(Path(path))
    device = device_for(gpu)
    return TorchRecognizer(Path(path), device, use_bf16(precision, device))


def use_bf16(precision: str, device: str) -> bool:
    """bf16 when asked, or for auto where the device computes in it: GPUs that have it, CPUs with AVX512-BF16 or
    AMX (a forward pass of `small` 0.28 -> 0.17 s; on the 308 timeus test lines the base model's CER was 7.61% in
    fp32 and 7.66% in bf16, an earlier one's 7.61% and 7.59%)."""
    if precision != "auto":
        return precision == "bf16"
    if device == "cpu":
        from loghi_ft.train.loop import cpu_has_bf16
        return cpu_has_bf16()
    import torch
    return torch.cuda.is_bf16_supported()


def device_for(gpu: str) -> str:
    """Torch device of a --gpu value: -1 is the CPU; for several GPUs, inference uses the first (shard for more)."""
    first = str(gpu).split(",")[0].strip()
    if first in ("", "-1"):
        return "cpu"
    import torch
    if not first.isdigit():
        raise UserError(f"--gpu {gpu}: expected -1, a GPU number or numbers like 0,1")
    if not torch.cuda.is_available() or int(first) >= torch.cuda.device_count():
        raise UserError(f"--gpu {gpu}: no such CUDA GPU here ({torch.cuda.device_count()} visible); use --gpu -1")
    return f"cuda:{first}"


# ---------------------------------------------------------------- input

def units(inputs: Iterable[str | Path], output: Path | None, shard: tuple[int, int] = (1, 1),
          warn: Callable[[str], None] | None = None) -> Iterator[Unit]:
    """Pages (and list-file chunks) of the inputs in this shard, with where each page's output goes."""
    k, n = shard
    found = False
    index = 0  # over all pages in input order (sorted within each folder): every shard sees the same order
    for item in inputs:
        item = Path(item)
        if item.is_file() and item.suffix.lower() != ".xml":
            try:
                chunks = list(list_units(item, output, shard))
            except UserError as exc:
                if warn:
                    warn(str(exc))
                continue
            found = True
            yield from chunks
            continue
        root = item if item.is_dir() else item.parent
        any_page = False
        try:
            pages = list(find_pages([item])) if not item.is_dir() else find_pages([item])
        except UserError as exc:
            if warn:
                warn(str(exc))
            continue
        for xml in pages:
            any_page = found = True
            rel = Path(os.path.relpath(xml, root))
            index += 1
            if (index - 1) % n != k - 1:
                continue
            yield Unit(rel.as_posix(), xml, xml if output is None else output / rel)
        if not any_page and warn:
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


def done_by(path: Path) -> str | None:
    """Hash of the model that last wrote this page, from its loghi-ft metadata; None when there is none."""
    try:
        found = DONE_BY.findall(path.read_bytes())
    except OSError:
        return None
    return found[-1].decode() if found else None


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
        return CutUnit(unit, page, [(line.id, strip, why) for line, strip, why in cut_page(page, height)])
    except UserError as exc:
        message = str(exc)
        if not message.startswith(str(unit.xml_path)):
            message = f"{unit.xml_path}: {message}"
        return CutUnit(unit, page, error=message)  # the page, when it was read, still says which lines it has


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


# ---------------------------------------------------------------- recognition

def recognise(cut: Iterable[CutUnit], engine, decoder, batch_size: int = 32, words: bool = False
              ) -> Iterator[Recognised]:
    """Recognise the lines of consecutive units together, sorted by width, yielding each unit in input order."""
    window_lines = 8 * batch_size  # enough lines to find similar widths, few enough to write pages steadily
    window: list[CutUnit] = []
    count = 0
    for c in cut:
        window.append(c)
        count += len(c.strips)
        if count >= window_lines:
            yield from recognise_window(window, engine, decoder, batch_size, words)
            window, count = [], 0
    if window:
        yield from recognise_window(window, engine, decoder, batch_size, words)


def recognise_window(window: list[CutUnit], engine, decoder, batch_size: int, words: bool) -> Iterator[Recognised]:
    from loghi_ft.model.pixels import preprocess
    todo = [(u, i) for u, c in enumerate(window) if c.error is None
            for i, (_, strip, _) in enumerate(c.strips) if strip is not None]
    # similar widths share a batch: less padding to compute
    todo.sort(key=lambda ui: aspect(window[ui[0]].strips[ui[1]][1]))
    read: dict[tuple[int, int], LineResult] = {}
    for batch in batches(todo, [aspect(window[u].strips[i][1]) * engine.info.height for u, i in todo], batch_size):
        strips = [window[u].strips[i][1] for u, i in batch]
        x, widths = preprocess(strips, engine.info)
        logits, lengths = engine(x, widths)
        for (u, i), decoded, frames, width in zip(batch, decoder(logits, lengths), lengths.tolist(), widths.tolist()):
            # PAGE XML readers expect composed characters, whatever normalisation the model was trained on
            result = LineResult(unicodedata.normalize("NFC", decoded.text), decoded.conf)
            page = window[u].page
            if words and page is not None:
                result.words = page_words(decoded, page.lines[i].polygon, int(frames), int(width))
            read[(u, i)] = result
    for u, c in enumerate(window):
        if c.error is not None:
            yield Recognised(c.unit, c.page, {}, error=c.error)
            continue
        results, failed = {}, {}
        for i, (line_id, strip, why) in enumerate(c.strips):
            # an uncut line is written empty: its old text must not pass for a reading
            results[line_id] = read.get((u, i)) or LineResult("", 0.0)
            if strip is None:
                failed[line_id] = why or f"line {line_id}: not cut"
        yield Recognised(c.unit, c.page, results, failed)


def batches(items: list, widths: list[float], batch_size: int) -> Iterator[list]:
    """Consecutive batches of at most batch_size items and batch_size * BATCH_COLUMNS padded columns:
    long lines come in smaller batches, so memory does not grow with line width."""
    batch: list = []
    for item, width in zip(items, widths):
        if batch and (len(batch) == batch_size or (len(batch) + 1) * width > batch_size * BATCH_COLUMNS):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def aspect(strip: np.ndarray) -> float:
    """Width per unit of height: the strip's width once scaled to the model's height."""
    return strip.shape[1] / max(strip.shape[0], 1)


def page_words(decoded, polygon: list[tuple[float, float]], frames: int, strip_width: int) -> list[WordResult]:
    """Word results with page polygons: strip x mapped linearly onto the line polygon's x-extent, then the
    polygon clipped to that band (lines.py straightens along the baseline; this is exact for straight lines)."""
    from loghi_ft.model.decode import word_spans
    xs = [p[0] for p in polygon]
    left, right = min(xs), max(xs)
    scale = (right - left) / max(strip_width, 1)
    out = []
    for w in word_spans(decoded.chars, frames, strip_width):
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


# ---------------------------------------------------------------- the run

def run_inference(inputs: list[str | Path], model: Path, output: Path | None, *, batch_size: int = 32,
                  gpu: str = "-1", beam_width: int = 1, overwrite: bool = False, shard: tuple[int, int] = (1, 1),
                  workers: int = 1, words: bool = False, lm: Path | None = None, lm_weight: float = 0.3,
                  precision: str = "auto", log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> Summary:
    """Recognise every page of the inputs and write it to `output` (mirroring the input tree), or in place."""
    start = time.perf_counter()
    if output is not None:
        check_writable(output)
    engine = open_recognizer(model, gpu, precision)
    decoder = make_decoder(engine.info, beam_width, lm, lm_weight, words)
    metadata = {"version": __version__, "model": engine.name, "model_hash": engine.hash,
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "decoder": "greedy" if beam_width <= 1 else f"beam{beam_width}" + ("+lm" if lm else "")}
    summary = Summary()
    written: set[Path] = set()

    def todo() -> Iterator[Unit]:
        for unit in units(inputs, output, shard, warn=log):
            if unit.xml_path is None:
                yield unit
            elif unit.output_path in written:
                summary.skipped["with the same output path as an earlier page"] += 1
                log(f"{unit.xml_path}: skipped, its output {unit.output_path} was already written in this run")
            elif not overwrite and done_by(unit.output_path) == engine.hash:
                summary.skipped["already done by this model"] += 1
            else:
                written.add(unit.output_path)
                yield unit

    listed: dict[Path, list[str]] = {}
    for r in recognise(cut_stream(todo(), engine.info.height, workers), engine, decoder, batch_size, words=words):
        summary.lines_failed += len(r.failed)
        for why in r.failed.values():
            log(f"{r.unit.xml_path or r.unit.key}: {why}")
        if r.error is not None:
            summary.skipped[skip_reason(r.error)] += 1
            log(f"skipped: {r.error}")
            continue
        summary.lines += len(r.results) - len(r.failed)
        if r.unit.xml_path is None:
            listed.setdefault(r.unit.output_path, []).extend(
                f"{key}\t{res.conf:.4f}\t{res.text}" for key, res in r.results.items())
            continue
        try:
            r.unit.output_path.parent.mkdir(parents=True, exist_ok=True)
            write_page(r.unit.xml_path, r.unit.output_path, r.results, metadata)
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
    summary.seconds = time.perf_counter() - start
    return summary


def make_decoder(info, beam_width: int, lm: Path | None, lm_weight: float, words: bool):
    from loghi_ft.model.decode import CharNgram, Decoder
    from loghi_ft.model.codec import Codec
    ngram = CharNgram.from_file(lm, normalization=info.normalization) if lm else None
    if ngram is not None and beam_width <= 1:
        raise UserError("--lm biases the beam search: give --beam-width too (e.g. 10)")
    return Decoder(Codec(info.charset), beam_width, ngram, lm_weight, frames=words)


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

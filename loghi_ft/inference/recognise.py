"""The model half of inference: pages recognised in width-sorted batches (`recognise_pages`, which `infer` and
`eval --model` both call), and `run_inference`, which writes what it read back into the pages.
"""

from __future__ import annotations

import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from loghi_ft import __version__
from loghi_ft.devices import keep_freed_memory, share_cores, worker_count
from loghi_ft.errors import UserError
from loghi_ft.inference.pages import (CutUnit, Recognised, Summary, Unit, check_writable, cut_stream, done_by,
                                      page_words, units, write_back)
from loghi_ft.model.codec import Codec
from loghi_ft.model.decode import CharNgram, Decoder, word_spans
from loghi_ft.model.folder import ModelInfo
from loghi_ft.model.pixels import preprocess
from loghi_ft.model.recognizers import Recognizer, open_recognizer
from loghi_ft.pages.documents import LineResult, read_page
from loghi_ft.pages.text import page_text, save_text, text_path

BATCH_COLUMNS = 1024  # padded input columns per line of --batch-size that one batch may hold (bounds memory)


def run_inference(inputs: list[str | Path], model: Path, output: Path | None, *, batch_size: int = 32,
                  gpu: str = "-1", beam_width: int = 1, overwrite: bool = False, shard: tuple[int, int] = (1, 1),
                  workers: int | None = None, words: bool = False, lm: Path | None = None, lm_weight: float = 0.3,
                  precision: str = "auto", text: bool = False, layout_model: Path | None = None,
                  redo_layout: bool = False,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> Summary:
    """Recognise every page of the inputs and write it to `output` (mirroring the input tree), or in place; with
    `text`, each page's plain text beside it (also for a page done before that has none yet). With a layout model,
    bare images and pages without lines (all pages with `redo_layout`) are segmented first (layout/segment.py)."""
    start = time.perf_counter()
    if output is not None:
        check_writable(output)
    recognizer = open_recognizer(model, gpu, precision)
    segmented = None
    if layout_model is not None:
        from loghi_ft.layout.segment import run_segment

        found = run_segment(inputs, layout_model, output, redo=redo_layout, gpu=gpu, precision=precision,
                            shard=shard, log=log)
        log(f"segment: {found.text()}")
        segmented = (found.planned, found.written)
    metadata = {"version": __version__, "model": recognizer.name, "model_hash": recognizer.hash,
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "decoder": "greedy" if beam_width <= 1 else f"beam{beam_width}" + ("+lm" if lm else "")}
    summary = Summary()
    if segmented is not None and found.failed:
        summary.skipped["not segmented"] += len(found.failed)
    written: set[Path] = set()

    def skip(unit: Unit) -> bool:
        if unit.xml_path is None:
            return False
        if unit.output_path in written:
            summary.skipped["with the same output path as an earlier page"] += 1
            log(f"{unit.xml_path}: skipped, its output {unit.output_path} was already written in this run")
            return True
        done = None if overwrite else done_by(unit.output_path)
        if done is not None and done[0] == recognizer.hash:
            summary.done_before += 1
            if done[1]:
                summary.lines_failed += done[1]
                log(f"{unit.output_path}: {done[1]} lines not recognised when this model wrote it (listed then)")
            if text and not text_path(unit.output_path).exists():
                save_done_text(unit.output_path)
            return True
        written.add(unit.output_path)
        return False

    def save_done_text(page: Path) -> None:
        try:
            save_text(text_path(page), page_text(read_page(page)))
        except UserError as exc:
            summary.skipped["text could not be written"] += 1
            log(str(exc))

    def unread(message: str) -> None:
        summary.skipped["inputs not read"] += 1
        log(f"skipped: {message}")

    recognised = recognise_pages(inputs, recognizer, output=output, shard=shard, batch_size=batch_size,
                                 beam_width=beam_width, lm=lm, lm_weight=lm_weight, words=words, workers=workers,
                                 skip=skip, unread=unread, log=log, segmented=segmented)
    write_back(recognised, metadata, summary, log, text)
    summary.seconds = time.perf_counter() - start
    return summary


def recognise_pages(inputs: Iterable[str | Path], recognizer: Recognizer, *, output: Path | None = None,
                    shard: tuple[int, int] = (1, 1), batch_size: int = 32, beam_width: int = 1, lm: Path | None = None,
                    lm_weight: float = 0.3, words: bool = False, workers: int | None = None,
                    skip: Callable[[Unit], bool] | None = None, unread: Callable[[str], None] | None = None,
                    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                    segmented: tuple[set[Path], dict[str, Path]] | None = None) -> Iterator[Recognised]:
    """Every page (and list-file chunk) of the inputs in this shard, read by `recognizer` (model/recognizers.py),
    in input order; nothing is written. Units whose output (under `output`, or in place) is not wanted are left out
    by `skip` before they are cut; an input that cannot be read goes to `unread` (default: `log`). `workers`
    processes cut lines (None or negative: devices.worker_count chooses) and torch's threads get the cores they
    leave."""
    decoder = make_decoder(recognizer.info, beam_width, lm, lm_weight)
    workers = worker_count(workers)
    share_cores(workers)
    if getattr(recognizer, "device", "cpu") == "cpu":  # an ONNX model runs on the CPU
        keep_freed_memory()
    todo = (unit for unit in units(inputs, output, shard, warn=log, unread=unread, segmented=segmented)
            if skip is None or not skip(unit))
    return recognise(cut_stream(todo, recognizer.info.height, workers), recognizer, decoder, batch_size, words)


def make_decoder(info: ModelInfo, beam_width: int, lm: Path | None, lm_weight: float) -> Decoder:
    ngram = CharNgram.from_file(lm, normalization=info.normalization) if lm else None
    if ngram is not None and beam_width <= 1:
        raise UserError("--lm biases the beam search: give --beam-width too (e.g. 10)")
    return Decoder(Codec(info.charset), beam_width, ngram, lm_weight)


def recognise(cut: Iterable[CutUnit], recognizer: Recognizer, decoder: Decoder, batch_size: int = 32,
              words: bool = False) -> Iterator[Recognised]:
    """Recognise the lines of consecutive units together, sorted by width, yielding each unit in input order."""
    window_lines = 8 * batch_size  # enough lines to find similar widths, few enough to write pages steadily
    window: list[CutUnit] = []
    count = 0
    for c in cut:
        window.append(c)
        count += len(c.strips)
        if count >= window_lines:
            yield from recognise_window(window, recognizer, decoder, batch_size, words)
            window, count = [], 0
    if window:
        yield from recognise_window(window, recognizer, decoder, batch_size, words)


def recognise_window(window: list[CutUnit], recognizer: Recognizer, decoder: Decoder, batch_size: int, words: bool
                     ) -> Iterator[Recognised]:
    todo = [(u, i) for u, c in enumerate(window) if c.error is None
            for i, (_, strip, _) in enumerate(c.strips) if strip is not None]
    # similar widths share a batch: less padding to compute
    todo.sort(key=lambda ui: aspect(window[ui[0]].strips[ui[1]][1]))
    height = recognizer.info.height
    read: dict[tuple[int, int], LineResult] = {}
    for batch in batches(todo, [aspect(window[u].strips[i][1]) * height for u, i in todo], batch_size):
        x, widths = preprocess([window[u].strips[i][1] for u, i in batch], recognizer.info)
        logits, lengths = recognizer(x, widths)
        for (u, i), decoded, frames, width in zip(batch, decoder(logits, lengths), lengths.tolist(), widths.tolist()):
            # PAGE XML readers expect composed characters, whatever normalisation the model was trained on
            result = LineResult(unicodedata.normalize("NFC", decoded.text), decoded.conf)
            page = window[u].page
            if words and page is not None:
                spans = word_spans(decoded.chars, int(frames), int(width))
                result.words = page_words(spans, page.lines[i].polygon, int(width))
            read[(u, i)] = result
    for u, c in enumerate(window):
        if c.error is not None:
            yield Recognised(c.unit, c.page, {}, error=c.error)
            continue
        results, failed = {}, []
        for i, (line_id, strip, why) in enumerate(c.strips):
            if strip is not None:
                results[line_id] = read[(u, i)]
                continue
            # a line not recognised is written empty: its old text must not pass for a reading
            failed.append((line_id, why or f"line {line_id}: not cut"))
            if line_id is not None:
                results[line_id] = LineResult("", 0.0)
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

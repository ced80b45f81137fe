"""Pages in, training data out: line PNGs, Loghi list files split by page, and a report of what was skipped."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import random
import re
import time
import unicodedata
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from tqdm import tqdm

from loghi_ft.pages.cache import CacheWriter
from loghi_ft.errors import UserError
from loghi_ft.pages.lines import cut_page
from loghi_ft.atomic import write_atomic
from loghi_ft.pages.listfile import Sample, write_list
from loghi_ft.pages.documents import find_pages, read_page

SPLITS = ("train", "val", "test")
CACHED = ("train", "val")  # the splits whose packed strips prepare builds; training reads them
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test"}
# measured on timeus lines: level 1 with run-length matching and the "sub" filter encodes a line in 0.6 ms,
# level 1 alone in 1.4 ms, for files of about the same size (23 kB against 25 kB)
PNG_OPTIONS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
               cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
UNSAFE_NAME = re.compile(r"[^\w.-]+")

# reasons a page or line is left out, as counted in the report
EMPTY = "empty transcription"
BAD_PAGE = "page unusable"
BAD_LINE = "bad line in XML"
UNCUTTABLE = "line cannot be cut from the image"
NO_SPLIT = "page not in split file"


@dataclass
class Skip:
    file: str
    line: str | None
    reason: str   # one of the constants above
    message: str  # what exactly was wrong, for a person


@dataclass
class PageResult:
    xml_path: Path
    split: str
    samples: list[Sample] = field(default_factory=list)
    strips: list[np.ndarray] = field(default_factory=list)  # one per sample of a CACHED split, for its cache
    skips: list[Skip] = field(default_factory=list)
    lines: int = 0  # lines read from the XML, written or not


@dataclass
class PageTask:
    xml_path: Path
    out_dir: Path
    split: str
    height: int
    normalize: str
    clean_whitespace: bool


def prepare(inputs: Iterable[str | Path], output: str | Path, split_file: str | Path | None = None,
            val_fraction: float = 0.1, seed: int = 1, height: int = 64, normalize: str = "NFC",
            clean_whitespace: bool = True, workers: int | None = None, progress: bool = True) -> dict:
    """Cut every transcribed line of the pages into `output`; write the list files, their caches and the report."""
    started = time.perf_counter()
    inputs = [Path(p) for p in inputs]
    output = Path(output)
    if height < 8:
        raise UserError(f"--height {height}: line images need at least 8 rows")
    if normalize not in ("NFC", "NFD", "none"):
        raise UserError(f"--normalize {normalize}: expected NFC, NFD or none")
    xmls = list(find_pages(inputs))
    if not xmls:
        raise UserError(f"no PAGE or ALTO files found in {', '.join(map(str, inputs))}")
    keys = _page_keys(xmls)
    if split_file is not None:
        splits = _splits_from_file(Path(split_file), xmls)
    else:
        splits = _splits_by_fraction(xmls, keys, val_fraction, seed)
    output.mkdir(parents=True, exist_ok=True)
    tasks = [PageTask(x, output / "lines" / keys[x], splits[x], height, normalize, clean_whitespace)
             for x in xmls if splits.get(x)]
    results = {x: PageResult(x, "", skips=[Skip(str(x), None, NO_SPLIT, f"{x}: not listed in {split_file}")])
               for x in xmls if not splits.get(x)}
    list_files = {"all": output / "training_all.txt"}
    for split in SPLITS:
        if split != "test" or any(t.split == "test" for t in tasks):
            list_files[split] = output / f"training_all_{split}.txt"
    # training reads packed strips, not PNGs: the train and val caches take the strips as they are cut, so no line
    # image is decoded again (the test list gets its own cache when something first reads it)
    with ExitStack() as stack:
        writers = {split: stack.enter_context(CacheWriter(list_files[split], height)) for split in CACHED}
        for result in _run(tasks, workers, progress):
            for strip in result.strips:
                writers[result.split].add(strip)
            result.strips.clear()  # their pixels are in the cache: hold on to the samples only
            results[result.xml_path] = result
        ordered = [results[x] for x in xmls]
        lists = {"all": [s for r in ordered for s in r.samples]}
        for split in SPLITS:
            lists[split] = [s for r in ordered if r.split == split for s in r.samples]
        for name, path in list_files.items():
            write_list(path, lists[name])
        caches = {split: str(writer.finish().folder) for split, writer in writers.items() if lists[split]}

    seconds = time.perf_counter() - started
    written = len(lists["all"])
    report = {
        "inputs": [str(p) for p in inputs],
        "output": str(output),
        "height": height,
        "normalize": normalize,
        "clean_whitespace": clean_whitespace,
        "split": f"file {split_file}" if split_file else f"val fraction {val_fraction}, seed {seed}",
        **_counts(ordered, lists),
        "list_files": {name: str(path) for name, path in list_files.items()},
        "caches": caches,
        "seconds": round(seconds, 2),
        "lines_per_second": round(written / seconds, 1) if seconds > 0 else None,
        "skipped": [vars(s) for r in ordered for s in r.skips],
    }
    write_atomic(output / "prepare_report.json", json.dumps(report, ensure_ascii=False, indent=1).encode("utf-8"))
    return report


def _counts(ordered: list[PageResult], lists: dict[str, list[Sample]]) -> dict:
    """The report's counts of pages and lines: found, used or written, skipped, per split and per reason."""
    skips = [s for r in ordered for s in r.skips]
    reasons: dict[str, int] = {}
    for s in skips:
        reasons[s.reason] = reasons.get(s.reason, 0) + 1
    return {
        "pages": {"found": len(ordered),
                  "used": sum(1 for r in ordered if r.samples),
                  "skipped": sum(1 for s in skips if s.line is None)},
        "lines": {"found": sum(r.lines for r in ordered), "written": len(lists["all"]),
                  "skipped": sum(1 for s in skips if s.line is not None)},
        "splits": {split: {"pages": sum(1 for r in ordered if r.split == split),
                           "lines": len(lists[split])} for split in SPLITS},
        "skipped_by_reason": reasons,
    }


def clean_text(text: str, normalize: str, clean_whitespace: bool) -> str:
    """Unicode-normalised text; runs of whitespace made one space and ends stripped when `clean_whitespace`."""
    if normalize != "none":
        text = unicodedata.normalize(normalize, text)
    if clean_whitespace:
        return " ".join(text.split())
    # a list file holds one line per sample, tab-separated: these can never stay
    return re.sub(r"[\t\r\n\v\f\x85\u2028\u2029]", " ", text)


def _page_keys(xmls: list[Path]) -> dict[Path, str]:
    """A folder name per page, unique and readable: the XML's path below the folder all pages share."""
    common = Path(os.path.commonpath([x.resolve().parent for x in xmls]))
    keys = {}
    for x in xmls:
        rel = x.resolve().with_suffix("").relative_to(common)
        keys[x] = str(rel)
    return keys


def _splits_from_file(split_file: Path, xmls: list[Path]) -> dict[Path, str | None]:
    """Page -> split from a TSV with columns `xml` and `split` (paths relative to the TSV's folder)."""
    try:
        with open(split_file, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except FileNotFoundError:
        raise UserError(f"{split_file}: split file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{split_file}: not a readable TSV file ({exc})") from None
    if not rows or "xml" not in rows[0] or "split" not in rows[0]:
        raise UserError(f"{split_file}: needs a header line with the columns 'xml' and 'split' (tab-separated)")
    by_path, by_name = {}, {}
    for number, row in enumerate(rows, 2):
        name = (row.get("xml") or "").strip()
        split = SPLIT_NAMES.get((row.get("split") or "").strip().lower())
        if split is None:
            raise UserError(f"{split_file}:{number}: split '{row.get('split')}' is not one of train, val, test")
        by_path[(split_file.parent / name).resolve()] = split
        by_name.setdefault(Path(name).name, []).append(split)
    splits = {}
    for x in xmls:
        split = by_path.get(x.resolve())
        if split is None and len(by_name.get(x.name, [])) == 1:
            split = by_name[x.name][0]  # the TSV may name pages by file name alone
        splits[x] = split
    return splits


def _splits_by_fraction(xmls: list[Path], keys: dict[Path, str], fraction: float, seed: int) -> dict[Path, str]:
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"--val-fraction {fraction}: expected a number from 0 up to (not including) 1")
    pages = sorted(xmls, key=lambda x: keys[x])
    random.Random(seed).shuffle(pages)
    n_val = round(fraction * len(pages))
    if fraction > 0 and len(pages) >= 2:
        n_val = min(max(n_val, 1), len(pages) - 1)
    val = set(pages[:n_val])
    return {x: "val" if x in val else "train" for x in xmls}


def _run(tasks: list[PageTask], workers: int | None, progress: bool):
    # N processes cut pages, 0 none (the main process does); None: one per core, since the main one only collects
    workers = min(os.cpu_count() or 1 if workers is None else workers, len(tasks))
    bar = tqdm(total=len(tasks), unit="page", desc="prepare", disable=None if progress else True)
    try:
        if workers == 0 or len(tasks) == 1:
            for task in tasks:
                yield _prepare_page(task)
                bar.update()
            return
        # not fork: a child forked after OpenCV started its thread pool can hang on it; the fork server is a
        # clean process that has imported this module once, so starting workers from it stays cheap
        context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
        if os.name == "posix":
            context.set_forkserver_preload([__name__])
        with context.Pool(workers, initializer=_worker_init) as pool:
            # in page order: the caches take the strips in the order of the list files
            for result in pool.imap(_prepare_page, tasks, chunksize=1):
                yield result
                bar.update()
    finally:
        bar.close()


def _worker_init() -> None:
    # one OpenCV thread per process: the processes already fill the cores
    cv2.setNumThreads(1)


def _prepare_page(task: PageTask) -> PageResult:
    """Read one page, cut its transcribed lines to PNG files; every problem becomes a Skip."""
    result = PageResult(task.xml_path, task.split)
    file = str(task.xml_path)
    try:
        page = read_page(task.xml_path)
    except UserError as exc:
        result.skips.append(Skip(file, None, BAD_PAGE, str(exc)))
        return result
    result.lines = len(page.lines) + len(page.problems)
    for problem in page.problems:
        line_id = problem.split(":", 1)[0].removeprefix("line ")
        result.skips.append(Skip(file, line_id, BAD_LINE, f"{file}: {problem}"))
    texts = {}
    for line in page.lines:
        text = clean_text(line.text, task.normalize, task.clean_whitespace)
        if text.strip():
            texts[line.id] = text
        else:
            result.skips.append(Skip(file, line.id, EMPTY, f"{file}: line {line.id}: empty transcription"))
    page.lines = [line for line in page.lines if line.id in texts]
    if not page.lines:
        return result
    task.out_dir.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    try:
        for line, strip, reason in cut_page(page, task.height):
            if strip is None:
                result.skips.append(Skip(file, line.id, UNCUTTABLE, f"{file}: {reason}"))
                continue
            name = _file_name(line.id, names)
            path = task.out_dir / name
            _write_png(path, strip)
            result.samples.append(Sample(path, texts[line.id]))
            if task.split in CACHED:
                result.strips.append(strip)
    except UserError as exc:
        result.samples.clear()
        result.strips.clear()
        result.skips.append(Skip(file, None, BAD_PAGE, str(exc) if file in str(exc) else f"{file}: {exc}"))
    return result


def _file_name(line_id: str, taken: set[str]) -> str:
    base = UNSAFE_NAME.sub("_", line_id).strip("._") or "line"
    name, n = f"{base}.png", 1
    while name in taken:
        n += 1
        name = f"{base}_{n}.png"
    taken.add(name)
    return name


def _write_png(path: Path, strip) -> None:
    ok, data = cv2.imencode(".png", strip, PNG_OPTIONS)
    if not ok:
        raise UserError(f"{path}: could not encode the line image")
    # temp name and rename, as everywhere; no fsync per line image: a crash loses lines, never half a file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({exc.strerror})") from None

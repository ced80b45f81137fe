"""Packed, memory-mappable line images for training, built once per list file and height.

`<list>.h<height>.cache/` beside the list file holds `pixels.u8` (every strip's
rows, one strip after another), `index.npz` (offsets, widths, weights) and
`meta.json` (texts, image paths, problems, and the key of the sources it was
built from). The key covers the list file's bytes, every image's size and
modification time, and the height, so any change to them rebuilds the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from loghi_ft.atomic import recover_folder, replace_folder, temp_folder
from loghi_ft.errors import UserError
from loghi_ft.pages.lines import load_image
from loghi_ft.pages.listfile import Sample, read_list

CACHE_VERSION = 1
PIXELS, INDEX, META = "pixels.u8", "index.npz", "meta.json"


def cache_folder(list_file: Path, height: int) -> Path:
    list_file = Path(list_file)
    return list_file.with_name(f"{list_file.name}.h{height}.cache")


def ensure_cache(list_file: Path, height: int, workers: int | None = None) -> LineCache:
    """Build the cache beside the list file (atomically) if missing or stale, then open it."""
    list_file = Path(list_file)
    samples = read_list(list_file)
    key = _source_key(list_file, samples, height)
    folder = cache_folder(list_file, height)
    recover_folder(folder)
    meta = folder / META
    if meta.exists():
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("key") == key:
                return LineCache(folder)
        except (OSError, json.JSONDecodeError):
            pass  # a damaged cache is rebuilt
    _build(list_file, samples, height, key, folder, workers or min(8, os.cpu_count() or 1))
    return LineCache(folder)


class LineCache:
    """Line strips (uint8, height x W) and texts of one list file, memory-mapped."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / META).read_text(encoding="utf-8"))
        index = np.load(self.folder / INDEX)
        self.height: int = meta["height"]
        self.texts: list[str] = meta["texts"]
        self.paths: list[str] = meta["paths"]
        self.problems: list[str] = meta["problems"]
        self.offsets: np.ndarray = index["offsets"]
        self.widths: np.ndarray = index["widths"]
        self.weights: np.ndarray = index["weights"]
        self._pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        start, width = int(self.offsets[i]), int(self.widths[i])
        return self._data()[start: start + self.height * width].reshape(self.height, width), self.texts[i]

    def _data(self) -> np.ndarray:
        if self._pixels is None:
            path = self.folder / PIXELS
            self._pixels = np.memmap(path, np.uint8, "r") if path.stat().st_size else np.zeros(0, np.uint8)
        return self._pixels

    def __getstate__(self) -> dict:
        # worker processes reopen the map instead of receiving a copy of the pixels
        return {**self.__dict__, "_pixels": None}


def _source_key(list_file: Path, samples: list[Sample], height: int) -> str:
    digest = hashlib.sha256(f"{CACHE_VERSION}\n{height}\n".encode())
    digest.update(list_file.read_bytes())
    for s in samples:
        try:
            st = os.stat(s.path)
            digest.update(f"{s.path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{s.path}\tmissing\n".encode())
    return digest.hexdigest()


def _load(path: Path, height: int) -> tuple[np.ndarray | None, str | None]:
    """One strip at the cache's height, or the reason it cannot be read."""
    try:
        image = load_image(path)
    except UserError as exc:
        return None, str(exc)
    if image.shape[0] != height:
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_LINEAR)
    return np.ascontiguousarray(image), None


def _build(list_file: Path, samples: list[Sample], height: int, key: str, folder: Path, workers: int) -> None:
    tmp = temp_folder(folder)
    try:
        offsets, widths, weights, texts, paths, problems = [], [], [], [], [], []
        offset = 0
        with open(tmp / PIXELS, "wb") as out, ThreadPoolExecutor(workers) as pool:
            for sample, (strip, problem) in zip(samples, pool.map(lambda s: _load(s.path, height), samples)):
                if strip is None:
                    problems.append(problem)
                    print(f"loghi-ft: skipping line of {list_file}: {problem}", file=sys.stderr)
                    continue
                out.write(strip.tobytes())
                offsets.append(offset)
                widths.append(strip.shape[1])
                offset += strip.size
                weights.append(sample.weight)
                texts.append(sample.text)
                paths.append(str(sample.path))
        if samples and not texts:
            raise UserError(f"{list_file}: none of its {len(samples)} line images could be read (first: {problems[0]})")
        np.savez(tmp / INDEX, offsets=np.asarray(offsets, np.int64), widths=np.asarray(widths, np.int32),
                 weights=np.asarray(weights, np.float32))
        meta = {"version": CACHE_VERSION, "height": height, "list_file": str(list_file), "key": key,
                "lines": len(texts), "skipped": len(problems), "problems": problems, "texts": texts, "paths": paths}
        (tmp / META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        if problems:
            print(f"loghi-ft: {list_file}: skipped {len(problems)} of {len(samples)} lines (unreadable images)", file=sys.stderr)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

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
    # the key is taken before any image is read: an image changed during the build makes the cache stale
    key = source_key(list_file, samples, height)
    folder = cache_folder(list_file, height)
    recover_folder(folder)
    meta = folder / META
    if meta.exists():
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("key") == key:
                return LineCache(folder)
        except (OSError, json.JSONDecodeError):
            pass  # a damaged cache is rebuilt
    with CacheWriter(list_file, height) as writer, ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        for strip, problem in pool.map(lambda s: _load(s.path, height), samples):
            if strip is None:
                writer.skip(problem)
            else:
                writer.add(strip)
        return writer.finish(samples, key)


def source_key(list_file: Path, samples: list[Sample], height: int) -> str:
    """What a cache was built from: the list file's bytes, every image's size and modification time, the height."""
    digest = hashlib.sha256(f"{CACHE_VERSION}\n{height}\n".encode())
    digest.update(Path(list_file).read_bytes())
    for s in samples:
        try:
            st = os.stat(s.path)
            digest.update(f"{s.path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{s.path}\tmissing\n".encode())
    return digest.hexdigest()


class CacheWriter:
    """A list file's cache written strip by strip, in the list's order, and put in place by `finish`.

    `ensure_cache` feeds it the decoded images; `prepare` feeds it the strips it has just cut, before the list
    file exists. Used as a context manager, it leaves nothing behind unless finished."""

    def __init__(self, list_file: Path, height: int):
        self.list_file, self.height = Path(list_file), height
        self.folder = cache_folder(self.list_file, height)
        self._tmp = temp_folder(self.folder)
        self._pixels = open(self._tmp / PIXELS, "wb")
        self._offsets: list[int] = []  # where each strip starts in the pixels
        self._size = 0
        self._widths: list[int] = []
        self._kept: list[bool] = []  # one per sample of the list: False where its image was skipped
        self._problems: list[str] = []

    def add(self, strip: np.ndarray) -> None:
        """The next sample's strip, `height` rows of uint8."""
        if strip.dtype != np.uint8 or strip.ndim != 2 or strip.shape[0] != self.height:
            raise ValueError(f"strip of shape {strip.shape} and {strip.dtype}, expected {self.height} rows of uint8")
        self._pixels.write(np.ascontiguousarray(strip).data)
        self._offsets.append(self._size)
        self._size += strip.size
        self._widths.append(strip.shape[1])
        self._kept.append(True)

    def skip(self, problem: str) -> None:
        """The next sample is left out, for the reason `problem`."""
        print(f"loghi-ft: skipping line of {self.list_file}: {problem}", file=sys.stderr)
        self._problems.append(problem)
        self._kept.append(False)

    def finish(self, samples: list[Sample] | None = None, key: str | None = None) -> LineCache:
        """Write the index and texts and put the cache in place; samples and key default to the list file's now."""
        if samples is None:
            samples = read_list(self.list_file)
        if key is None:
            key = source_key(self.list_file, samples, self.height)
        if len(samples) != len(self._kept):
            raise ValueError(f"{self.list_file}: {len(samples)} samples but {len(self._kept)} strips or skips")
        self._pixels.close()
        kept = [s for s, ok in zip(samples, self._kept) if ok]
        if samples and not kept:
            raise UserError(f"{self.list_file}: none of its {len(samples)} line images could be read "
                            f"(first: {self._problems[0]})")
        np.savez(self._tmp / INDEX, offsets=np.asarray(self._offsets, np.int64),
                 widths=np.asarray(self._widths, np.int32), weights=np.asarray([s.weight for s in kept], np.float32))
        meta = {"version": CACHE_VERSION, "height": self.height, "list_file": str(self.list_file), "key": key,
                "lines": len(kept), "skipped": len(self._problems), "problems": self._problems,
                "texts": [s.text for s in kept], "paths": [str(s.path) for s in kept]}
        (self._tmp / META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        if self._problems:
            print(f"loghi-ft: {self.list_file}: skipped {len(self._problems)} of {len(samples)} lines "
                  "(unreadable images)", file=sys.stderr)
        replace_folder(self._tmp, self.folder)
        return LineCache(self.folder)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._pixels.close()
        shutil.rmtree(self._tmp, ignore_errors=True)  # gone already when finished


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


def _load(path: Path, height: int) -> tuple[np.ndarray | None, str | None]:
    """One strip at the cache's height, or the reason it cannot be read."""
    try:
        image = load_image(path)
    except UserError as exc:
        return None, str(exc)
    if image.shape[0] != height:
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        shrink = image.shape[0] > height
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(image), None

"""Loghi's list files: one sample per line, `path<TAB>text` or `path<TAB>weight<TAB>text`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from loghi_ft.atomic import write_atomic
from loghi_ft.errors import UserError


@dataclass
class Sample:
    path: Path  # absolute
    text: str
    weight: float = 1.0


def read_list(list_file: str | os.PathLike) -> list[Sample]:
    """Samples of a list file; relative paths are taken from the list file's folder."""
    list_file = Path(list_file)
    try:
        raw = list_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{list_file}: list file not found") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{list_file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    base = list_file.resolve().parent
    samples = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise UserError(f"{list_file}:{number}: expected 'path<TAB>text', found no tab")
        weight = 1.0
        if len(parts) >= 3:
            try:
                weight = float(parts[1])
                parts = [parts[0], "\t".join(parts[2:])]
            except ValueError:
                parts = [parts[0], "\t".join(parts[1:])]
            if not 0.0 <= weight < float("inf"):  # also NaN
                raise UserError(f"{list_file}:{number}: weight {weight:g} (the column between path and text) must be "
                                "a finite number of at least 0")
        path = Path(parts[0])
        samples.append(Sample(path if path.is_absolute() else base / path, parts[1], weight))
    return samples


def write_list(list_file: str | os.PathLike, samples: list[Sample], relative: bool = True) -> None:
    """Write samples atomically; paths relative to the list file's folder when `relative`."""
    list_file = Path(list_file)
    base = list_file.resolve().parent
    lines = []
    for s in samples:
        path = Path(s.path)
        if relative:
            path = Path(os.path.relpath(path.resolve(), base))
        text = s.text.replace("\n", " ")
        lines.append(f"{path}\t{text}" if s.weight == 1.0 else f"{path}\t{s.weight:g}\t{text}")
    write_atomic(list_file, ("\n".join(lines) + "\n").encode("utf-8"))

"""Plain text out of PAGE XML and ALTO pages: each page's lines in reading order, for people who want the text.

A page's text has one line per TextLine in the order `read_page` gives (regions in the page's ReadingOrder, or
Transkribus' custom index, else document order; lines in their region's order), each without its trailing
whitespace and otherwise as read (the Unicode form is kept). A folder's text is every page's text, each after a
line `=== <page path> ===`. Files are UTF-8 with `\\n` line ends, written whole or not at all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from loghi_ft.atomic import atomic_file, write_atomic
from loghi_ft.errors import UserError
from loghi_ft.pages.documents import Page, find_pages, read_page

SEPARATOR = "=== {} ===\n"  # before each page in a folder's text, with the page's path relative to the folder


@dataclass
class TextExport:
    pages: int = 0
    lines: int = 0
    problems: list[str] = field(default_factory=list)   # pages and lines left out, one message each

    def summary(self) -> str:
        done = f"{self.pages} pages, {self.lines} lines"
        return done if not self.problems else f"{done}; {len(self.problems)} pages or lines left out (listed above)"


def lines_text(texts: Iterable[str]) -> str:
    """One output line per text, each ending in a newline, trailing whitespace stripped from every line."""
    out = []
    for text in texts:
        # a TextEquiv may itself hold a line break: each of its lines loses its trailing whitespace
        out.extend(part.rstrip() for part in text.rstrip().split("\n"))
    return "".join(line + "\n" for line in out)


def page_text(page: Page) -> str:
    return lines_text(line.text for line in page.lines)


def text_path(xml_path: Path) -> Path:
    """Where a page's text goes: beside it, `3.xml` -> `3.txt`."""
    return Path(xml_path).with_suffix(".txt")


def save_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))


def export_text(inputs: Iterable[str | Path], output: Path | None = None, per_page: bool = False,
                log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> TextExport:
    """Write each page's text beside it (`per_page`) and all of it into `output` (standard output when neither)."""
    export = TextExport()
    pages = list(relative_pages(inputs, export, log))
    if not pages:
        raise UserError(f"no PAGE XML or ALTO in {', '.join(map(str, inputs))}")
    if output is not None and per_page and Path(output).resolve() in {text_path(xml).resolve() for _, xml in pages}:
        raise UserError(f"--output {output} is also the text file of one of the pages: name another file")
    target = atomic_file(output, "w", encoding="utf-8", newline="\n") if output is not None else nullcontext(
        None if per_page else sys.stdout)
    with target as stream:
        for rel, xml in pages:
            write_page_text(rel, xml, stream, per_page, export, log)
    return export


def write_page_text(rel: str, xml: Path, stream: TextIO | None, per_page: bool, export: TextExport,
                    log: Callable[[str], None]) -> None:
    """One page's text into `stream` after its separator and, with `per_page`, beside it; problems are logged."""
    try:
        page = read_page(xml)
    except UserError as exc:
        export.problems.append(str(exc))
        log(f"left out: {exc}")
        return
    for problem in page.problems:
        export.problems.append(f"{xml}: {problem}")
        log(f"{xml}: {problem}; not in the text")
    text = page_text(page)
    if stream is not None:
        stream.write(SEPARATOR.format(rel) + text)
    if per_page:
        try:
            save_text(text_path(xml), text)
        except UserError as exc:
            export.problems.append(str(exc))
            log(str(exc))
            return
    export.pages += 1
    export.lines += len(page.lines)


def relative_pages(inputs: Iterable[str | Path], export: TextExport, log: Callable[[str], None]
                   ) -> Iterator[tuple[str, Path]]:
    """(path relative to the inputs' common folder, file) of every page in the inputs, each once, in input order;
    an input that cannot be read is left out and listed, one without pages is logged."""
    items = [Path(i) for i in inputs]
    base = Path(os.path.commonpath([os.path.abspath(i if i.is_dir() else i.parent) for i in items]))
    seen: set[Path] = set()
    for item in items:
        try:
            found = list(find_pages([item]))
        except UserError as exc:
            export.problems.append(str(exc))
            log(f"left out: {exc}")
            continue
        if not found:
            log(f"{item}: no PAGE XML or ALTO found")
        for xml in found:
            if xml.resolve() not in seen:
                seen.add(xml.resolve())
                yield Path(os.path.relpath(os.path.abspath(xml), base)).as_posix(), xml

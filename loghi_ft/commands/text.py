"""Write the text of recognised PAGE XML (or ALTO) pages as plain UTF-8 text, in reading order.

A page's text has one line per TextLine, in reading order (regions in the page's ReadingOrder, or Transkribus'
readingOrder index, else as they stand in the file; lines in their region's order), trailing whitespace
stripped, nothing else changed. --per-page writes it beside each page (3.xml -> 3.txt); --output writes every
page into one file, each page after a line `=== <page path> ===` (the path relative to the folder given, or to
the common folder of several); with neither, the text goes to standard output. Exit status 0 when every page
and line was read, 3 when some were left out (each one listed).
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from loghi_ft.settings import setting


@dataclass
class Settings:
    inputs: list[Path] = setting([], "PAGE XML or ALTO folders (searched recursively) or files", positional=True,
                                 required=True, metavar="FOLDER")
    output: Path | None = setting(None, "write the text of all the pages into this one file, each page after a "
                                  "line '=== <page path> ==='")
    per_page: bool = setting(False, "write each page's text beside it: 3.xml -> 3.txt")


def run(s: Settings) -> int:
    from loghi_ft.errors import PARTIAL
    from loghi_ft.pages.text import export_text

    try:
        export = export_text(s.inputs, s.output, s.per_page, log=lambda m: print(f"loghi-ft: {m}", file=sys.stderr))
    except BrokenPipeError:
        # the reader of standard output stopped (`| head`): end quietly, as a Unix filter does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    to_stdout = s.output is None and not s.per_page
    print(f"text: {export.summary()}", file=sys.stderr if to_stdout else sys.stdout)
    return PARTIAL if export.problems else 0

"""List recognised lines least confident first, to correct those first: one self-contained HTML page and a CSV.

FOLDER: PAGE XML (or ALTO) pages written by `loghi-ft infer`, with their images. Each listed line shows its
image, its reading, its confidence, its page and line id. Lines without a confidence (not written by infer)
come last. The CSV (rank, confidence, page, line_id, text) holds the same lines in the same order.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from loghi_ft.settings import setting


@dataclass
class Settings:
    inputs: list[Path] = setting([], "folders (or files) of recognised PAGE XML", positional=True, required=True,
                                 metavar="FOLDER")
    output: Path | None = setting(None, "the HTML page to write", required=True)
    csv: Path | None = setting(None, "the CSV to write (default: the --output file with .csv)")
    images: Path | None = setting(None, "the folder `infer` read, for the page images of pages it wrote to --output "
                                  "(images not beside their pages are looked for there, in the same tree)")
    order: str = setting("char", "char: by the confidence, a per-character measure (the most errors per "
                         "character read); line: by the probability that the whole line is right, confidence ^ "
                         "characters (the most errors per line checked)", choices=("char", "line"))
    limit: int = setting(0, "list only the N least confident lines (0: all)")
    min_conf: float | None = setting(None, "leave out lines less confident than this")
    max_conf: float | None = setting(None, "leave out lines more confident than this")


def run(s: Settings) -> int:
    from loghi_ft.errors import UserError
    from loghi_ft.evaluation.review_page import read_lines, select, write_csv, write_html

    csv_path = s.csv or s.output.with_suffix(".csv")
    for path in (s.output, csv_path):
        if not path.parent.is_dir():
            raise UserError(f"{path.parent}: folder for {path.name} not found")
    if s.limit < 0:
        raise UserError(f"--limit {s.limit}: must be 0 (all) or more")
    log = lambda m: print(f"loghi-ft: {m}", file=sys.stderr)  # noqa: E731
    if s.images is not None and not s.images.is_dir():
        raise UserError(f"--images {s.images}: folder not found")
    reviewed = read_lines(s.inputs, log, images=s.images)
    chosen = select(reviewed.lines, s.limit, s.min_conf, s.max_conf, s.order)
    note = "".join([f", confidence at least {s.min_conf}" if s.min_conf is not None else "",
                    f", confidence at most {s.max_conf}" if s.max_conf is not None else "",
                    ", ordered by the probability that the whole line is right" if s.order == "line" else ""])
    write_csv(csv_path, chosen)
    no_image = write_html(s.output, reviewed, chosen, note, log)
    if no_image:
        log(f"{no_image} pages' images not found, their lines are shown without images"
            + ("" if s.images else "; for pages written by infer --output, give --images FOLDER (the folder it read)"))
    unscored = sum(x.conf is None for x in reviewed.lines)
    print(f"review: {len(chosen)} of {len(reviewed.lines)} lines of {len(reviewed.pages)} pages listed in {s.output} "
          f"and {csv_path}; {unscored} lines have no confidence" + (" (those listed come last)" if unscored else ""))
    return 0

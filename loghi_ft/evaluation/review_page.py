"""The review page: recognised lines least confident first, as one self-contained HTML file and a CSV beside it."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree
from tqdm import tqdm

from loghi_ft.atomic import atomic_file
from loghi_ft.errors import UserError
from loghi_ft.evaluation.compare_page import READING_FONTS, line_images, page_head
from loghi_ft.pages.documents import Page, find_pages, read_page

CSV_COLUMNS = ["rank", "confidence", "page", "line_id", "text"]


@dataclass
class ReviewLine:
    page: str                # the page file's path relative to the folder the inputs share
    line_id: str
    text: str
    conf: float | None       # None: the line has no confidence (it was not written by `infer`)


@dataclass
class Reviewed:
    lines: list[ReviewLine]                               # every line read, in page order then reading order
    pages: dict[str, Page] = field(default_factory=dict)  # by ReviewLine.page


def read_lines(inputs: Iterable[str | Path], log: Callable[[str], None] = print, progress: bool = True,
               images: Path | None = None) -> Reviewed:
    """The lines of every PAGE/ALTO file under the inputs with their text and confidence; unreadable pages logged.
    A page image not beside its page is looked for under `images`, which mirrors the inputs' tree."""
    inputs = [Path(i) for i in inputs]
    xmls = list(find_pages(inputs))
    if not xmls:
        raise UserError(f"no PAGE XML in {', '.join(map(str, inputs))}")
    base = os.path.commonpath([str((i if i.is_dir() else i.parent).resolve()) for i in inputs])
    out = Reviewed([])
    for xml in tqdm(xmls, unit="page", desc="review: reading", disable=None if progress else True):
        try:
            page = read_page(xml)
            confs = line_confidences(xml)
        except UserError as exc:
            log(f"not in the review: {exc}")
            continue
        rel = Path(os.path.relpath(xml.resolve(), base)).as_posix()
        if images is not None and not page.image_path.exists():
            # infer --output writes the pages alone: their images stay in the folder it read
            page.image_path = (Path(images) / rel).parent / os.path.relpath(page.image_path, xml.parent)
        out.pages[rel] = page
        out.lines += [ReviewLine(rel, line.id, line.text, confs.get(line.id)) for line in page.lines]
    if not out.lines:
        raise UserError(f"no text line to review in {', '.join(map(str, inputs))}")
    return out


def line_confidences(xml: Path) -> dict[str, float]:
    """Line id -> confidence: PAGE's TextEquiv@conf (the main reading's), ALTO's WC of a line's one String."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.parse(str(xml), parser).getroot()
    except (etree.XMLSyntaxError, OSError) as exc:
        raise UserError(f"{xml}: cannot read its confidences ({exc})") from None
    ns, alto = etree.QName(root).namespace, etree.QName(root).localname == "alto"
    confs = {}
    for line in root.iter(f"{{{ns}}}TextLine"):
        if alto:
            strings = line.findall(f"{{{ns}}}String")
            # with several Strings (words) ALTO keeps no confidence of the whole line
            value, line_id = (strings[0].get("WC") if len(strings) == 1 else None), line.get("ID")
        else:
            # several readings: PAGE says index 0 (or the lowest) is the main one, as read_page takes it
            main = min(line.findall(f"{{{ns}}}TextEquiv"), key=_index, default=None)
            value, line_id = (main.get("conf") if main is not None else None), line.get("id")
        try:
            conf = float(value) if value is not None else None
        except ValueError:
            conf = None
        if conf is not None and line_id and 0.0 <= conf <= 1.0:
            confs[line_id] = conf
    return confs


def _index(equiv: etree._Element) -> int:
    value = equiv.get("index")
    return int(value) if value is not None and value.isdigit() else 1 << 30


def select(lines: list[ReviewLine], limit: int = 0, min_conf: float | None = None, max_conf: float | None = None,
           order: str = "char") -> list[ReviewLine]:
    """Least confident first (ties in page order), by `order` (see sort_key); lines without a confidence last,
    whatever the filters; then the first `limit` (0: all)."""
    scored = [x for x in lines if x.conf is not None and (min_conf is None or x.conf >= min_conf)
              and (max_conf is None or x.conf <= max_conf)]
    chosen = sorted(scored, key=lambda x: sort_key(x, order)) + [x for x in lines if x.conf is None]
    return chosen[:limit] if limit > 0 else chosen


def sort_key(line: ReviewLine, order: str) -> float:
    """char: the confidence itself (a per-character measure); line: the probability that the whole line is
    right, which the confidence is the per-character geometric mean of (model/decode.py)."""
    return line.conf if order == "char" else line.conf ** max(1, len(line.text.strip()))


def write_csv(path: Path, chosen: list[ReviewLine]) -> None:
    """One row per listed line, in the review's order; confidence empty where the line has none."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for rank, x in enumerate(chosen, 1):
        writer.writerow([rank, "" if x.conf is None else f"{x.conf:.4f}", x.page, x.line_id, x.text])
    with atomic_file(path, "w", encoding="utf-8", newline="") as out:
        out.write(buffer.getvalue())


def write_html(path: Path, reviewed: Reviewed, chosen: list[ReviewLine], note: str,
               log: Callable[[str], None] = print, progress: bool = True) -> int:
    """The review page; returns how many pages had no image. Line images are cut page by page and kept on disk
    until the page is put together, so memory does not grow with the lines listed."""
    wanted: dict[str, list[int]] = {}
    for i, x in enumerate(chosen):
        wanted.setdefault(x.page, []).append(i)
    spans: list[tuple[int, int]] = [(0, 0)] * len(chosen)
    no_image = 0
    with tempfile.TemporaryFile("w+b") as spill:
        for rel in tqdm(wanted, unit="page", desc="review: line images", disable=None if progress else True):
            ids = {chosen[i].line_id for i in wanted[rel]}
            page = reviewed.pages[rel]
            images = {}
            if page.image_path.exists():
                images = line_images(dataclasses.replace(page, lines=[ln for ln in page.lines if ln.id in ids]), log)
            else:
                no_image += 1
            for i in wanted[rel]:
                data = line_html(i + 1, chosen[i], images.get(chosen[i].line_id)).encode("utf-8")
                spans[i] = (spill.tell(), len(data))
                spill.write(data)
        with atomic_file(path, "w", encoding="utf-8") as out:
            out.write(head(reviewed, chosen, note))
            for start, size in spans:
                spill.seek(start)
                out.write(spill.read(size).decode("utf-8"))
            out.write(TAIL)
    return no_image


def line_html(rank: int, line: ReviewLine, image: str | None) -> str:
    conf = "" if line.conf is None else f"{line.conf:.4f}"
    img = (f'<img src="data:image/png;base64,{image}" alt="line {html.escape(line.line_id)}">' if image
           else '<p class="noimg">(no image for this line)</p>')
    shown = f"confidence {conf}" if conf else "no confidence"
    return (f'<article class="line" data-page="{html.escape(line.page)}" data-id="{html.escape(line.line_id)}" '
            f'data-conf="{conf}"><header><span class="rank">{rank}.</span> '
            f'<span class="conf{"" if conf else " none"}">{shown}</span> '
            f'<span class="where">{html.escape(line.page)} · <b>{html.escape(line.line_id)}</b></span></header>'
            f'{img}<p class="reading">{html.escape(line.text) or "<i>(read as empty)</i>"}</p></article>\n')


def head(reviewed: Reviewed, chosen: list[ReviewLine], note: str) -> str:
    unscored = sum(x.conf is None for x in reviewed.lines)
    counts = (f"{len(chosen)} of the {len(reviewed.lines)} lines of {len(reviewed.pages)} pages listed, least "
              f"confident first{note}; {unscored} lines have no confidence and come last.")
    return HEAD.replace("{counts}", html.escape(counts))


HEAD = page_head("loghi-ft review", """.rank { display: inline-block; min-width: 3rem; font-variant-numeric: tabular-nums; }
.conf { display: inline-block; min-width: 10rem; font-weight: 600; color: #b3261e; font-variant-numeric: tabular-nums; }
.conf.none { color: #777; font-weight: normal; }
p.reading { margin: .35rem 0 0; font-family: """ + READING_FONTS + """; font-size: 1.1rem; }
""") + """<h1>Lines to correct first</h1>
<p class="counts">{counts}</p>
<div class="controls" role="search">
<span><label for="find">Find</label> <input id="find" type="search" placeholder="page, line id or text"></span>
<span id="shown" aria-live="polite"></span>
</div>
<main id="lines">
"""

TAIL = """</main>
<script>
const lines = Array.from(document.querySelectorAll("#lines .line"));
function update() {
  const find = document.getElementById("find").value.trim().toLowerCase();
  let n = 0;
  for (const el of lines) {
    const ok = !find || el.dataset.id.toLowerCase().includes(find) || el.textContent.toLowerCase().includes(find);
    el.classList.toggle("hidden", !ok); n += ok;
  }
  document.getElementById("shown").textContent = n + " of " + lines.length + " lines shown";
}
document.getElementById("find").addEventListener("input", update);
update();
</script>
</body></html>
"""

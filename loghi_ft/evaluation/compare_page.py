"""The compare report: one self-contained HTML file with every line's image, ground truth and each model's reading."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
from rapidfuzz.distance import Levenshtein

from loghi_ft.atomic import atomic_file
from loghi_ft.errors import UserError
from loghi_ft.evaluation.scoring import LineEval, PageEval, evaluate, normalize
from loghi_ft.pages.lines import cut_page
from loghi_ft.evaluation.metrics import char_errors
from loghi_ft.pages.documents import Page, find_pages, read_page

STRIP_HEIGHT = 64  # pixels of the line images: the height models usually read, and legible on screen


@dataclass
class Row:
    page: str
    line_id: str
    reference: str
    readings: list[str | None]     # per model; None when that model has no reading of this line
    cers: list[float]              # per model, as a fraction (1.0 when missing)


def build_report(gt_dir: Path, preds: list[Path], html_path: Path, names: list[str] | None = None,
                 log: Callable[[str], None] = print) -> int:
    """Write the report for the GT pages under gt_dir and the same-path pages under each pred folder; returns lines."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise UserError(f"{gt_dir}: ground truth folder not found")
    for pred in preds:
        if not Path(pred).is_dir():
            raise UserError(f"{pred}: predictions folder not found")
    names = names or model_names(preds)
    pages = []  # (relative path, GT page, rows): texts and polygons only; the images are cut while writing
    for xml in sorted(find_pages([gt_dir])):
        rel = os.path.relpath(xml, gt_dir)
        try:
            gt_page = read_page(xml)
        except UserError as exc:
            log(f"not in the report: {exc}")
            continue
        readings = [predicted_texts(Path(pred) / rel, log) for pred in preds]
        rows = []
        for line in gt_page.lines:
            ref = normalize(line.text)
            if not ref:
                continue
            got = [None if r is None else (normalize(r[line.id]) if line.id in r else None) for r in readings]
            rows.append(Row(rel, line.id, ref, got, [char_errors(ref, g or "").rate for g in got]))
        pages.append((rel, gt_page, rows))
    if not any(rows for _, _, rows in pages):
        raise UserError(f"{gt_dir}: no ground-truth line with text to compare")
    summary = [evaluate(PageEval(rel, [LineEval(r.line_id, r.reference, r.readings[m]) for r in rows])
                        for rel, _, rows in pages) for m in range(len(preds))]
    with atomic_file(html_path, "w", encoding="utf-8") as out:  # streamed: one page's images in memory at a time
        out.write(head(names, summary, pages))
        for rel, gt_page, rows in pages:
            images = line_images(gt_page, log)
            for row in rows:
                out.write(line_html(row, names, images.get(row.line_id)))
        out.write(TAIL)
    return sum(len(rows) for _, _, rows in pages)


def model_names(preds: list[Path]) -> list[str]:
    """Short distinct names for the prediction folders: their names, with parents added where two are alike."""
    names = [Path(p).resolve().name for p in preds]
    if len(set(names)) < len(names):
        names = [f"{Path(p).resolve().parent.name}/{Path(p).resolve().name}" for p in preds]
    if len(set(names)) < len(names):
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    return names


def predicted_texts(path: Path, log: Callable[[str], None]) -> dict[str, str] | None:
    if not path.is_file():
        log(f"{path}: no predicted page; its lines count as missing")
        return None
    try:
        return {line.id: line.text for line in read_page(path).lines}
    except UserError as exc:
        log(f"{exc}; its lines count as missing")
        return None


def line_images(page: Page, log: Callable[[str], None]) -> dict[str, str]:
    """Line id -> base64 PNG of the straightened line strip, as the model sees it."""
    images = {}
    try:
        for line, strip, why in cut_page(page, STRIP_HEIGHT):
            if strip is None:
                log(f"{page.xml_path}: {why}")
                continue
            ok, png = cv2.imencode(".png", strip, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            if ok:
                images[line.id] = base64.b64encode(png.tobytes()).decode("ascii")
    except UserError as exc:
        log(f"{exc}: its lines are shown without images")
    return images


def diff_html(reference: str, reading: str) -> str:
    """The reading with its differences from the reference marked: substituted, inserted, and missing characters."""
    out = []
    for tag, a0, a1, b0, b1 in Levenshtein.opcodes(reference, reading).as_list():
        ref, got = html.escape(reference[a0:a1]), html.escape(reading[b0:b1])
        if tag == "equal":
            out.append(got)
        elif tag == "replace":
            out.append(f'<span class="sub" title="ground truth: {ref}">{got}</span>')
        elif tag == "insert":
            out.append(f'<span class="ins" title="not in the ground truth">{got}</span>')
        else:
            out.append(f'<span class="del" title="missing from the reading">{ref}</span>')
    return "".join(out)


def line_html(row: Row, names: list[str], image: str | None) -> str:
    readings = [r for r in row.readings if r is not None]
    disagree = int(len(set(readings)) > 1 or len(readings) < len(row.readings))
    data = " ".join(f'data-cer{m}="{c:.4f}"' for m, c in enumerate(row.cers))
    img = (f'<img src="data:image/png;base64,{image}" alt="line {html.escape(row.line_id)}">' if image
           else '<p class="noimg">(no image for this line)</p>')
    parts = [f'<article class="line" data-page="{html.escape(row.page)}" data-id="{html.escape(row.line_id)}" '
             f'data-disagree="{disagree}" {data}>',
             f'<header><span class="where">{html.escape(row.page)} · <b>{html.escape(row.line_id)}</b></span></header>',
             img, '<table class="readings">',
             f'<tr class="gt"><th scope="row">ground truth</th><td class="cer"></td><td>{html.escape(row.reference)}</td></tr>']
    for name, reading, cer in zip(names, row.readings, row.cers):
        text = '<i class="missing">no reading</i>' if reading is None else diff_html(row.reference, reading)
        parts.append(f'<tr><th scope="row">{html.escape(name)}</th><td class="cer {grade(cer)}">{100 * cer:.1f}%</td>'
                     f"<td>{text}</td></tr>")
    parts.append("</table></article>\n")
    return "".join(parts)


def grade(cer: float) -> str:
    return "ok" if cer == 0 else "low" if cer <= 0.1 else "high"


def head(names: list[str], summary: list, pages: list) -> str:
    rows = []
    for name, r in zip(names, summary):
        c, w = r.overall["cer"], r.overall["wer"]
        rows.append(f"<tr><th scope=\"row\">{html.escape(name)}</th>"
                    f"<td>{100 * c.rate:.2f}%</td><td>{100 * c.low:.2f}–{100 * c.high:.2f}%</td>"
                    f"<td>{100 * w.rate:.2f}%</td><td>{100 * w.low:.2f}–{100 * w.high:.2f}%</td>"
                    f"<td>{100 * r.overall['cer_nocase'].rate:.2f}%</td><td>{100 * r.overall['cer_nopunct'].rate:.2f}%</td>"
                    f"<td>{r.missing_lines}</td></tr>")
    lines = sum(len(rows_) for _, _, rows_ in pages)
    chars = summary[0].chars if summary else 0
    options = "".join(f'<option value="cer{m}">{html.escape(n)}: highest CER first</option>' for m, n in enumerate(names))
    return (HEAD.replace("{summary}", "\n".join(rows)).replace("{sort_options}", options)
            .replace("{counts}", f"{len(pages)} pages, {lines} lines, {chars} characters"))


# the look both report pages share (this one and review_page.py): layout, controls bar, line cards
PAGE_CSS = """body { font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b; margin: 1.5rem auto; max-width: 1200px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
.counts { color: #555; margin: 0 0 1rem; }
.controls { position: sticky; top: 0; background: #fff; padding: .6rem 0; border-bottom: 2px solid #333; display: flex; flex-wrap: wrap; gap: .5rem 1.2rem; align-items: center; z-index: 1; }
.controls label { font-weight: 600; }
.controls select, .controls input { font: inherit; padding: .15rem .3rem; }
.line { border-bottom: 1px solid #ddd; padding: .7rem 0; }
.line header { color: #555; font-size: .9rem; margin-bottom: .3rem; }
.line img { display: block; height: 64px; max-width: 100%; object-fit: contain; object-position: left; background: #fff; border: 1px solid #e4e4e4; }
.noimg { color: #777; font-style: italic; margin: 0; }
.hidden { display: none; }
"""
# historical characters (⁊ ꝰ ꝑ ...): fonts that have them first, DejaVu Sans as the common last resort
READING_FONTS = 'Junicode, "Noto Serif", "Noto Sans", "Segoe UI Historic", Georgia, "DejaVu Serif", "DejaVu Sans", serif'


def page_head(title: str, css: str) -> str:
    """A report's opening up to <body>: the shared style, then the page's own `css`."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>\n{PAGE_CSS}{css}</style></head><body>\n")


HEAD = page_head("loghi-ft compare", """table.summary { border-collapse: collapse; margin-bottom: 1rem; }
table.summary th, table.summary td { border-bottom: 1px solid #ccc; padding: .3rem .8rem; text-align: right; font-variant-numeric: tabular-nums; }
table.summary th[scope=row] { text-align: left; }
.legend span { margin-right: .8rem; }
table.readings { border-collapse: collapse; margin-top: .35rem; width: 100%; }
table.readings th { text-align: left; font-weight: 600; color: #444; padding: .1rem .8rem .1rem 0; white-space: nowrap; width: 10rem; vertical-align: top; }
table.readings td { padding: .1rem .4rem; vertical-align: top; font-family: """ + READING_FONTS + """; font-size: 1.1rem; }
table.readings td.cer { font: .85rem/1.8 system-ui, sans-serif; width: 4rem; text-align: right; white-space: nowrap; }
tr.gt td, tr.gt th { background: #f1f3f5; color: #000; }
td.ok { color: #1a6b2a; } td.low { color: #8a5a00; } td.high { color: #b3261e; font-weight: 600; }
.sub { background: #ffe0a8; text-decoration: underline wavy #a05a00; text-underline-offset: 3px; }
.ins { background: #cfe3ff; text-decoration: underline #1f4ea8; text-underline-offset: 3px; }
.del { background: #ffd6d6; color: #9b1c1c; text-decoration: line-through; }
.missing { color: #777; }
""") + """<h1>Model comparison</h1>
<p class="counts">{counts}; rates over all lines, 95% intervals by bootstrap over lines.</p>
<table class="summary"><thead><tr><th scope="col">model</th><th scope="col">CER</th><th scope="col">95% CI</th><th scope="col">WER</th><th scope="col">95% CI</th><th scope="col">CER no case</th><th scope="col">CER no punct.</th><th scope="col">missing lines</th></tr></thead>
<tbody>
{summary}
</tbody></table>
<div class="controls" role="search">
<span><label for="show">Show</label> <select id="show">
<option value="all">all lines</option><option value="disagree">lines where the models disagree</option>
<option value="allfail">lines every model gets wrong</option><option value="anyfail">lines some model gets wrong</option>
</select></span>
<span><label for="sort">Order</label> <select id="sort"><option value="doc">as on the pages</option>
<option value="max">highest CER (any model) first</option><option value="gap">largest CER difference first</option>{sort_options}</select></span>
<span><label for="find">Find</label> <input id="find" type="search" placeholder="line id or text"></span>
<span id="shown" aria-live="polite"></span>
<span class="legend"><span class="sub">substituted</span><span class="ins">inserted</span><span class="del">missing</span></span>
</div>
<main id="lines">
"""

TAIL = """</main>
<script>
const MODELS = document.querySelectorAll("table.summary tbody tr").length;
const box = document.getElementById("lines");
const lines = Array.from(box.querySelectorAll(".line"));
lines.forEach((el, i) => { el.doc = i; el.cers = Array.from({length: MODELS}, (_, m) => parseFloat(el.dataset["cer" + m])); });
function update() {
  const show = document.getElementById("show").value, sort = document.getElementById("sort").value;
  const find = document.getElementById("find").value.trim().toLowerCase();
  let n = 0;
  for (const el of lines) {
    const wrong = el.cers.filter(c => c > 0).length;
    let ok = show === "all" || (show === "disagree" && el.dataset.disagree === "1")
      || (show === "allfail" && wrong === MODELS) || (show === "anyfail" && wrong > 0);
    if (ok && find) ok = el.dataset.id.toLowerCase().includes(find) || el.textContent.toLowerCase().includes(find);
    el.classList.toggle("hidden", !ok); n += ok;
  }
  const key = sort === "doc" ? el => -el.doc : sort === "max" ? el => Math.max(...el.cers)
    : sort === "gap" ? el => Math.max(...el.cers) - Math.min(...el.cers) : el => el.cers[parseInt(sort.slice(3))];
  lines.slice().sort((a, b) => key(b) - key(a) || a.doc - b.doc).forEach(el => box.appendChild(el));
  document.getElementById("shown").textContent = n + " of " + lines.length + " lines shown";
}
// the view can be named in the address, e.g. report.html#show=allfail&sort=max, and is kept there
const wanted = new URLSearchParams(location.hash.slice(1));
for (const id of ["show", "sort", "find"]) {
  const el = document.getElementById(id);
  if (wanted.has(id)) el.value = wanted.get(id);
  el.addEventListener("input", () => {
    update();
    history.replaceState(null, "", "#" + new URLSearchParams(["show", "sort", "find"].map(k => [k, document.getElementById(k).value])));
  });
}
update();
</script>
</body></html>
"""

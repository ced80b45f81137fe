"""A layout model measured on ground-truth pages: it segments each page's bare image; the lines and regions it finds
are scored against the page's (layout_metrics.py); with a recogniser, the text read from its lines is compared with
the page's ground-truth text, beside the text read from the ground-truth lines themselves (the figure users feel).

Both texts, and the ground truth's, are put in one reading order (pages/layout.py reading_order) before comparing,
so an annotator's convention (page numbers or stamps listed last) is not counted as an error of either reading.

Annotators often leave text on the image untranscribed: the facing page of a spread, the end of the previous entry
at the top of a register page, a column they did not need. A segmenter that finds it is charged its whole reading
as insertions. So the found lines' text is scored twice: all of it, and only the lines inside the transcribed area
(transcribed_area: the truth's line polygons, grown by half a line height), the lines left out counted.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import shapely
from shapely.geometry import LineString, Point, Polygon

from loghi_ft.errors import UserError
from loghi_ft.evaluation.layout_metrics import BaselineCounts, LayoutEvaluation, baseline_counts
from loghi_ft.evaluation.metrics import ErrorCounts, char_errors
from loghi_ft.layout.segment import open_layout_model, segment_image
from loghi_ft.pages.layout import Layout, LayoutLine, line_band, read_layout, reading_order, write_layout


@dataclass
class LayoutReport:
    pages: int = 0
    figures: dict = field(default_factory=dict)        # layout_summary's: baseline P/R/F1, region IoU and AP; and
    #                                                     baseline precision and F1 of the found lines inside the
    #                                                     transcribed area, found_outside: how many are not
    seconds_per_page: float = 0.0                       # segmentation alone (model + extraction)
    bands: int = 0
    rescaled: int = 0                                   # pages segmented again at another size (segment_image)
    cut: int = 0                                        # lines cut in two at a gutter between columns
    leaders: int = 0                                    # lines cut or trimmed at a dot leader or a wide blank
    cer_segmented: float | None = None                  # text read from the found lines vs the page's text
    cer_transcribed: float | None = None                # the same, from the found lines in the transcribed area only
    lines_outside: int = 0                              # found lines outside it (not in cer_transcribed)
    cer_truth_lines: float | None = None                # text read from the ground-truth lines vs the page's text
    skipped: list[str] = field(default_factory=list)
    per_page: list[dict] = field(default_factory=list)

    def text(self) -> str:
        f = self.figures
        rows = [f"{self.pages} pages, {self.seconds_per_page:.2f} s per page segmented",
                f"baselines: precision {f['baseline_precision']:.4f}, recall {f['baseline_recall']:.4f}, "
                f"F1 {f['baseline_f1']:.4f}",
                f"  of the found lines in the transcribed area ({f['found_outside']} outside it): precision "
                f"{f['baseline_precision_inside']:.4f}, F1 {f['baseline_f1_inside']:.4f}",
                f"regions: mean IoU {f['region_miou']:.4f}, AP {f['region_ap']:.4f}, AP50 {f['region_ap50']:.4f}"
                if f["region_truth"] else "regions: none in the ground truth, not scored"]
        rows += [f"  {k.split(':', 1)[1]}: IoU {v:.4f}, AP {f.get('region_ap:' + k.split(':', 1)[1], 0):.4f}"
                 for k, v in f.items() if k.startswith("region_iou:")]
        if self.bands:
            rows.append(f"{self.bands} line polygons drawn as bands around their baselines")
        if self.rescaled:
            rows.append(f"{self.rescaled} pages segmented again, larger (lines closer together than the training "
                        "pages')")
        if self.cut:
            rows.append(f"{self.cut} lines cut in two at the gap between two columns")
        if self.leaders:
            rows.append(f"{self.leaders} lines cut or trimmed at a dot leader or a wide blank")
        if self.cer_segmented is not None:
            def ratio(cer: float) -> str:
                return f"{cer / self.cer_truth_lines:.2f}x" if self.cer_truth_lines else "-"
            rows.append(f"page CER read from the found lines {self.cer_segmented:.2%} ({ratio(self.cer_segmented)}), "
                        f"from those in the transcribed area {self.cer_transcribed:.2%} "
                        f"({ratio(self.cer_transcribed)}; {self.lines_outside} found lines outside it), "
                        f"from the ground-truth lines {self.cer_truth_lines:.2%}")
        if self.skipped:
            rows.append(f"{len(self.skipped)} pages skipped, listed above")
        return "\n".join(rows)


def evaluate_layout(xml_paths: list[Path], model_path: Path, *, tolerance: float = 10.0,
                    recognizer_path: Path | None = None, gpu: str = "-1", precision: str = "auto",
                    batch_size: int = 32, log: Callable[[str], None] = print) -> LayoutReport:
    """Segment each ground-truth page's image with the layout model and score it (and read it, with a recogniser)."""
    model, device, autocast = open_layout_model(model_path, gpu, precision)
    evaluation, inside, report = LayoutEvaluation(tolerance), BaselineCounts(), LayoutReport()
    found: list[tuple[Layout, Layout]] = []
    seconds = 0.0
    for xml in xml_paths:
        try:
            truth = read_layout(xml)
            start = time.perf_counter()
            page = segment_image(model, Path(truth.image_path), device, autocast)
            layout = page.layout
            seconds += time.perf_counter() - start
        except (UserError, OSError) as exc:
            report.skipped.append(f"{xml}: {exc}")
            log(f"{xml}: skipped: {exc}")
            continue
        # a page without region ground truth (timeus-1858's) scores its lines only
        counts = evaluation.add(truth, layout if truth.regions else replace(layout, regions=[]))
        inside += baseline_counts([x.baseline for x in truth.lines],
                                  [x.baseline for x in lines_inside(truth, layout).lines], tolerance)
        report.bands += page.bands
        report.rescaled += page.size != model.info.size
        report.cut += page.cut
        report.leaders += page.leaders
        report.per_page.append({"page": str(xml), "truth_lines": len(truth.lines), "found_lines": len(layout.lines),
                                "baseline_f1": round(counts.f1, 4)})
        found.append((truth, layout))
    if not found:
        raise UserError("no ground-truth page could be segmented")
    report.pages, report.figures = len(found), evaluation.summary()
    report.figures.update(baseline_precision_inside=inside.precision, baseline_f1_inside=inside.f1,
                          found_outside=evaluation.baselines.predicted - inside.predicted)
    report.seconds_per_page = seconds / len(found)
    if recognizer_path is not None:
        reading = read_both(found, recognizer_path, gpu, precision, batch_size, log)
        report.cer_segmented, report.cer_transcribed = reading.segmented, reading.transcribed
        report.lines_outside, report.cer_truth_lines = reading.outside, reading.truth_lines
    return report


@dataclass
class EndToEnd:
    """Page CER (over all pages) of the text read from the found lines, from those of them in the transcribed area,
    and from the ground-truth lines, each against the ground-truth text."""
    segmented: float
    transcribed: float
    truth_lines: float
    outside: int          # found lines outside the transcribed area


def transcribed_area(truth: Layout):
    """Where the ground truth transcribes: the union of its lines' polygons (baselines where a line has none), grown
    by half a line height (pages/layout.py line_band), so that a line left out between two transcribed ones is still
    in. Not its regions: iforal's annotators drew a column's region around lines they did not transcribe."""
    shapes = [Polygon(ln.polygon) if len(ln.polygon) >= 3 else _baseline(ln) for ln in truth.lines]
    area = shapely.union_all([s if s.is_valid else shapely.make_valid(s) for s in shapes])
    return area.buffer(line_band(truth) / 2)


def lines_inside(truth: Layout, found: Layout) -> Layout:
    """`found` with only its lines inside the truth's transcribed area."""
    area = transcribed_area(truth)
    return replace(found, lines=[line for line in found.lines if in_area(line, area)])


def in_area(line: LayoutLine, area) -> bool:
    """Whether at least half of the line's baseline lies in `area`."""
    baseline = _baseline(line)
    if baseline.length == 0:
        return area.covers(baseline)
    return baseline.intersection(area).length >= baseline.length / 2


def _baseline(line: LayoutLine):
    return LineString(line.baseline) if len(line.baseline) >= 2 else Point(line.baseline[0])


def read_both(found: list[tuple[Layout, Layout]], recognizer_path: Path, gpu: str, precision: str, batch_size: int,
              log: Callable[[str], None]) -> EndToEnd:
    """Page CER of the text read from the found lines (all of them, and those in the truth's transcribed area) and
    from the ground-truth lines, against the ground-truth text, every text in reading order."""
    from loghi_ft.inference.recognise import recognise_pages
    from loghi_ft.model.recognizers import open_recognizer

    recognizer = open_recognizer(recognizer_path, gpu, precision)
    segmented_errors, transcribed_errors, truth_errors = ErrorCounts(), ErrorCounts(), ErrorCounts()
    outside = 0
    with tempfile.TemporaryDirectory(prefix="loghi-ft-segeval-") as tmp:
        folder = Path(tmp)
        pairs = []
        for k, (truth, layout) in enumerate(found):
            ordered = reading_order(truth)
            target = folder / "segmented" / f"{k:05d}.xml"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_layout(layout, target, image_filename=str(Path(truth.image_path).resolve()), metadata={})
            pairs.append((truth, ordered, target))
        readings = {}
        inputs = [p for truth, _, target in pairs for p in (target, truth.xml_path)]
        for done in recognise_pages(inputs, recognizer, batch_size=batch_size, log=log):
            readings[Path(done.unit.xml_path).resolve()] = done.results
        for truth, ordered, target in pairs:
            text = "\n".join(x.text.strip() for x in ordered.lines if x.text.strip())
            seg = readings.get(target.resolve(), {})
            segmented = "\n".join(r.text for r in seg.values() if r.text)
            written = read_layout(target)       # the lines with the ids they were read under
            kept = {ln.id for ln in lines_inside(truth, written).lines}
            outside += len(written.lines) - len(kept)
            transcribed = "\n".join(r.text for line_id, r in seg.items() if r.text and line_id in kept)
            gt = readings.get(Path(truth.xml_path).resolve(), {})
            from_truth = "\n".join(gt[x.id].text for x in ordered.lines if x.id in gt and gt[x.id].text)
            segmented_errors.add(char_errors(text, segmented))
            transcribed_errors.add(char_errors(text, transcribed))
            truth_errors.add(char_errors(text, from_truth))
    return EndToEnd(segmented_errors.rate, transcribed_errors.rate, truth_errors.rate, outside)

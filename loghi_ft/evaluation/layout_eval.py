"""A layout model measured on ground-truth pages: it segments each page's bare image; the lines and regions it finds
are scored against the page's (layout_metrics.py); with a recogniser, the text read from its lines is compared with
the page's ground-truth text, beside the text read from the ground-truth lines themselves (the figure users feel).

Both texts, and the ground truth's, are put in one reading order (pages/layout.py reading_order) before comparing,
so an annotator's convention (page numbers or stamps listed last) is not counted as an error of either reading.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from loghi_ft.errors import UserError
from loghi_ft.evaluation.layout_metrics import LayoutEvaluation
from loghi_ft.evaluation.metrics import ErrorCounts, char_errors
from loghi_ft.layout.segment import open_layout_model, segment_image
from loghi_ft.pages.layout import Layout, read_layout, reading_order, write_layout


@dataclass
class LayoutReport:
    pages: int = 0
    figures: dict = field(default_factory=dict)        # layout_summary's: baseline P/R/F1, region IoU and AP
    seconds_per_page: float = 0.0                       # segmentation alone (model + extraction)
    bands: int = 0
    cer_segmented: float | None = None                  # text read from the found lines vs the page's text
    cer_truth_lines: float | None = None                # text read from the ground-truth lines vs the page's text
    skipped: list[str] = field(default_factory=list)
    per_page: list[dict] = field(default_factory=list)

    def text(self) -> str:
        f = self.figures
        rows = [f"{self.pages} pages, {self.seconds_per_page:.2f} s per page segmented",
                f"baselines: precision {f['baseline_precision']:.4f}, recall {f['baseline_recall']:.4f}, "
                f"F1 {f['baseline_f1']:.4f}",
                f"regions: mean IoU {f['region_miou']:.4f}, AP {f['region_ap']:.4f}, AP50 {f['region_ap50']:.4f}"]
        rows += [f"  {k.split(':', 1)[1]}: IoU {v:.4f}, AP {f.get('region_ap:' + k.split(':', 1)[1], 0):.4f}"
                 for k, v in f.items() if k.startswith("region_iou:")]
        if self.bands:
            rows.append(f"{self.bands} line polygons drawn as bands around their baselines")
        if self.cer_segmented is not None:
            ratio = self.cer_segmented / self.cer_truth_lines if self.cer_truth_lines else float("inf")
            rows.append(f"page CER read from the found lines {self.cer_segmented:.2%}, from the ground-truth lines "
                        f"{self.cer_truth_lines:.2%} ({ratio:.2f}x)")
        if self.skipped:
            rows.append(f"{len(self.skipped)} pages skipped, listed above")
        return "\n".join(rows)


def evaluate_layout(xml_paths: list[Path], model_path: Path, *, tolerance: float = 10.0,
                    recognizer_path: Path | None = None, gpu: str = "-1", precision: str = "auto",
                    batch_size: int = 32, log: Callable[[str], None] = print) -> LayoutReport:
    """Segment each ground-truth page's image with the layout model and score it (and read it, with a recogniser)."""
    model, device, autocast = open_layout_model(model_path, gpu, precision)
    evaluation, report = LayoutEvaluation(tolerance), LayoutReport()
    found: list[tuple[Layout, Layout]] = []
    seconds = 0.0
    for xml in xml_paths:
        try:
            truth = read_layout(xml)
            start = time.perf_counter()
            layout, bands, _ = segment_image(model, Path(truth.image_path), device, autocast)
            seconds += time.perf_counter() - start
        except (UserError, OSError) as exc:
            report.skipped.append(f"{xml}: {exc}")
            log(f"{xml}: skipped: {exc}")
            continue
        # a page without region ground truth (timeus-1858's) scores its lines only
        counts = evaluation.add(truth, layout if truth.regions else replace(layout, regions=[]))
        report.bands += bands
        report.per_page.append({"page": str(xml), "truth_lines": len(truth.lines), "found_lines": len(layout.lines),
                                "baseline_f1": round(counts.f1, 4)})
        found.append((truth, layout))
    if not found:
        raise UserError("no ground-truth page could be segmented")
    report.pages, report.figures = len(found), evaluation.summary()
    report.seconds_per_page = seconds / len(found)
    if recognizer_path is not None:
        report.cer_segmented, report.cer_truth_lines = read_both(found, recognizer_path, gpu, precision, batch_size,
                                                                 log)
    return report


def read_both(found: list[tuple[Layout, Layout]], recognizer_path: Path, gpu: str, precision: str, batch_size: int,
              log: Callable[[str], None]) -> tuple[float, float]:
    """Page CER of the text read from the found lines and from the ground-truth lines, both against the
    ground-truth text, every text in reading order."""
    from loghi_ft.inference.recognise import recognise_pages
    from loghi_ft.model.recognizers import open_recognizer

    recognizer = open_recognizer(recognizer_path, gpu, precision)
    segmented_errors, truth_errors = ErrorCounts(), ErrorCounts()
    with tempfile.TemporaryDirectory(prefix="loghi-ft-segeval-") as tmp:
        folder = Path(tmp)
        pairs = []
        for k, (truth, layout) in enumerate(found):
            ordered = reading_order(truth)
            target = folder / "segmented" / f"{k:05d}.xml"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_layout(layout, target, image_filename=str(Path(truth.image_path).resolve()), metadata={})
            pairs.append((ordered, target, truth.xml_path))
        readings = {}
        inputs = [p for _, target, xml in pairs for p in (target, xml)]
        for done in recognise_pages(inputs, recognizer, batch_size=batch_size, log=log):
            readings[Path(done.unit.xml_path).resolve()] = done.results
        for ordered, target, xml in pairs:
            text = "\n".join(x.text.strip() for x in ordered.lines if x.text.strip())
            seg = readings.get(target.resolve(), {})
            segmented = "\n".join(r.text for r in seg.values() if r.text)
            gt = readings.get(Path(xml).resolve(), {})
            from_truth = "\n".join(gt[x.id].text for x in ordered.lines if x.id in gt and gt[x.id].text)
            segmented_errors.add(char_errors(text, segmented))
            truth_errors.add(char_errors(text, from_truth))
    return segmented_errors.rate, truth_errors.rate

"""Error rates of predicted lines against ground truth, over all lines and per page, with 95% intervals."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loghi_ft.errors import UserError
from loghi_ft.evaluation.metrics import char_errors, word_errors

# measure name -> what it means; the order is the table's order
MEASURES = {
    "cer": "CER",
    "wer": "WER",
    "cer_nocase": "CER ignoring case",
    "cer_nopunct": "CER ignoring punctuation",
}
BOOTSTRAP_SAMPLES = 1000
CI_METHOD = f"percentile bootstrap over lines ({BOOTSTRAP_SAMPLES} resamples, seed 0), 95%"
SPACES = re.compile(r"\s+")


@dataclass
class LineEval:
    line_id: str
    reference: str
    prediction: str | None    # None when no prediction was found for this line


@dataclass
class PageEval:
    page: str                 # the page's path relative to its ground-truth folder
    lines: list[LineEval]
    missing: bool = False     # no predicted page at all: every line counts as missing
    unread: bool = False      # the ground-truth page itself could not be read: nothing of it is scored
    unread_lines: int = 0     # ground-truth lines the reader dropped (no Coords...): not scored
    problems: list[str] = field(default_factory=list)


@dataclass
class Rate:
    rate: float
    low: float
    high: float
    errors: int
    length: int


@dataclass
class Evaluation:
    lines: int = 0
    chars: int = 0
    words: int = 0
    missing_lines: int = 0                                # GT lines with no prediction (counted as all wrong)
    empty_reference_lines: int = 0                        # GT lines without text: not scored
    missing_pages: list[str] = field(default_factory=list)  # GT pages with no predicted page at all
    unread_pages: list[str] = field(default_factory=list)   # GT pages that could not be read: not scored
    unread_lines: int = 0                                 # GT lines the reader dropped: not scored
    problems: list[str] = field(default_factory=list)
    overall: dict[str, Rate] = field(default_factory=dict)
    pages: dict[str, dict[str, Rate]] = field(default_factory=dict)
    page_lines: dict[str, int] = field(default_factory=dict)

    def shortfalls(self) -> list[str]:
        """What was not scored as it should have been, one phrase each; empty when every page and line was."""
        out = []
        if self.missing_lines:
            out.append(f"{self.missing_lines} lines without a prediction ({len(self.missing_pages)} pages without "
                       "a predicted page), counted as wrong")
        if self.unread_pages:
            out.append(f"{len(self.unread_pages)} ground-truth pages unreadable, not scored")
        if self.unread_lines:
            out.append(f"{self.unread_lines} ground-truth lines unreadable, not scored")
        return out


def normalize(text: str) -> str:
    """NFC, whitespace runs as one space, no leading or trailing space: layout is not what we score."""
    return SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def strip_punctuation(text: str) -> str:
    return normalize("".join(c for c in text if not unicodedata.category(c).startswith("P")))


def line_counts(reference: str, prediction: str) -> tuple[list[int], list[int]]:
    """(errors, lengths) of one line for each measure, in MEASURES order."""
    counts = [
        char_errors(reference, prediction),
        word_errors(reference, prediction),
        char_errors(reference.lower(), prediction.lower()),
        char_errors(strip_punctuation(reference), strip_punctuation(prediction)),
    ]
    return [c.errors for c in counts], [c.length for c in counts]


def evaluate(pages: Iterable[PageEval], samples: int = BOOTSTRAP_SAMPLES) -> Evaluation:
    """Score every line; rates are summed errors over summed reference lengths."""
    result = Evaluation()
    errors: list[list[int]] = []
    lengths: list[list[int]] = []
    page_of: list[str] = []
    for page in pages:
        if page.missing:
            result.missing_pages.append(page.page)
        if page.unread:
            result.unread_pages.append(page.page)
        result.unread_lines += page.unread_lines
        result.problems.extend(page.problems)
        for line in page.lines:
            reference = normalize(line.reference)
            if not reference:
                result.empty_reference_lines += 1
                continue
            if line.prediction is None:
                result.missing_lines += 1
            e, n = line_counts(reference, normalize(line.prediction or ""))
            errors.append(e)
            lengths.append(n)
            page_of.append(page.page)
    e_arr = np.asarray(errors, dtype=np.int64).reshape(-1, len(MEASURES))
    n_arr = np.asarray(lengths, dtype=np.int64).reshape(-1, len(MEASURES))
    result.lines = len(errors)
    result.chars = int(n_arr[:, 0].sum())
    result.words = int(n_arr[:, 1].sum())
    result.overall = rates(e_arr, n_arr, samples)
    pages_arr = np.asarray(page_of)
    for page in dict.fromkeys(page_of):
        mask = pages_arr == page
        result.pages[page] = rates(e_arr[mask], n_arr[mask], samples)
        result.page_lines[page] = int(mask.sum())
    return result


def rates(errors: np.ndarray, lengths: np.ndarray, samples: int = BOOTSTRAP_SAMPLES) -> dict[str, Rate]:
    """Each measure's rate with a percentile-bootstrap 95% interval, resampling whole lines."""
    total_e, total_n = errors.sum(0), lengths.sum(0)
    low, high = bootstrap_interval(errors, lengths, samples)
    return {name: Rate(ratio(total_e[i], total_n[i]), float(low[i]), float(high[i]), int(total_e[i]), int(total_n[i]))
            for i, name in enumerate(MEASURES)}


def bootstrap_interval(errors: np.ndarray, lengths: np.ndarray, samples: int,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2.5 and 97.5 percentiles of the rate over line resamples; lines, not characters, are independent."""
    n = len(errors)
    if n == 0:
        return np.zeros(errors.shape[1]), np.zeros(errors.shape[1])
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # keeps the (chunk, n, measures) gather small for any corpus size
    values = []
    for start in range(0, samples, chunk):
        idx = rng.integers(0, n, (min(chunk, samples - start), n))
        e, l = errors[idx].sum(1), lengths[idx].sum(1)
        values.append(np.where(l > 0, e / np.maximum(l, 1), (e > 0).astype(float)))
    values = np.concatenate(values)
    return np.percentile(values, 2.5, axis=0), np.percentile(values, 97.5, axis=0)


def ratio(errors: int, length: int) -> float:
    return errors / length if length else (0.0 if errors == 0 else 1.0)


def pair_folders(gt_dir: Path, pred_dir: Path) -> Iterator[PageEval]:
    """Each GT page with the same-id lines of the page at the same relative path under pred_dir."""
    from loghi_ft.pages.documents import find_pages, read_page

    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for name, folder in (("ground truth", gt_dir), ("predictions", pred_dir)):
        if not folder.is_dir():
            raise UserError(f"{folder}: {name} folder not found")
    found = False
    for gt_path in sorted(find_pages([gt_dir])):
        found = True
        rel = os.path.relpath(gt_path, gt_dir)
        try:
            gt_page = read_page(gt_path)
        except UserError as exc:
            yield PageEval(rel, [], unread=True, problems=[f"ground truth not scored: {exc}"])
            continue
        pred_path = pred_dir / rel
        predicted: dict[str, str] | None = None
        problems = unread_problems(gt_page)
        if not pred_path.is_file():
            problems.append(f"{pred_path}: no predicted page; its {len(gt_page.lines)} lines count as missing")
        else:
            try:
                predicted = {line.id: line.text for line in read_page(pred_path).lines}
            except UserError as exc:
                problems.append(f"{exc}; its lines count as missing")
        lines = [LineEval(line.id, line.text, None if predicted is None else predicted.get(line.id))
                 for line in gt_page.lines]
        absent = [line.line_id for line in lines if line.prediction is None and normalize(line.reference)]
        if predicted is not None and absent:
            problems.append(f"{pred_path}: no reading of line {', '.join(absent)}; counted as wrong")
        yield PageEval(rel, lines, missing=predicted is None, unread_lines=len(gt_page.problems), problems=problems)
    if not found:
        raise UserError(f"{gt_dir}: no PAGE XML found")


def unread_problems(gt_page) -> list[str]:
    """One message for each line of a ground-truth page that the reader dropped (documents.Page.problems)."""
    return [f"{gt_page.xml_path}: {problem}; not scored" for problem in gt_page.problems]


def to_json(result: Evaluation) -> dict:
    """The `--json` document: rates as fractions, each with its interval; per page the same."""
    def block(measures: dict[str, Rate]) -> dict:
        out = {}
        for name, r in measures.items():
            out[name] = r.rate
            out[f"{name}_ci95"] = [r.low, r.high]
        return out

    return {
        **block(result.overall),
        "lines": result.lines,
        "chars": result.chars,
        "words": result.words,
        "missing_lines": result.missing_lines,
        "missing_pages": result.missing_pages,
        "unread_pages": result.unread_pages,
        "unread_lines": result.unread_lines,
        "complete": not result.shortfalls(),
        "empty_reference_lines": result.empty_reference_lines,
        "ci_method": CI_METHOD,
        "problems": result.problems,
        "pages": {page: {"lines": result.page_lines[page], **block(m)} for page, m in result.pages.items()},
    }


def format_table(result: Evaluation, per_page: bool = True) -> str:
    """A plain-text table: the overall rates, then one row per page."""
    def pct(r: Rate) -> str:
        return f"{100 * r.rate:6.2f}% [{100 * r.low:6.2f}, {100 * r.high:6.2f}]"

    out = [f"{'measure':<26} {'rate':>7}  {'95% CI':>18}  errors/length"]
    for name, label in MEASURES.items():
        r = result.overall[name]
        out.append(f"{label:<26} {pct(r)}  {r.errors}/{r.length}")
    out.append(f"lines {result.lines}, characters {result.chars}, words {result.words}; "
               f"missing predictions: {result.missing_lines} lines, {len(result.missing_pages)} pages; "
               f"GT lines without text (not scored): {result.empty_reference_lines}" +
               (f"; GT unreadable (not scored): {len(result.unread_pages)} pages, {result.unread_lines} lines"
                if result.unread_pages or result.unread_lines else ""))
    out.append(f"intervals: {CI_METHOD}")
    if per_page and result.pages:
        width = max(len("page"), *(len(p) for p in result.pages))
        out.append("")
        out.append(f"{'page':<{width}} {'lines':>5}  {'CER':>7} {'95% CI':>18}  {'WER':>7} {'95% CI':>18}")
        for page, m in result.pages.items():
            out.append(f"{page:<{width}} {result.page_lines[page]:>5}  {pct(m['cer'])}  {pct(m['wer'])}")
    return "\n".join(out)

"""Measure recognition against ground-truth PAGE XML: CER, WER, CER ignoring case or punctuation, with 95% intervals.

Either run a model over the ground truth (--model DIR GT...) or score predictions already written
(--pred DIR --gt DIR; pages matched by relative path, lines by id). Lines without a prediction count as
wrong and are reported; ground-truth lines without text are not scored. Exit status 0 when every ground-truth
page and line was scored against a prediction; 3 when some had none (no predicted page, a line missing from
it or not recognised) or could not be read (listed, and named in the last line); 1 for an error.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from loghi_ft.commands.common import RecognitionSettings
from loghi_ft.settings import setting

PER_PAGE_ROWS = 60  # beyond this many pages the per-page table goes to --json only


@dataclass
class Settings(RecognitionSettings):
    inputs: list[Path] = setting([], "ground-truth PAGE XML folders or files (with --model)", positional=True,
                                 metavar="GT")
    pred: Path | None = setting(None, "folder of predicted PAGE XML (as infer --output wrote it)")
    gt: Path | None = setting(None, "folder of ground-truth PAGE XML (with --pred)")
    json: Path | None = setting(None, "also write the figures (rates as fractions) to this JSON file")


def run(args: Settings) -> int:
    from loghi_ft.errors import PARTIAL, UserError
    from loghi_ft.evaluation.scoring import evaluate, format_table, pair_folders, to_json
    from loghi_ft.atomic import write_atomic

    args.check()
    if args.model is not None:
        if args.pred is not None or not (args.inputs or args.gt):
            raise UserError("eval: give either --model DIR GT... or --pred DIR --gt DIR")
        pages = model_pages(args, args.inputs or [args.gt])
    else:
        if args.pred is None or args.gt is None or args.inputs:
            raise UserError("eval: give either --model DIR GT... or --pred DIR --gt DIR")
        pages = pair_folders(args.gt, args.pred)
    result = evaluate(pages)
    for problem in result.problems:
        print(f"loghi-ft: {problem}", file=sys.stderr)
    print(format_table(result, per_page=len(result.pages) <= PER_PAGE_ROWS))
    if len(result.pages) > PER_PAGE_ROWS:
        print(f"({len(result.pages)} pages: the per-page figures are in --json)")
    if args.json:
        data = json.dumps(to_json(result), ensure_ascii=False, indent=1) + "\n"
        try:
            write_atomic(args.json, data.encode("utf-8"))
        except OSError as exc:
            raise UserError(f"{args.json}: cannot write ({exc.strerror})") from None
    if result.lines == 0:
        raise UserError("no ground-truth line with text was found to score")
    shortfalls = result.shortfalls()
    if shortfalls:
        print(f"eval: INCOMPLETE (exit status {PARTIAL}): {'; '.join(shortfalls)}; listed above")
        return PARTIAL
    return 0


def model_pages(args: Settings, inputs: list[Path]):
    """Run the model over the ground-truth pages in memory: one PageEval per page, nothing written."""
    from loghi_ft.evaluation.scoring import LineEval, PageEval, unread_problems
    from loghi_ft.inference.recognise import recognise_pages
    from loghi_ft.model.recognizers import open_recognizer

    recognizer = open_recognizer(args.model, args.gpu, args.precision)
    recognised = recognise_pages(inputs, recognizer, batch_size=args.batch_size, beam_width=args.beam_width,
                                 lm=args.lm, lm_weight=args.lm_weight, workers=args.workers,
                                 skip=lambda unit: unit.xml_path is None,
                                 log=lambda m: print(f"loghi-ft: {m}", file=sys.stderr))
    for r in recognised:
        if r.page is None:
            yield PageEval(r.unit.key, [], unread=True, problems=[f"not scored: {r.error}"])
            continue
        cut = {line.id for line in r.page.lines}
        failed = {line_id: why for line_id, why in r.failed if line_id in cut}
        lines = [LineEval(line.id, line.text, None if r.error or line.id in failed else r.results[line.id].text)
                 for line in r.page.lines]
        problems = unread_problems(r.page) + [f"{r.page.xml_path}: {why}; no prediction" for why in failed.values()]
        if r.error:
            problems.append(f"{r.error}; its lines count as missing")
        yield PageEval(r.unit.key, lines, missing=r.error is not None, unread_lines=len(r.page.problems),
                       problems=problems)

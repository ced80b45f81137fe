"""How well line confidences rank lines by their real errors: the shipped model on the timeus-1858 test pages.

    python benchmarks/bench_confidence.py [--model DIR] [--split test] [--gpu -1]

Runs `loghi-ft infer --precision fp32` over the pages of one split (default: the 14 test pages, 308 lines) into a
temporary folder and scores the confidence it wrote; then recognises the same pages in-process (the same code
path, greedy) to score candidate confidences computed from the same decoder outputs. Per measure it prints:
- CER of the least confident tenth of the lines against the most confident tenth (pooled: errors / characters);
- AUC lines: the area under "share of all errors found" against "share of lines checked", checking lines in
  the measure's order (least confident first); a random order gives 0.5, the oracle sorts by true errors;
- AUC chars: the same with "share of characters checked" on the x axis (the oracle sorts by line CER);
then the AUC gain of the confidence now over the one before, with a 95% interval by bootstrap over lines.
Errors are edit operations against the ground truth, both sides NFC with whitespace runs as one space.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TIMEUS = ROOT.parent / "shared" / "data" / "timeus-1858"
sys.path.insert(0, str(ROOT))

from loghi_ft.evaluation.metrics import char_errors  # noqa: E402
from loghi_ft.evaluation.review_page import read_lines  # noqa: E402
from loghi_ft.evaluation.scoring import normalize  # noqa: E402
from loghi_ft.model.decode import Decoded, Decoder  # noqa: E402
from loghi_ft.pages.documents import read_page  # noqa: E402


@dataclass
class Line:
    errors: int
    chars: int
    scores: dict[str, float]   # measure -> confidence (higher: more likely right)


def candidates(decoded: Decoded, logp: np.ndarray) -> dict[str, float]:
    """Every candidate line confidence from one line's decoding and its frames' log-probabilities."""
    chars = decoded.chars
    frames = np.exp(logp.max(-1)) if logp.shape[0] else np.zeros(1)
    probs = np.array([c.prob for c in chars]) if chars else frames
    return {
        "geometric mean of characters' best-frame p (before)": float(np.exp(np.log(np.maximum(probs, 1e-12)).mean())),
        "minimum character p": float(probs.min()),
        "mean character p": float(probs.mean()),
        "mean log-prob per frame, exp": float(np.exp(np.log(np.maximum(frames, 1e-12)).mean())),
        "expected errors: sum of (1 - p), a count": -float((1 - probs).sum()),
        "CTC posterior per character (now)": decoded.conf,
        "CTC posterior of the whole line (now ^ characters)": decoded.conf ** max(1, len(chars)),
    }


class MeasuringDecoder(Decoder):
    """The greedy decoder that also keeps every candidate measure of each line it decodes, in `measures`.

    A line's conf carries the index of its entry: recognise() hands on only text and conf."""

    def __init__(self, codec):
        super().__init__(codec)
        self.measures: list[dict[str, float]] = []

    def __call__(self, logits, lengths) -> list[Decoded]:
        import torch
        out = super().__call__(logits, lengths)
        logp = torch.log_softmax(logits.detach().float(), -1).cpu().numpy()
        for n, (decoded, length) in enumerate(zip(out, lengths.tolist())):
            self.measures.append(candidates(decoded, logp[n, : int(length)]))
            decoded.conf = float(len(self.measures) - 1)
        return out


def test_pages(split: str) -> list[Path]:
    with open(TIMEUS / "splits.tsv", encoding="utf-8") as f:
        return [TIMEUS / row["xml"] for row in csv.DictReader(f, delimiter="\t") if row["split"] == split]


def references(pages: list[Path]) -> dict[tuple[str, str], str]:
    """(page file name, line id) -> normalised ground truth, for lines that have text."""
    refs = {}
    for xml in pages:
        for line in read_page(xml).lines:
            if normalize(line.text):
                refs[(xml.name, line.id)] = normalize(line.text)
    return refs


def written(pages: list[Path], model: Path, gpu: str, work: Path, refs: dict) -> list[Line]:
    """Run `loghi-ft infer` and score the confidence it wrote into the pages."""
    src, out = work / "in", work / "out"
    src.mkdir()
    for xml in pages:
        for f in (xml, TIMEUS / read_page(xml).image_path.name):
            (src / f.name).symlink_to(f)
    subprocess.run([sys.executable, "-m", "loghi_ft", "infer", str(src), "--output", str(out), "--model", str(model),
                    "--precision", "fp32", "--gpu", gpu], check=True, cwd=ROOT)
    lines = []
    for line in read_lines([out], log=print, progress=False).lines:
        ref = refs.get((line.page, line.line_id))
        if ref is not None:
            scores = {"as infer wrote it": line.conf, "^ characters": line.conf ** max(1, len(line.text))}
            lines.append(Line(char_errors(ref, normalize(line.text)).errors, len(ref), scores))
    return lines


def in_process(pages: list[Path], model: Path, gpu: str, refs: dict) -> list[Line]:
    """Recognise the pages as infer does (same batching) and score every candidate measure."""
    from loghi_ft.inference.pages import cut_stream, units
    from loghi_ft.inference.recognise import recognise
    from loghi_ft.model.codec import Codec
    from loghi_ft.model.recognizers import open_recognizer

    recognizer = open_recognizer(model, gpu, "fp32")
    decoder = MeasuringDecoder(Codec(recognizer.info.charset))
    lines = []
    for done in recognise(cut_stream(units(pages, None), recognizer.info.height, 0), recognizer, decoder):
        for line_id, result in done.results.items():
            ref = refs.get((done.unit.xml_path.name, line_id))
            if ref is not None:
                scores = decoder.measures[int(result.conf)]
                lines.append(Line(char_errors(ref, normalize(result.text)).errors, len(ref), scores))
    return lines


def tenths(lines: list[Line], key) -> tuple[float, float]:
    """Pooled CER of the least and of the most confident tenth of the lines."""
    ranked = sorted(lines, key=key)
    k = max(1, round(len(ranked) / 10))
    rate = lambda part: sum(x.errors for x in part) / max(1, sum(x.chars for x in part))  # noqa: E731
    return rate(ranked[:k]), rate(ranked[-k:])


def auc(lines: list[Line], key, by_chars: bool = False) -> float:
    """Area under errors found (share) against lines (or characters) checked (share), checking in `key` order."""
    ranked = sorted(lines, key=key)
    x = np.cumsum([0] + [line.chars if by_chars else 1 for line in ranked], dtype=float)
    y = np.cumsum([0] + [line.errors for line in ranked], dtype=float)
    return float(np.trapezoid(y / y[-1], x / x[-1]))


def gain(lines: list[Line], now: str, before: str, by_chars: bool, repeats: int = 1000) -> str:
    """AUC of measure `now` minus that of `before`, with a 95% interval by paired bootstrap over lines."""
    rng = np.random.default_rng(0)
    diff = lambda sample: (auc(sample, lambda x: x.scores[now], by_chars)  # noqa: E731
                           - auc(sample, lambda x: x.scores[before], by_chars))
    draws = [diff([lines[i] for i in rng.integers(0, len(lines), len(lines))]) for _ in range(repeats)]
    return f"{diff(lines):+.3f} ({np.percentile(draws, 2.5):+.3f} to {np.percentile(draws, 97.5):+.3f})"


def report(name: str, lines: list[Line], key) -> None:
    low, high = tenths(lines, key)
    print(f"| {name} | {100 * low:.1f}% | {100 * high:.1f}% | {auc(lines, key):.3f} | {auc(lines, key, True):.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "timeus-1858-small")
    parser.add_argument("--split", default="test", help="timeus-1858 split (default: test)")
    parser.add_argument("--gpu", default="-1", help="-1: the CPU (default), 0: the first GPU")
    args = parser.parse_args()
    pages = test_pages(args.split)
    refs = references(pages)
    with tempfile.TemporaryDirectory() as work:
        infer_lines = written(pages, args.model, args.gpu, Path(work), refs)
    lines = in_process(pages, args.model, args.gpu, refs)
    errors, chars = sum(x.errors for x in lines), sum(x.chars for x in lines)
    print(f"\n{len(pages)} pages, {len(lines)} lines with ground truth, {chars} characters, {errors} errors "
          f"(CER {100 * errors / chars:.2f}%); {args.model.name}, greedy, fp32\n")
    print("| order | CER least confident 10% | CER most confident 10% | AUC lines | AUC chars |")
    print("|---|---|---|---|---|")
    report("as infer wrote it (4 decimals): review's order", infer_lines, lambda x: x.scores["as infer wrote it"])
    report("the same ^ characters: review --order line", infer_lines, lambda x: x.scores["^ characters"])
    for name in lines[0].scores:
        report(name, lines, lambda x, name=name: x.scores[name])
    print(f"| random order (expected) | {100 * errors / chars:.1f}% | {100 * errors / chars:.1f}% | 0.500 | 0.500 |")
    report("oracle: most errors first", lines, lambda x: -x.errors)
    report("oracle: highest CER first", lines, lambda x: -x.errors / x.chars)
    now, before = "CTC posterior per character (now)", "geometric mean of characters' best-frame p (before)"
    print(f"\nAUC now - before, 95% interval by bootstrap over lines: per line {gain(lines, now, before, False)}, "
          f"per character {gain(lines, now, before, True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""review: recognised lines least confident first, in one self-contained HTML page and a CSV; what that order is worth."""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import pytest
from lxml import html as lxml_html

from conftest import FIXTURES, ROOT, TIMEUS
from loghi_ft.cli import main
from loghi_ft.evaluation.metrics import char_errors
from loghi_ft.evaluation.scoring import normalize
from loghi_ft.pages.documents import LineResult, read_page, write_page

MODEL = ROOT / "models" / "timeus-1858-small"
PAGES = ("PH 1858-63", "PH 1858-74")  # timeus test pages: 13 and 4 lines


def images_folder(tmp_path: Path, names=PAGES) -> Path:
    """The pages with their images, as `infer` reads them."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        for suffix in (".xml", ".jpg"):
            (folder / f"{name}{suffix}").symlink_to(TIMEUS / f"{name}{suffix}")
    return folder


def recognised(tmp_path: Path, unscored: int = 2) -> tuple[Path, dict[tuple[str, str], float | None]]:
    """The pages as `infer --output` writes them (XML alone), with made-up confidences; the last `unscored` lines
    of the first page keep their ground truth without a confidence."""
    out = tmp_path / "rec"
    out.mkdir()
    rng = random.Random(3)
    confs: dict[tuple[str, str], float | None] = {}
    for k, name in enumerate(PAGES):
        lines = read_page(TIMEUS / f"{name}.xml").lines
        scored = lines[:len(lines) - unscored] if k == 0 else lines
        results = {line.id: LineResult(line.text, round(rng.random(), 4)) for line in scored}
        write_page(TIMEUS / f"{name}.xml", out / f"{name}.xml", results, {"model": "test"})
        confs.update({(f"{name}.xml", line.id): results[line.id].conf if line.id in results else None
                      for line in lines})
    return out, confs


def review(*args: str) -> int:
    return main(["review", *args])


def listed(report: Path) -> tuple[list[tuple[str, str]], lxml_html.HtmlElement]:
    doc = lxml_html.fromstring(report.read_text(encoding="utf-8"))
    return [(a.get("data-page"), a.get("data-id")) for a in doc.iter("article")], doc


def test_review_lists_every_line_least_confident_first_unscored_last(tmp_path, capsys):
    rec, confs = recognised(tmp_path)
    report = tmp_path / "review.html"
    assert review(str(rec), "--output", str(report), "--images", str(images_folder(tmp_path))) == 0
    order, doc = listed(report)
    scored = sorted((k for k, c in confs.items() if c is not None), key=lambda k: confs[k])
    unscored = [k for k, c in confs.items() if c is None]
    assert len(unscored) == 2 and order == scored + unscored
    texts = {(f"{name}.xml", line.id): line.text for name in PAGES for line in read_page(rec / f"{name}.xml").lines}
    for article, key in zip(doc.iter("article"), order):
        header = article.find("header").text_content()
        assert key[0] in header and key[1] in header
        assert article.find("p[@class='reading']").text_content() == texts[key]
        assert (f"{confs[key]:.4f}" in header) if confs[key] is not None else "no confidence" in header
    text = report.read_text(encoding="utf-8")
    assert len(re.findall(r'src="data:image/png;base64,', text)) == len(order)
    assert not re.search(r'(src|href)="(?!data:)', text), "the page must not load anything from elsewhere"
    with open(report.with_suffix(".csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["page"], r["line_id"]) for r in rows] == order
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, len(order) + 1)]
    for r in rows:
        key = (r["page"], r["line_id"])
        assert r["text"] == texts[key]
        assert r["confidence"] == ("" if confs[key] is None else f"{confs[key]:.4f}")
    assert "2 lines have no confidence" in capsys.readouterr().out


def test_limit_and_confidence_filters_keep_the_order(tmp_path):
    rec, confs = recognised(tmp_path)
    report, table = tmp_path / "few.html", tmp_path / "elsewhere.csv"
    assert review(str(rec), "--output", str(report), "--csv", str(table), "--max-conf", "0.6",
                  "--min-conf", "0.1", "--limit", "5") == 0
    order, _ = listed(report)
    wanted = sorted((k for k, c in confs.items() if c is not None and 0.1 <= c <= 0.6), key=lambda k: confs[k])
    assert len(wanted) > 5 and order == wanted[:5]
    with open(table, encoding="utf-8", newline="") as f:
        assert [(r["page"], r["line_id"]) for r in csv.DictReader(f)] == order
    assert not report.with_suffix(".csv").exists()
    # a filter that leaves few scored lines: the unscored ones still come, last
    assert review(str(rec), "--output", str(report), "--max-conf", "0.05") == 0
    order, _ = listed(report)
    assert order[-2:] == [k for k, c in confs.items() if c is None]
    assert all(confs[k] <= 0.05 for k in order[:-2])


def test_line_order_ranks_by_the_whole_line_being_right(tmp_path):
    rec, confs = recognised(tmp_path, unscored=0)
    report = tmp_path / "review.html"
    assert review(str(rec), "--output", str(report), "--order", "line") == 0
    order, _ = listed(report)
    lengths = {(f"{name}.xml", line.id): len(line.text.strip()) for name in PAGES
               for line in read_page(rec / f"{name}.xml").lines}
    assert order == sorted(confs, key=lambda k: confs[k] ** max(1, lengths[k]))
    assert order != sorted(confs, key=lambda k: confs[k])


def test_pages_without_their_images_are_listed_and_the_fix_is_named(tmp_path, capsys):
    rec, confs = recognised(tmp_path)
    report = tmp_path / "review.html"
    assert review(str(rec), "--output", str(report)) == 0
    order, doc = listed(report)
    assert sorted(order) == sorted(confs)
    assert len(doc.find_class("noimg")) == len(order)
    assert "--images" in capsys.readouterr().err
    assert review(str(tmp_path / "nope"), "--output", str(report)) == 1
    assert "nope" in capsys.readouterr().err


def test_alto_pages_give_the_confidence_of_their_lines(tmp_path):
    source = FIXTURES / "alto" / "bsb00084914_00007.xml"
    lines = read_page(source).lines
    confs = {line.id: round(0.9 - 0.07 * i, 4) for i, line in enumerate(lines[:8])}
    (tmp_path / "rec").mkdir()
    write_page(source, tmp_path / "rec" / source.name, {k: LineResult(f"line {k}", c) for k, c in confs.items()},
               {"model": "test"})
    report = tmp_path / "review.html"
    assert review(str(tmp_path / "rec"), "--output", str(report), "--limit", "8") == 0
    order, _ = listed(report)
    assert [line_id for _, line_id in order] == sorted(confs, key=confs.get)


def test_confidence_is_the_reading_probability_over_all_alignments_per_character():
    import numpy as np
    import torch

    from loghi_ft.model.codec import Codec
    from loghi_ft.model.decode import Decoder
    # "a" on both frames: aa, a-, -a all read "a": 0.36 + 0.24 + 0.24 = 0.84; its best frame alone says 0.6
    logits = torch.tensor(np.log([[[0.4, 0.6], [0.4, 0.6]]]), dtype=torch.float32)
    decoded = Decoder(Codec(["a"]))(logits, torch.tensor([2]))[0]
    assert decoded.text == "a" and decoded.conf == pytest.approx(0.84, abs=1e-5)
    # "ab" has one alignment, 0.7 * 0.8: per character the square root
    logits = torch.tensor(np.log([[[0.2, 0.7, 0.1], [0.1, 0.1, 0.8]]]), dtype=torch.float32)
    decoded = Decoder(Codec(["a", "b"]), beam_width=3)(logits, torch.tensor([2]))[0]
    assert decoded.text == "ab" and decoded.conf == pytest.approx(0.56 ** 0.5, abs=1e-5)


@pytest.mark.slow
def test_least_confident_lines_of_real_pages_hold_the_most_errors(tmp_path):
    # three timeus test pages (77 lines) read by the shipped model; measured: least confident tenth 27.5% CER,
    # most confident tenth 2.5%, all 7.9%
    names = ("PH 1858-15", "PH 1858-2 d", "PH 1858-24")
    pages = images_folder(tmp_path, names)
    rec, report = tmp_path / "rec", tmp_path / "review.html"
    assert main(["infer", str(pages), "--model", str(MODEL), "--output", str(rec), "--precision", "fp32",
                 "--workers", "0"]) == 0
    assert review(str(rec), "--output", str(report)) == 0
    refs = {(f"{name}.xml", line.id): normalize(line.text) for name in names
            for line in read_page(TIMEUS / f"{name}.xml").lines}
    with open(report.with_suffix(".csv"), encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if refs[(r["page"], r["line_id"])]]
    assert len(rows) == 77 and all(r["confidence"] for r in rows)
    tenth = round(len(rows) / 10)

    def cer(part):
        counts = [char_errors(refs[(r["page"], r["line_id"])], normalize(r["text"])) for r in part]
        return sum(c.errors for c in counts) / sum(c.length for c in counts)

    assert cer(rows[:tenth]) > 2 * cer(rows) > 4 * cer(rows[-tenth:])

"""compare: one self-contained HTML with every line, its image, the readings and their differences."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from lxml import html as lxml_html

from conftest import IFORAL
from loghi_ft.cli import main
from loghi_ft.pages.documents import LineResult, read_page, write_page
from loghi_ft.evaluation.compare_page import diff_html

SOURCE = IFORAL / "foral_de_gouveia_1217"


def ground_truth(tmp_path: Path) -> Path:
    gt = tmp_path / "gt"
    gt.mkdir()
    for name in ("1.xml", "1.jpg", "3.xml", "3.jpg"):
        (gt / name).symlink_to(SOURCE / name)
    return gt


def test_report_holds_every_line_with_image_readings_and_summary(tmp_path, capsys):
    gt = ground_truth(tmp_path)
    exact, shortened = tmp_path / "exact", tmp_path / "shortened"
    exact.mkdir()
    shortened.mkdir()
    for name in ("1.xml", "3.xml"):
        shutil.copy(SOURCE / name, exact / name)
    # the second reading drops each line's last character on page 3 and has no page 1 at all
    page = read_page(SOURCE / "3.xml")
    write_page(SOURCE / "3.xml", shortened / "3.xml",
               {line.id: LineResult(line.text.strip()[:-1], 0.9) for line in page.lines}, {"model": "test"})
    report = tmp_path / "report.html"
    assert main(["compare", "--gt", str(gt), "--pred", str(exact), "--pred", str(shortened), "--html", str(report)]) == 0
    text = report.read_text(encoding="utf-8")
    ids = [line.id for name in ("1.xml", "3.xml") for line in read_page(SOURCE / name).lines if line.text.strip()]
    doc = lxml_html.fromstring(text)
    shown = [a.get("data-id") for a in doc.iter("article")]
    assert shown == ids
    assert len(re.findall(r'src="data:image/png;base64,', text)) == len(ids)
    assert not re.search(r'(src|href)="(?!data:)', text), "the report must not load anything from elsewhere"
    summary = [[c.text_content().strip() for c in row] for row in doc.iter("tr") if row.getparent().tag == "tbody"]
    assert summary[0][0] == "exact" and summary[0][1] == "0.00%"
    assert summary[1][0] == "shortened" and summary[1][-1] == str(len(read_page(SOURCE / "1.xml").lines))
    last = page.lines[-1]
    article = next(a for a in doc.iter("article") if a.get("data-id") == last.id)
    assert article.get("data-disagree") == "1"
    assert article.get("data-cer1") == f"{1 / len(last.text.strip()):.4f}"
    assert article.find(".//span[@class='del']").text == last.text.strip()[-1]
    assert "compare: " in capsys.readouterr().out


def test_diff_marks_substitutions_insertions_and_missing_characters():
    marked = diff_html("abcd", "abed")
    assert marked == 'ab<span class="sub" title="ground truth: c">e</span>d'
    assert '<span class="ins"' in diff_html("abc", "abxc")
    assert diff_html("a<b", "a") == 'a<span class="del" title="missing from the reading">&lt;b</span>'


def test_missing_prediction_folder_is_one_clear_message(tmp_path, capsys):
    gt = ground_truth(tmp_path)
    assert main(["compare", "--gt", str(gt), "--pred", str(tmp_path / "nope"), "--html", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "not found" in err
    assert not (tmp_path / "r.html").exists()

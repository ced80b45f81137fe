"""eval: CER 0 on the ground truth itself, the hand-computed CER on a hand-made case, lines matched by id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import DATA, IFORAL
from loghi_ft.cli import main
from loghi_ft.errors import PARTIAL
from loghi_ft.evaluation.scoring import LineEval, PageEval, evaluate, normalize
from loghi_ft.pages.documents import find_pages, read_page

NS = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
PAGE_XML = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
  <Metadata><Creator>test</Creator><Created>2024-01-01T00:00:00</Created><LastChange>2024-01-01T00:00:00</LastChange></Metadata>
  <Page imageFilename="p.jpg" imageWidth="1000" imageHeight="1000">
    <TextRegion id="r1"><Coords points="0,0 999,0 999,999 0,999"/>
{lines}
    </TextRegion>
  </Page>
</PcGts>
"""


def page(folder: Path, name: str, texts: dict[str, str]) -> Path:
    lines = "\n".join(f'      <TextLine id="{i}"><Coords points="10,{n * 50} 900,{n * 50} 900,{n * 50 + 40} 10,{n * 50 + 40}"/>'
                      f"<TextEquiv><Unicode>{t}</Unicode></TextEquiv></TextLine>" for n, (i, t) in enumerate(texts.items()))
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PAGE_XML.replace("{lines}", lines), encoding="utf-8")
    return path


def test_predictions_equal_to_the_ground_truth_score_zero(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--pred", str(IFORAL), "--gt", str(IFORAL), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    expected = [line.text for p in find_pages([IFORAL]) for line in read_page(p).lines if normalize(line.text)]
    assert result["lines"] == len(expected) > 600
    assert result["chars"] == sum(len(normalize(t)) for t in expected)
    for measure in ("cer", "wer", "cer_nocase", "cer_nopunct"):
        assert result[measure] == 0.0 and result[f"{measure}_ci95"] == [0.0, 0.0]
    assert len(result["pages"]) == 11 and result["missing_lines"] == 0 and result["complete"]
    out = capsys.readouterr().out
    assert "CER" in out and "INCOMPLETE" not in out


def test_hand_made_case_gives_the_cer_computed_by_hand(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    page(gt, "a/1.xml", {"l1": "abcd", "l2": "hello world", "l3": ""})
    page(gt, "a/2.xml", {"x1": "Ab, c", "x2": "xyz"})
    page(gt, "b.xml", {"m1": "lost"})
    # l2 comes first and l1 second: lines are matched by id, not by position
    page(pred, "a/1.xml", {"l2": "hello  world ", "l1": "abed", "l3": "noise"})
    page(pred, "a/2.xml", {"x1": "ab c"})  # x2 has no prediction; b.xml has no predicted page
    out = tmp_path / "eval.json"
    # scored all the same, but a line and a page had no prediction: the partial status
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--json", str(out)]) == PARTIAL == 3
    captured = capsys.readouterr()
    assert f"{pred / 'a' / '2.xml'}: no reading of line x2" in captured.err
    assert f"{pred / 'b.xml'}: no predicted page" in captured.err
    assert captured.out.splitlines()[-1].startswith("eval: INCOMPLETE (exit status 3): 2 lines without a prediction")
    r = json.loads(out.read_text())
    assert not r["complete"]
    # by hand: abcd/abed 1; hello world 0 (spaces are normalised); "Ab, c"/"ab c" 2 (A->a, drop ','); xyz 3; lost 4
    assert (r["lines"], r["chars"]) == (5, 4 + 11 + 5 + 3 + 4)
    assert r["cer"] == pytest.approx((1 + 0 + 2 + 3 + 4) / 27)
    assert r["cer_nocase"] == pytest.approx((1 + 0 + 1 + 3 + 4) / 27)
    assert r["cer_nopunct"] == pytest.approx((1 + 0 + 1 + 3 + 4) / (4 + 11 + 4 + 3 + 4))
    # words: abcd 1/1, hello world 0/2, "Ab, c" 1/2, xyz 1/1, lost 1/1
    assert r["wer"] == pytest.approx(4 / 7)
    assert r["missing_lines"] == 2 and r["missing_pages"] == ["b.xml"] and r["empty_reference_lines"] == 1
    assert r["pages"]["a/1.xml"]["cer"] == pytest.approx(1 / 15)
    assert r["cer_ci95"][0] <= r["cer"] <= r["cer_ci95"][1]


def test_interval_narrows_with_more_lines_and_holds_the_rate():
    one = [PageEval("p", [LineEval("a", "abcdefghij", "abcdefghiX"), LineEval("b", "abcdefghij", "abcdefghij")])]
    many = [PageEval(f"p{i}", one[0].lines * 5) for i in range(20)]
    small, large = evaluate(one).overall["cer"], evaluate(many).overall["cer"]
    assert small.rate == large.rate == 0.05
    assert large.low <= 0.05 <= large.high
    assert large.high - large.low < small.high - small.low


def test_model_run_over_ground_truth_scores_every_line(tmp_path):
    import torch

    from loghi_ft.model.folder import ModelInfo, save_model
    from loghi_ft.model.vgsl import build_model
    torch.manual_seed(0)
    source = IFORAL / "foral_de_gouveia_1217"
    gt = tmp_path / "gt"
    gt.mkdir()
    for name in ("1.xml", "3.xml", "3.jpg"):  # 1.jpg left out: a page without its image
        shutil.copy(source / name, gt / name)
    charset = sorted({c for p in gt.glob("*.xml") for line in read_page(p).lines for c in line.text})
    net = build_model("None,None,32,1 Cr3,3,8 Mp2,2,2,2 Rc3 Bl16", len(charset) + 1)
    save_model(net, ModelInfo(spec=net.spec, height=net.height, channels=net.channels, charset=charset), tmp_path / "m")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(tmp_path / "m"), str(gt), "--json", str(out), "--workers", "0"]) == PARTIAL
    r = json.loads(out.read_text())
    texts = {p.name: [t.text for t in read_page(p).lines if normalize(t.text)] for p in gt.glob("*.xml")}
    assert r["lines"] == sum(map(len, texts.values()))
    assert r["missing_lines"] == len(texts["1.xml"]) and r["missing_pages"] == ["1.xml"]
    assert 0.0 < r["cer"] and r["pages"]["1.xml"]["cer"] == 1.0


def test_pred_folder_missing_is_one_clear_message(tmp_path, capsys):
    assert main(["eval", "--pred", str(tmp_path / "nowhere"), "--gt", str(IFORAL)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err and "not found" in err


def test_ground_truth_line_without_coords_is_listed_and_makes_the_run_partial(tmp_path, capsys):
    # a real page: its interlinear line "tels" has a Baseline but no Coords, so the reader drops it
    source = DATA / "htromance-fr" / "data" / "fr" / "bnf-ge-dd-2025-(-res)" / "GE DD-2025 (RES)_f21.xml"
    gt = tmp_path / "gt"
    gt.mkdir()
    shutil.copy(source, gt / source.name)
    out = tmp_path / "eval.json"
    assert main(["eval", "--pred", str(gt), "--gt", str(gt), "--json", str(out)]) == PARTIAL
    r = json.loads(out.read_text())
    assert r["unread_lines"] == 1 and r["cer"] == 0.0 and r["missing_lines"] == 0 and not r["complete"]
    assert r["lines"] == len([line for line in read_page(gt / source.name).lines if normalize(line.text)])
    captured = capsys.readouterr()
    assert f"{gt / source.name}: line eSc_line_badbc441: has no Coords; not scored" in captured.err
    assert "1 ground-truth lines unreadable, not scored" in captured.out.splitlines()[-1]

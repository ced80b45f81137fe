import re

import pytest
from conftest import DATA
from lxml import etree
from shapely.geometry import LineString, Polygon

from loghi_ft.evaluation.layout_metrics import (
    BaselineCounts,
    LayoutEvaluation,
    RegionEvaluation,
    baseline_counts,
    region_scores,
)
from loghi_ft.pages.layout import Layout, LayoutLine, Region

# 46 lines in 8 regions of four SegmOnto types (MainZone, MarginTextZone, NumberingZone, StampZone)
LULLY_PAGE = DATA / "htromance-fr" / "data" / "fr" / "las-concernant-lully-8" / \
    "[Acte_de_vente_au_Sieur_[...]_btv1b52506825h_5.xml"


def line(y, x0=0.0, x1=1000.0):
    return [(x0, y), (x1, y)]


def square(x, y, side, kind="MainZone", conf=None):
    return Region(f"r{x}_{y}", kind, [(x, y), (x + side, y), (x + side, y + side), (x, y + side)], conf)


def test_perfect_baselines_score_one():
    lines = [line(100), line(200), [(0, 300), (400, 310), (1000, 290)]]
    counts = baseline_counts(lines, lines)
    assert (counts.precision, counts.recall, counts.f1) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("shift, score", [(7, 1.0), (10, 1.0), (15, 0.75), (20, 0.5), (30, 0.0), (45, 0.0)])
def test_shifted_baseline_keeps_points_within_tolerance_then_falls_to_zero_at_three_times(shift, score):
    counts = baseline_counts([line(100)], [line(100 + shift)], tolerance=10)
    assert counts.precision == pytest.approx(score)
    assert counts.recall == pytest.approx(score)


def test_tolerance_is_settable():
    assert baseline_counts([line(100)], [line(120)], tolerance=20).f1 == pytest.approx(1.0)
    assert baseline_counts([line(100)], [line(120)], tolerance=5).f1 == 0.0


def test_missing_line_costs_recall_not_precision():
    counts = baseline_counts([line(100), line(200), line(300)], [line(100), line(200)])
    assert counts.precision == pytest.approx(1.0)
    assert counts.recall == pytest.approx(2 / 3)


def test_extra_line_costs_precision_not_recall():
    counts = baseline_counts([line(100), line(200)], [line(100), line(200), line(600)])
    assert counts.precision == pytest.approx(2 / 3)
    assert counts.recall == pytest.approx(1.0)


def test_split_line_matches_one_half_and_leaves_the_other_unmatched():
    counts = baseline_counts([line(100)], [line(100, 0, 500), line(100, 500, 1000)], tolerance=10)
    # the true line's 201 points (every 5 px): x <= 510 within 10 px of the half, then 0.75, 0.5, 0.25 at 515-525
    pair = (1.0 + (103 + 0.75 + 0.5 + 0.25) / 201) / 2
    assert counts.matched == pytest.approx(pair)
    assert counts.precision == pytest.approx(pair / 2)
    assert counts.recall == pytest.approx(pair)


def test_pages_sum_lines_not_page_figures():
    perfect = baseline_counts([line(100 * k) for k in range(10)], [line(100 * k) for k in range(10)])
    missed = baseline_counts([line(100)], [])
    total = perfect + missed
    assert (total.predicted, total.truth) == (10, 11)
    assert total.precision == pytest.approx(1.0)
    assert total.recall == pytest.approx(10 / 11)


def test_empty_pages():
    assert BaselineCounts().f1 == 1.0
    assert baseline_counts([], [line(100)]).precision == 0.0
    assert baseline_counts([line(100)], []).recall == 0.0


def test_region_iou_of_half_overlapping_squares_is_one_third():
    scores = region_scores([square(0, 0, 300)], [square(150, 0, 300)], 1000, 1000)
    assert scores["classes"]["MainZone"]["iou"] == pytest.approx(1 / 3)
    assert scores["ap50"] == 0.0    # IoU 1/3 is below every COCO threshold


def test_region_ap_perfect_is_one_wrong_class_is_zero():
    perfect = region_scores([square(0, 0, 300), square(400, 400, 200, "StampZone")],
                            [square(0, 0, 300), square(400, 400, 200, "StampZone")], 1000, 1000)
    assert (perfect["ap"], perfect["ap50"], perfect["iou"]) == pytest.approx((1.0, 1.0, 1.0))
    wrong = region_scores([square(0, 0, 300)], [square(0, 0, 300, "MarginTextZone")], 1000, 1000)
    assert wrong["classes"]["MainZone"]["ap"] == 0.0
    assert wrong["classes"]["MarginTextZone"]["ap"] == 0.0
    assert (wrong["ap"], wrong["iou"]) == (0.0, 0.0)


def test_class_only_predicted_counts_in_the_mean():
    scores = region_scores([square(0, 0, 300)], [square(0, 0, 300), square(500, 500, 100, "StampZone")],
                           1000, 1000)
    assert scores["classes"]["MainZone"]["ap"] == pytest.approx(1.0)
    assert scores["classes"]["StampZone"]["ap"] == 0.0
    assert scores["ap"] == pytest.approx(0.5)


def test_region_confidence_ranks_detections():
    truth = [square(0, 0, 300)]
    confident_hit = region_scores(truth, [square(0, 0, 300, conf=0.9), square(500, 500, 300, conf=0.2)],
                                  1000, 1000)
    confident_miss = region_scores(truth, [square(0, 0, 300, conf=0.2), square(500, 500, 300, conf=0.9)],
                                   1000, 1000)
    assert confident_hit["ap"] == pytest.approx(1.0)
    assert confident_miss["ap"] == pytest.approx(0.5)


def test_region_ap_is_computed_once_over_all_pages():
    evaluation = RegionEvaluation()
    evaluation.add([square(0, 0, 300)], [square(0, 0, 300)], 1000, 1000)
    evaluation.add([square(0, 0, 300)], [], 1000, 1000)
    result = evaluation.result()
    # precision 1 up to recall 1/2, then nothing: 51 of COCO's 101 recall points (averaging pages would give 0.5)
    assert result["ap"] == pytest.approx(51 / 101)
    assert result["classes"]["MainZone"]["iou"] == pytest.approx(0.5)
    assert (result["classes"]["MainZone"]["truth"], result["classes"]["MainZone"]["predicted"]) == (2, 1)


def read_truth(xml) -> Layout:
    """Regions (SegmOnto type from custom) and baselines of a PAGE 2019 file, read directly."""
    tree = etree.parse(str(xml))
    ns = {"p": tree.getroot().nsmap[None]}
    page = tree.find("p:Page", ns)

    def points(element):
        return [tuple(map(float, pair.split(","))) for pair in element.get("points").split()]

    def kind(element):
        found = re.search(r"structure \{type:([^;}]+)", element.get("custom", ""))
        return found.group(1) if found else "text"

    regions = [Region(r.get("id"), kind(r), points(r.find("p:Coords", ns)))
               for r in page.iterfind("p:TextRegion", ns)]
    lines = [LayoutLine(ln.get("id"), points(ln.find("p:Baseline", ns)), points(ln.find("p:Coords", ns)))
             for ln in page.iterfind(".//p:TextLine", ns)]
    return Layout(xml.with_name(page.get("imageFilename")), int(page.get("imageWidth")),
                  int(page.get("imageHeight")), regions, lines, xml)


def shifted(layout: Layout, dy: float) -> Layout:
    lines = [LayoutLine(ln.id, [(x, y + dy) for x, y in ln.baseline], ln.polygon) for ln in layout.lines]
    return Layout(layout.image_path, layout.width, layout.height, layout.regions, lines)


def test_real_page_against_itself_and_shifted_baselines(data_dir):
    truth = read_truth(LULLY_PAGE)
    assert (len(truth.lines), len(truth.regions)) == (46, 8)

    itself = LayoutEvaluation()
    itself.add(truth, truth)
    summary = itself.summary()
    assert summary["baseline_f1"] == pytest.approx(1.0)
    assert (summary["region_miou"], summary["region_ap"], summary["region_ap50"]) == pytest.approx((1, 1, 1))
    assert {k for k in summary if k.startswith("region_ap:")} == {
        "region_ap:MainZone", "region_ap:MarginTextZone", "region_ap:NumberingZone", "region_ap:StampZone"}

    within = LayoutEvaluation().add(truth, shifted(truth, 5))
    beyond = LayoutEvaluation().add(truth, shifted(truth, 20))
    assert within.f1 == pytest.approx(1.0)
    # 20 px is twice the tolerance: about half of every point's score (a little more where lines slope)
    assert 0.45 < beyond.f1 < 0.6
    assert (beyond.predicted, beyond.truth) == (46, 46)


def test_transcribed_area_holds_the_truths_lines_and_leaves_out_text_it_did_not_transcribe(data_dir):
    from loghi_ft.evaluation.layout_eval import in_area, transcribed_area
    from loghi_ft.pages.layout import read_layout

    # a TIME US register page whose first 11 lines (above y 1000) the annotators left untranscribed
    truth = read_layout(DATA / "timeus-1858" / "PH 1858-35.xml")
    area = transcribed_area(truth)
    assert all(in_area(ln, area) for ln in truth.lines)
    first = truth.lines[0]
    above = LayoutLine("above", [(x, y - 800) for x, y in first.baseline], [])
    assert not in_area(above, area)
    # half a line height of slack: a baseline found a little below the truth's is still in
    assert in_area(LayoutLine("low", [(x, y + 30) for x, y in first.baseline], []), area)
    # a line reaching out of the area counts by the share of its baseline inside
    x0, x1 = min(x for x, _ in first.baseline), max(x for x, _ in first.baseline)
    y = first.baseline[0][1]
    assert in_area(LayoutLine("mostly", [(x0, y), (x1 + (x1 - x0) * 0.9, y)], []), area)
    assert not in_area(LayoutLine("barely", [(x0, y), (x1 + (x1 - x0) * 1.5, y)], []), area)


def test_region_figures_say_when_the_truth_has_no_region():
    evaluation = LayoutEvaluation()
    page = Layout("p.jpg", 1000, 1000, [], [LayoutLine("l1", line(100), [])])
    evaluation.add(page, Layout("p.jpg", 1000, 1000, [], [LayoutLine("l1", line(100), [])]))
    summary = evaluation.summary()
    assert summary["region_truth"] == 0
    assert summary["region_miou"] is None and summary["region_ap"] is None and summary["region_ap50"] is None
    evaluation.add(Layout("q.jpg", 1000, 1000, [square(0, 0, 100)], []), Layout("q.jpg", 1000, 1000, [], []))
    summary = evaluation.summary()
    assert summary["region_truth"] == 1 and summary["region_miou"] == 0.0


def test_transcribed_area_is_the_lines_not_the_regions_drawn_around_untranscribed_ones(data_dir):
    from conftest import ROOT

    from loghi_ft.evaluation.layout_eval import in_area, transcribed_area
    from loghi_ft.pages.layout import read_layout

    # samples/test's Guarda charter: the left column's region holds some 35 lines above the first transcribed one
    truth = read_layout(ROOT / "samples" / "test" / "foral_de_guarda_1217" / "1.xml")
    left = [ln for ln in truth.lines if max(x for x, _ in ln.baseline) < truth.width / 2]
    top = min(left, key=lambda ln: ln.baseline[0][1])
    (x0, y0), (x1, y1) = top.baseline[0], top.baseline[-1]
    middle = [(x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4 - 500) for k in (1, 3)]
    untranscribed = LayoutLine("up", middle, [])
    assert any(Polygon(r.polygon).contains(LineString(untranscribed.baseline)) for r in truth.regions)
    assert not in_area(untranscribed, transcribed_area(truth))

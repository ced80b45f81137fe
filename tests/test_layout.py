"""The layout model's own parts: targets and extraction, the model folder, class growth, segmenting pages."""

import contextlib
import csv
import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from lxml import etree

from loghi_ft.cli import main
from loghi_ft.errors import PARTIAL, UserError
from loghi_ft.evaluation.layout_metrics import baseline_counts
from loghi_ft.layout.data import Distortion, PageSet, collate, distort, load_pages
from loghi_ft.layout.extract import (GUTTER_LINES, extract, ink_mask, ink_spacing, line_spacing, lines_area,
                                     split_at_gutters, split_at_leaders)
from loghi_ft.layout.net import LayoutInfo, LayoutNet, load_layout_model, probabilities, save_layout_model
from loghi_ft.layout.targets import rasterise, transformed
from loghi_ft.layout.segment import rescaled_size
from loghi_ft.layout.train import LayoutTask, grown, spacing_of
from loghi_ft.pages.layout import LayoutLine, read_layout
from loghi_ft.train.reporting import write_metrics

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SCHEMA = DATA / "kraken-fixtures" / "schemas" / "pagecontent-2019-07-15.xsd"
HTROMANCE = DATA / "htromance-fr" / "data" / "fr"
PAGES = [HTROMANCE / "bnf-français-19670" / "Français 19670_f33.xml",
         HTROMANCE / "bnf-2011-091-acm05-20" / "2011_091_ACM05-20_f1.xml",
         DATA / "timeus-1858" / "PH 1858-10.xml"]


def tiny_info(regions=("MainZone", "NumberingZone"), lines=("DefaultLine", "HeadingLine")) -> LayoutInfo:
    return LayoutInfo(list(regions), list(lines), size=256, backbone="mobilenet_v3_small", width=16)


@pytest.mark.parametrize("xml", PAGES, ids=lambda p: p.stem)
def test_extraction_from_the_ground_truths_own_maps_finds_its_lines(xml):
    # what the network is taught to draw must give the page's lines back: targets and extraction agree
    truth = read_layout(xml)
    info = LayoutInfo(sorted({r.type for r in truth.regions}), [], size=1024)
    scale = info.size / max(truth.width, truth.height)
    shape = (round(truth.height * scale), round(truth.width * scale))
    maps, _ = rasterise(transformed(truth, np.array([[scale, 0, 0], [0, scale, 0]])), shape, info.region_types, [])
    found = extract(maps.astype(np.float32), info, scale)
    scores = baseline_counts([x.baseline for x in truth.lines], [x.baseline for x in found.lines])
    assert scores.f1 >= 0.97, (scores.precision, scores.recall)
    assert found.bands == 0
    for line in found.lines:  # every polygon holds its own baseline
        polygon = np.asarray(line.polygon, dtype=np.float32)
        middle = np.asarray(line.baseline)[len(line.baseline) // 2]
        assert cv2.pointPolygonTest(polygon, (float(middle[0]), float(middle[1])), True) >= -2
    if truth.regions:
        assert {r.type for r in found.regions} == {r.type for r in truth.regions}


def test_a_fine_tune_keeps_the_base_classes_and_adds_the_new_ones():
    torch.manual_seed(0)
    base = LayoutNet(tiny_info()).eval()
    wider = grown(base, tiny_info(("MainZone", "NumberingZone", "StampZone"),
                                  ("DefaultLine", "HeadingLine", "InterlinearLine"))).eval()
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        old, new = base(x), wider(x)
    assert new.shape[1] == old.shape[1] + 2
    # baselines, bodies, both old regions; the old line types at their new places
    assert torch.allclose(new[:, :4], old[:, :4], atol=1e-6)
    assert torch.allclose(new[:, 5:7], old[:, 4:6], atol=1e-6)


def test_the_model_folder_reloads_the_same_model_and_says_what_it_is(tmp_path):
    torch.manual_seed(0)
    model = LayoutNet(dataclasses.replace(tiny_info(), spacing=[10.5, 12.0, 20.25])).eval()
    save_layout_model(model, tmp_path / "m")
    record = json.loads((tmp_path / "m" / "model.json").read_text())
    assert (record["kind"], record["region_types"], record["size"]) == ("layout", ["MainZone", "NumberingZone"], 256)
    again = load_layout_model(tmp_path / "m")
    assert again.info.spacing == [10.5, 12.0, 20.25]
    del record["spacing"]       # a model saved before the spacing was kept: not rescaled
    (tmp_path / "m" / "model.json").write_text(json.dumps(record))
    assert load_layout_model(tmp_path / "m").info.spacing == []
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    probs = probabilities(again(x).detach(), again.info)
    assert probs.shape == (1, 6, 64, 80) and np.allclose(probs[0, 4:].sum(axis=0), 1, atol=1e-5)
    recogniser = Path(__file__).resolve().parents[1] / "models" / "timeus-1858-small"
    with pytest.raises(UserError, match="not a layout model"):
        load_layout_model(recogniser)


def test_training_pages_that_cannot_serve_are_named_and_skipped(tmp_path):
    source = PAGES[1]
    shutil.copy(source, tmp_path / "good.xml")
    shutil.copy(source.with_suffix(".jpg"), tmp_path / source.with_suffix(".jpg").name)
    tree = etree.parse(str(source))
    for line in tree.iter("{*}TextLine"):
        line.getparent().remove(line)
    tree.write(str(tmp_path / "no-lines.xml"))
    tree = etree.parse(str(source))
    tree.find(".//{*}Page").set("imageFilename", "missing.jpg")
    tree.write(str(tmp_path / "no-image.xml"))
    said = []
    pages = load_pages(sorted(tmp_path.glob("*.xml")), 512, said.append)
    assert [p.truth.xml_path.name for p in pages] == ["good.xml"]
    assert any("no-lines.xml" in m and "baseline" in m for m in said)
    assert any("no-image.xml" in m and "missing.jpg" in m for m in said)
    assert max(pages[0].pixels.shape[:2]) == 512


@pytest.mark.parametrize("xml, regions", [(PAGES[2], False), (PAGES[1], True)], ids=["timeus", "htromance"])
def test_validation_leaves_the_region_figures_out_on_pages_without_region_truth(xml, regions, tmp_path):
    torch.manual_seed(0)
    info = tiny_info()
    pages = load_pages([xml], info.size, print)
    loader = torch.utils.data.DataLoader(PageSet(pages, info.region_types, info.line_types, None, 0),
                                         batch_size=1, collate_fn=collate)
    task = LayoutTask(LayoutNet(info).eval(), pages, 10.0)
    result = task.validate(loader, torch.device("cpu"), contextlib.nullcontext(), None)
    if regions:
        assert 0 <= result["region_miou"] < 1 and result["score"] < result["baseline_f1"] + 1e-9
        assert "region mIoU" in task.summary(result)
    else:   # timeus-1858 has one region without coordinates: nothing to score, and 1.0 would say all is right
        assert result["region_miou"] is None and result["region_ap"] is None
        assert result["score"] == result["baseline_f1"]
        assert "no regions in the validation pages' ground truth" in task.summary(result)
    rows = [{"epoch": 1, "step": 5, "train_loss": 1.0, "val_loss": result["loss"],
             **{f"val_{k}": result[k] for k in ("score", "baseline_f1", "region_miou")}}]
    write_metrics(tmp_path, rows, "score", ("score", "baseline_f1", "region_miou"))
    [row] = list(csv.DictReader(open(tmp_path / "metrics.csv", encoding="utf-8")))
    assert (row["val_region_miou"] == "") == (not regions)
    assert (tmp_path / "score.png").stat().st_size > 1000


def ruled(spacing: float, count: int = 8, x0: float = 100, x1: float = 900) -> list[LayoutLine]:
    """Level baselines `spacing` pixels apart."""
    return [LayoutLine(f"l{k}", [(x0, 50 + k * spacing), (x1, 50 + k * spacing)], []) for k in range(count)]


def test_line_spacing_is_the_distance_to_the_baseline_above_where_there_is_one():
    lines = [np.asarray(x.baseline) for x in ruled(20.0)]
    assert line_spacing(lines, (1000, 1000)) == pytest.approx(20.0)
    # a second column further down, 30 apart: its own neighbours count, the first column's do not reach across
    lines += [np.asarray(x.baseline) + [1000, 0] for x in ruled(30.0, count=12)]
    assert line_spacing(lines, (1000, 2000)) == pytest.approx(30.0)
    assert line_spacing(lines[:1], (1000, 1000)) is None


def written(spacing: float, shape=(1500, 1000), seed=0) -> np.ndarray:
    """A white page (RGB) with rows of dark strokes of uneven length and gaps every `spacing` pixels, from 50 down,
    between x 100 and 900, as handwriting has them."""
    rng = np.random.default_rng(seed)
    page = np.full((*shape, 3), 235, np.uint8)
    y = 50.0
    while y < shape[0] - 50:
        x = 100
        while x < 900:
            word = int(rng.integers(15, 60))
            cv2.rectangle(page, (x, round(y - 0.4 * spacing)), (min(x + word, 900), round(y)), (40, 40, 40), -1)
            x += word + int(rng.integers(4, 12))
        y += spacing
    return page


@pytest.mark.parametrize("spacing", [9.0, 14.3, 25.0, 41.5])
def test_the_ink_gives_the_spacing_of_the_lines_written_in_an_area(spacing):
    page = cv2.cvtColor(written(spacing), cv2.COLOR_RGB2GRAY)
    area = np.zeros(page.shape, np.float64)
    area[40:1400, 80:920] = 1
    assert ink_spacing(page, area) == pytest.approx(spacing, abs=0.5)
    assert ink_spacing(np.full_like(page, 235), area) is None      # no ink, no period
    assert ink_spacing(page, np.zeros_like(area)) is None          # nowhere to measure


def test_the_inks_spacing_is_measured_where_the_lines_are_not_in_a_picture_beside_them():
    page = written(30.0)
    page[:, 450:] = 235
    for y in range(0, 1500, 6):  # a hatched picture on the right half: a period of 6 rows
        cv2.line(page, (480, y), (1000, y), (40, 40, 40), 2)
    gray = cv2.cvtColor(page, cv2.COLOR_RGB2GRAY)
    everywhere = np.ones(gray.shape, np.float64)
    lines = lines_area([np.array([[100, 50 + 30.0 * k - 12], [440, 50 + 30.0 * k - 12], [440, 50 + 30.0 * k + 2],
                                  [100, 50 + 30.0 * k + 2]]) for k in range(40)], gray.shape)
    assert lines[:, 460:].sum() == 0 and lines[100, 300] == 1
    assert ink_spacing(gray, lines) == pytest.approx(30.0, abs=0.5)
    assert ink_spacing(gray, everywhere) != pytest.approx(30.0, abs=2)


def bridging(rows: list[float], x0: int = 100, x1: int = 900) -> tuple[list, np.ndarray]:
    """Traces as kept_baselines gives them, one level baseline per row from x0 to x1, and their probability map."""
    baseline = np.zeros((1500, 1000), np.float32)
    traces = []
    for y in rows:
        pixels = np.stack([np.full(x1 - x0, round(y)), np.arange(x0, x1)], axis=1)
        baseline[pixels[:, 0], pixels[:, 1]] = 0.9
        traces.append((np.array([[x0, y], [x1 - 1, y]], np.float64), pixels, 0.9))
    return traces, baseline


def ink_of(page: np.ndarray) -> np.ndarray:
    """The ink mask (extract.ink_mask) of an RGB page."""
    return ink_mask(cv2.cvtColor(page, cv2.COLOR_RGB2GRAY))


def test_lines_that_bridge_the_gutter_between_two_columns_are_cut_there():
    page = written(30.0)
    page[:, 470:530] = 235  # two columns, 60 pixels apart
    ink = ink_of(page)
    rows = [50 + 30.0 * k for k in range(40)]
    traces, baseline = bridging(rows)
    split, cut = split_at_gutters(traces, baseline, ink)
    assert cut == 40 and len(split) == 80
    for trace, pixels, conf in split:
        assert trace[:, 0].max() < 475 or trace[:, 0].min() > 525        # each piece ends at the gutter
        assert conf == pytest.approx(0.9) and len(pixels) > 300
    # one column: the gaps between words line up only by chance, over fewer lines than a gutter needs
    assert split_at_gutters(traces, baseline, ink_of(written(30.0)))[1] == 0
    # a gutter crossed by fewer lines than GUTTER_LINES in a row (the rest have ink across it) is a chance gap
    crossed = page.copy()
    for k in range(40):
        if k % GUTTER_LINES == 0:
            cv2.rectangle(crossed, (460, round(rows[k] - 10)), (540, round(rows[k])), (40, 40, 40), -1)
    assert split_at_gutters(traces, baseline, ink_of(crossed))[1] == 0
    # lines that stop at the gutter are not touched
    apart = bridging(rows, 100, 470)[0] + bridging(rows, 530, 900)[0]
    assert split_at_gutters(apart, baseline, ink) == (apart, 0)


def test_lines_of_a_table_are_cut_at_the_dot_leaders_between_label_and_value():
    # rows 30 pixels apart: a label (x 100-300), a leader of dots 2 pixels high (310-700), a value (710-800), then
    # blank to 900; the network drew one baseline across each row, from 100 to 900
    page = written(30.0)
    rows = [50 + 30.0 * k for k in range(40)]
    table = range(10, 20)
    for k in table:
        y = round(rows[k])
        cv2.rectangle(page, (100, y - 25), (900, y + 3), (235, 235, 235), -1)
        for x0, x1 in ((100, 160), (170, 300), (710, 800)):
            cv2.rectangle(page, (x0, y - 12), (x1, y), (40, 40, 40), -1)
        for x in range(310, 700, 8):
            cv2.rectangle(page, (x, y - 1), (x + 1, y), (40, 40, 40), -1)
    if_dashes = page.copy()
    for k in table:   # a leader drawn as a rule instead: one component, long but 2 pixels high
        cv2.rectangle(if_dashes, (310, round(rows[k]) - 1), (700, round(rows[k])), (40, 40, 40), -1)
    traces, baseline = bridging(rows)
    for drawn in (page, if_dashes):
        split, cut = split_at_leaders(traces, baseline, ink_of(drawn))
        assert cut == len(table) and len(split) == len(rows) + len(table)
        pieces = sorted((t[:, 0].min(), t[:, 0].max()) for t, _, _ in split[10:30])
        assert all(a < 110 and 290 < b < 315 for a, b in pieces[:10])       # the label, up to the leader
        assert all(700 < a < 720 and 795 < b < 810 for a, b in pieces[10:])  # the value, without the blank after it
    # ordinary lines of writing, their word gaps far narrower than two spacings, are not touched
    plain = ink_of(written(30.0))
    assert split_at_leaders(traces, baseline, plain) == (traces, 0)
    # marks as tall as letters (strokes 9 pixels high) are writing, not a leader: the rows are only trimmed of
    # the blank after their value
    tall = page.copy()
    for k in table:
        for x in range(310, 700, 8):
            cv2.rectangle(tall, (x, round(rows[k]) - 8), (x + 1, round(rows[k])), (40, 40, 40), -1)
    split, cut = split_at_leaders(traces, baseline, ink_of(tall))
    assert cut == len(table) and len(split) == len(rows)
    assert all(t[:, 0].min() < 110 and 795 < t[:, 0].max() < 810 for t, _, _ in split[10:20])


def test_pages_spaced_closer_than_the_training_pages_are_enlarged_to_their_median_within_limits():
    info = LayoutInfo(["MainZone"], [], size=1024, spacing=[20.0, 25.0, 45.0])

    def lines(spacing, count=40):  # found in page pixels, at 0.5 model pixels per page pixel
        return [LayoutLine(f"l{k}", [(200, 2 * (50 + k * spacing)), (1800, 2 * (50 + k * spacing))],
                           [(200, 2 * (50 + k * spacing) - 20), (1800, 2 * (50 + k * spacing) - 20),
                            (1800, 2 * (50 + k * spacing) + 4), (200, 2 * (50 + k * spacing) + 4)])
                for k in range(count)]

    def page(spacing):  # written at the model's scale, as segment gives it
        return cv2.cvtColor(written(spacing), cv2.COLOR_RGB2GRAY)
    # 20 model pixels apart: inside the training pages' range; 90: wider, a sparse page, never made smaller
    assert rescaled_size(info, lines(20.0), page(20.0), 0.5) is None
    assert rescaled_size(info, lines(90.0, 15), page(90.0), 0.5) is None
    # 16: closer than all but 5% of the training pages: to their median 25, at 1024 x 25 / 16 = 1600 px
    assert rescaled_size(info, lines(16.0), page(16.0), 0.5) == pytest.approx(1600, abs=40)
    assert rescaled_size(info, lines(10.0), page(10.0), 0.5) == 2048      # 2560 would be needed: at most twice
    # lines found as fragments, 32 apart, on a page written 16 apart: the ink decides
    assert rescaled_size(info, lines(32.0), page(16.0), 0.5) == pytest.approx(1600, abs=40)
    # a blank page: the found lines' own spacing
    assert rescaled_size(info, lines(16.0), np.full((1500, 1000), 235, np.uint8), 0.5) == 1600
    assert rescaled_size(info, lines(16.0, count=1), page(16.0), 0.5) is None   # no lines above one another
    assert rescaled_size(LayoutInfo(["MainZone"], [], size=1024), lines(16.0), page(16.0), 0.5) is None


@pytest.mark.parametrize("xml", [DATA / "iforal-sample" / "foral_de_folgosinho_1217" / "2.xml", PAGES[0], PAGES[2]],
                         ids=["iforal", "htromance", "timeus"])
def test_the_ink_of_real_pages_is_spaced_as_their_true_baselines(xml):
    truth = read_layout(xml)
    page = load_pages([xml], 1024, print)[0]
    scale = 1024 / max(truth.width, truth.height)
    gray = cv2.cvtColor(page.pixels, cv2.COLOR_RGB2GRAY)
    area = lines_area([np.asarray(x.polygon) * scale for x in truth.lines], gray.shape)
    true = line_spacing([np.asarray(x.baseline) * scale for x in truth.lines], gray.shape)
    assert ink_spacing(gray, area) == pytest.approx(true, abs=1.0)


def test_a_trained_model_keeps_its_training_pages_spacing():
    pages = load_pages(PAGES, 1024, print)
    low, typical, high = spacing_of(pages)
    each = sorted(line_spacing([np.asarray(x.baseline) for x in p.layout.lines], p.pixels.shape[:2]) for p in pages)
    assert low < typical < high and typical == pytest.approx(each[1], abs=0.01)
    assert each[0] <= low and high <= each[2]
    assert spacing_of([]) == []


def slopes(layout) -> np.ndarray:
    """Each baseline's direction in degrees, from its first point to its last."""
    ends = np.array([[x.baseline[0], x.baseline[-1]] for x in layout.lines], dtype=np.float64)
    d = ends[:, 1] - ends[:, 0]
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def test_the_training_distortion_zooms_and_turns_pixels_and_lines_together_within_the_settings():
    page = load_pages([PAGES[1]], 512, print)[0]
    h, w = page.pixels.shape[:2]
    before = np.concatenate([np.asarray(x.baseline, dtype=np.float64) for x in page.layout.lines])
    pixels, layout = distort(page.pixels, page.layout, np.random.default_rng(0), Distortion(0.6, 0.6, 0))
    after = np.concatenate([np.asarray(x.baseline, dtype=np.float64) for x in layout.lines])
    assert pixels.shape[:2] == (round(h * 0.6), round(w * 0.6))
    assert np.abs(after - before * 0.6).max() < 1.0     # zoomed about the page's centre, then re-centred
    turns = []
    for seed in range(40):
        how = Distortion(1.0, 1.0, 5.0)
        _, layout = distort(page.pixels, page.layout, np.random.default_rng(seed), how)
        change = slopes(layout) - slopes(page.layout)
        assert np.ptp(change) < 0.01    # every line turns by the same angle
        turns.append(change.mean())
    assert max(map(abs, turns)) <= 5.0 and max(turns) > 3.5 and min(turns) < -3.5
    _, layout = distort(page.pixels, page.layout, np.random.default_rng(1), Distortion(0.8, 1.2, 0))
    assert np.abs(slopes(layout) - slopes(page.layout)).max() < 0.01


@pytest.mark.parametrize("option", [["--aug-zoom-out", "1.3", "--aug-zoom-in", "1.1"], ["--aug-zoom-out", "0"],
                                    ["--aug-turn", "-1"]])
def test_segtrain_refuses_a_distortion_it_cannot_make(tmp_path, option, capsys):
    status = main(["segtrain", "--train", str(PAGES[1]), "--val", str(PAGES[1]), "--output", str(tmp_path),
                   "--model-name", "x", *option])
    assert status != 0
    assert option[0] in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_segment_writes_valid_pages_and_names_what_it_cannot_read(tmp_path, capsys):
    # an untrained model: what is checked here is the way from images to valid PAGE, not what it finds
    torch.manual_seed(0)
    save_layout_model(LayoutNet(tiny_info()), tmp_path / "model")
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(PAGES[1].with_suffix(".jpg"), scans / "page 1.jpg")
    cv2.imwrite(str(scans / "blank.png"), np.full((900, 600, 3), 255, np.uint8))
    (scans / "broken.jpg").write_bytes((PAGES[1].with_suffix(".jpg")).read_bytes()[:5000])
    tree = etree.parse(str(PAGES[1]))
    for line in tree.iter("{*}TextLine"):
        line.getparent().remove(line)
    tree.find(".//{*}Page").set("imageFilename", "gone.jpg")
    tree.write(str(scans / "lost.xml"))
    status = main(["segment", "--model", str(tmp_path / "model"), str(scans), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == PARTIAL
    assert "broken.jpg" in err and "gone.jpg" in err
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    written = sorted(p.name for p in (tmp_path / "out").glob("*.xml"))
    assert written == ["blank.xml", "page 1.xml"]
    for name in written:
        doc = etree.parse(str(tmp_path / "out" / name))
        assert schema.validate(doc), schema.error_log
        page = doc.find(".//{*}Page")
        assert (tmp_path / "out" / page.get("imageFilename")).resolve().parent == scans.resolve()
    image = cv2.imread(str(scans / "page 1.jpg"))
    assert (read_layout(tmp_path / "out" / "page 1.xml").width,
            read_layout(tmp_path / "out" / "page 1.xml").height) == (image.shape[1], image.shape[0])

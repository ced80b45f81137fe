"""benchmarks/bench_layout.py without kraken: its page sets, how it scores the PAGE files a tool wrote, and the
end-to-end CER through `loghi-ft infer`, on real pages."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from loghi_ft.cli import main
from loghi_ft.layout.extract import DOWN, MIN_BASELINE, MIN_CONF, UP
from loghi_ft.pages.layout import write_layout

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_layout  # noqa: E402

RECOGNIZER = ROOT / "models" / "timeus-1858-small"
LAYOUT = ROOT / "models" / "layout-base"


def test_page_sets_are_the_test_splits_and_iforal(data_dir):
    sizes = {name: len(bench_layout.page_set(name)) for name in bench_layout.SETS}
    assert sizes == {"htromance-test": 23, "iforal": 11, "timeus-test": 14, "samples-test": 2}
    assert all(path.exists() for name in bench_layout.SETS for path in bench_layout.page_set(name))


def write_copy(page: bench_layout.BenchPage, folder) -> None:
    """The page's true lines written as a tool would write them (no text), to FOLDER/<key>.xml."""
    lines = [dataclasses.replace(line, text="") for line in page.truth.lines]
    write_layout(dataclasses.replace(page.truth, lines=lines), folder / f"{page.key}.xml",
                 image_filename=str(page.image), metadata={"test": "copy of the truth"})


def test_pages_without_a_readable_file_score_as_nothing_found(tmp_path, data_dir):
    pages = bench_layout.stage(bench_layout.page_set("iforal")[:3], tmp_path / "images")
    # the tools see bare images under new names: iforal's pages share names across charters
    assert [p.image.name for p in pages] == ["p000.jpg", "p001.jpg", "p002.jpg"]
    assert not list((tmp_path / "images").glob("*.xml"))
    out = tmp_path / "out"
    out.mkdir()
    write_copy(pages[0], out)
    (out / "p002.xml").write_text("<PcGts", encoding="utf-8")
    found, failed = bench_layout.read_outputs(pages, out)
    assert [len(layout.lines) for layout in found] == [len(pages[0].truth.lines), 0, 0]
    assert len(failed) == 2 and "p001.xml: not written" in failed[0] and str(pages[2].truth.xml_path) in failed[1]
    counts = bench_layout.score(pages, found, tolerance=10.0)
    true_lines = [len(p.truth.lines) for p in pages]
    assert counts.truth == sum(true_lines) and counts.predicted == true_lines[0]
    assert counts.precision == pytest.approx(1.0)
    assert counts.recall == pytest.approx(true_lines[0] / sum(true_lines))


def found_copy_and_more(tmp_path):
    """PH 1858-35 (the annotators left the page's first 11 lines, above the truth's first, untranscribed): the
    staged page, its true lines as a tool would write them, and those lines and three more, the first three moved
    up onto the untranscribed lines."""
    paths = [p for p in bench_layout.page_set("timeus-test") if p.name == "PH 1858-35.xml"]
    pages = bench_layout.stage(paths, tmp_path / "images")
    copy = tmp_path / "copy"
    copy.mkdir()
    write_copy(pages[0], copy)
    found, failed = bench_layout.read_outputs(pages, copy)
    assert not failed
    moved = [dataclasses.replace(ln, id=f"up{k}", baseline=[(x, y - 800) for x, y in ln.baseline],
                                 polygon=[(x, y - 800) for x, y in ln.polygon])
             for k, ln in enumerate(found[0].lines[:3])]
    return pages, found, dataclasses.replace(found[0], lines=found[0].lines + moved)


def test_lines_found_outside_the_transcribed_area_count_against_precision_only_in_the_strict_score(tmp_path, data_dir):
    pages, found, more = found_copy_and_more(tmp_path)
    strict, inside = (bench_layout.score(pages, [more], 10.0, inside=flag) for flag in (False, True))
    true_lines = len(pages[0].truth.lines)
    assert (strict.truth, strict.predicted, inside.predicted) == (true_lines, true_lines + 3, true_lines)
    assert strict.recall == inside.recall == pytest.approx(1.0)
    assert strict.precision == pytest.approx(true_lines / (true_lines + 3)) and inside.precision == pytest.approx(1.0)


@pytest.mark.slow  # the recogniser reads one page four times: about 40 s on 2 busy cores
def test_end_to_end_cer_of_the_true_lines_found_again_equals_that_of_the_truth(tmp_path, data_dir):
    pages, found, more = found_copy_and_more(tmp_path)
    cers = bench_layout.end_to_end(pages, RECOGNIZER, {"copy": found, "nothing": [dataclasses.replace(
        found[0], lines=[], regions=[])], "more": [more]})
    # the same lines read by the same model (padded in other batches: bf16 on this CPU moves a few characters);
    # the shipped model reads timeus test pages at about 9%
    assert cers["copy lines"] == pytest.approx(cers["ground-truth lines"], abs=0.005)
    assert 0 < cers["ground-truth lines"] < 0.15
    assert cers["nothing lines"] == 1.0
    # the untranscribed text read is charged as insertions, except in the transcribed area's figure
    assert cers["more lines"] > cers["copy lines"] + 0.03
    assert cers["more lines in the transcribed area (3 outside)"] == pytest.approx(cers["copy lines"], abs=0.005)
    assert cers["copy lines in the transcribed area (0 outside)"] == cers["copy lines"]


def run_script(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow  # three tools each segment one page, two of them read it: about 60 s on 2 busy cores
def test_the_tuning_scripts_at_the_shipped_settings_give_what_segeval_gives(tmp_path, data_dir):
    # layout_thresholds and layout_polygons chose extract's thresholds and polygon reach on validation pages; at
    # the settings they chose, each must measure what `loghi-ft segeval` measures on the same page
    page = data_dir / "timeus-1858" / "PH 1858-1.xml"     # a val page
    listed = tmp_path / "val.txt"
    listed.write_text(f"{page}\n", encoding="utf-8")
    report = tmp_path / "segeval.json"
    assert main(["segeval", "--model", str(LAYOUT), "--recognizer", str(RECOGNIZER), "--json", str(report),
                 str(page)]) == 0
    measured = json.loads(report.read_text(encoding="utf-8"))
    assert measured["figures"]["region_miou"] is None    # timeus-1858 draws no region
    thresholds = run_script("layout_thresholds.py", "--model", str(LAYOUT), "--pages", str(listed), "--shortest",
                            str(MIN_BASELINE), "--conf", str(MIN_CONF))
    f1 = re.search(r"F1 (\d\.\d+) \(P (\d\.\d+), R (\d\.\d+)\)", thresholds)
    assert float(f1[1]) == pytest.approx(measured["figures"]["baseline_f1"], abs=0.0005)
    assert float(f1[3]) == pytest.approx(measured["figures"]["baseline_recall"], abs=0.0005)
    polygons = run_script("layout_polygons.py", "--model", str(LAYOUT), "--recognizer", str(RECOGNIZER), "--pages",
                          str(listed), "--settings", f"{UP}/{DOWN}")
    cers = re.search(r"found lines (\d+\.\d+)%, from the ground-truth lines (\d+\.\d+)%", polygons)
    assert float(cers[1]) / 100 == pytest.approx(measured["cer_segmented"], abs=0.0001)
    assert float(cers[2]) / 100 == pytest.approx(measured["cer_truth_lines"], abs=0.0001)
    assert measured["cer_segmented"] > measured["cer_truth_lines"] > 0

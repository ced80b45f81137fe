"""`loghi-ft prepare` on real pages: line images, list files split by page, the report, bad input."""

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import FIXTURES, TIMEUS
from loghi_ft.pages.cache import ensure_cache
from loghi_ft.cli import main
from loghi_ft.pages.listfile import read_list
from loghi_ft.pages.prepare import clean_text, prepare

# five small real pages: two train (one with an empty line), two val, one test
PAGES = ["PH 1858-32", "PH 1858-78", "PH 1858-22", "PH 1858-68", "PH 1858-74"]
SPLITS = TIMEUS / "splits.tsv"


@pytest.fixture(scope="module")
def split_rows(data_dir):
    with open(SPLITS, encoding="utf-8", newline="") as f:
        return {Path(r["xml"]).stem: r for r in csv.DictReader(f, delimiter="\t")}


def link_pages(folder: Path, names=PAGES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        for suffix in (".xml", ".jpg"):
            (folder / f"{name}{suffix}").symlink_to(TIMEUS / f"{name}{suffix}")
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, split_rows):
    pages = link_pages(tmp_path_factory.mktemp("pages"))
    out = tmp_path_factory.mktemp("out")
    report = prepare([pages], out, split_file=SPLITS, workers=2, progress=False)
    return out, report


def test_one_png_per_transcribed_line_with_lists_split_by_page(prepared, split_rows):
    out, report = prepared
    expected = {s: sum(int(split_rows[p]["lines_with_text"]) for p in PAGES if split_rows[p]["split"] == s)
                for s in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        samples = read_list(out / f"training_all_{split}.txt")
        assert len(samples) == expected[split]
        pages = {s.path.parent.name for s in samples}
        assert pages == {p for p in PAGES if split_rows[p]["split"] == split}
        for s in samples:
            assert s.path.is_file() and s.text == s.text.strip() and s.text
    everything = read_list(out / "training_all.txt")
    assert len(everything) == sum(expected.values())
    assert len({s.path for s in everything}) == len(everything)
    strip = cv2.imread(str(everything[0].path), cv2.IMREAD_UNCHANGED)
    assert strip.ndim == 2 and strip.shape[0] == 64
    assert sorted(p.name for p in (out / "lines").iterdir()) == sorted(PAGES)
    assert not list(out.rglob("*.tmp"))


def test_report_counts_pages_lines_and_skips(prepared, split_rows):
    out, report = prepared
    assert json.loads((out / "prepare_report.json").read_text(encoding="utf-8")) == report
    total = sum(int(split_rows[p]["textlines"]) for p in PAGES)
    with_text = sum(int(split_rows[p]["lines_with_text"]) for p in PAGES)
    assert report["pages"] == {"found": 5, "used": 5, "skipped": 0}
    assert report["lines"] == {"found": total, "written": with_text, "skipped": total - with_text}
    assert report["skipped_by_reason"] == {"empty transcription": 1}
    assert report["skipped"][0]["file"].endswith("PH 1858-32.xml") and report["skipped"][0]["line"] == "r2l26"
    assert report["splits"]["val"] == {"pages": 2, "lines": 17}
    # the packed strips training reads were built too, one per split list
    cache = ensure_cache(out / "training_all_val.txt", 64)
    assert report["caches"]["val"] == str(cache.folder) and len(cache) == 17
    strip, text = cache[0]
    assert strip.shape[0] == 64 and text == read_list(out / "training_all_val.txt")[0].text


def test_caches_filled_while_cutting_are_those_built_from_the_pngs(prepared):
    out, report = prepared
    assert sorted(report["caches"]) == ["train", "val"]  # the test list gets its cache when first read

    def contents(folder: Path) -> dict:
        # index.npz is a zip that records when it was written: its arrays are compared, with their types
        index = np.load(folder / "index.npz")
        return {"pixels": hashlib.sha256((folder / "pixels.u8").read_bytes()).hexdigest(),
                "meta": (folder / "meta.json").read_bytes(),
                "index": {name: (index[name].dtype, index[name].tolist()) for name in index.files}}

    for split in ("train", "val"):
        list_file = out / f"training_all_{split}.txt"
        folder = Path(report["caches"][split])
        made = contents(folder)
        built = (folder / "pixels.u8").stat().st_mtime_ns
        assert ensure_cache(list_file, 64).folder == folder
        assert (folder / "pixels.u8").stat().st_mtime_ns == built  # training finds it current: no rebuild
        shutil.rmtree(folder)
        rebuilt = ensure_cache(list_file, 64)
        assert len(rebuilt) == len(read_list(list_file)) > 0
        assert contents(folder) == made


def test_val_fraction_splits_by_page_and_repeats_with_the_seed(tmp_path):
    pages = link_pages(tmp_path / "pages", PAGES[1:])
    first = prepare([pages], tmp_path / "a", val_fraction=0.5, seed=3, workers=1, progress=False)
    again = prepare([pages], tmp_path / "b", val_fraction=0.5, seed=3, workers=1, progress=False)
    assert first["splits"] == again["splits"] and first["splits"]["val"]["pages"] == 2
    train = {s.path.parent.name for s in read_list(tmp_path / "a" / "training_all_train.txt")}
    val = {s.path.parent.name for s in read_list(tmp_path / "a" / "training_all_val.txt")}
    assert train and val and not train & val and train | val == set(PAGES[1:])
    assert not (tmp_path / "a" / "training_all_test.txt").exists()


def test_text_is_normalised_and_whitespace_cleaned():
    assert clean_text("  Cafe\u0301\t du  coin ", "NFC", True) == "Café du coin"
    assert clean_text("Café", "NFD", True) == "Cafe\u0301"
    assert clean_text(" a\tb  c ", "none", False) == " a b  c "


def write_bad_pages(folder: Path) -> dict[str, str]:
    """Broken copies of a real page, each with the reason prepare must give."""
    source = (TIMEUS / "PH 1858-78.xml").read_text(encoding="utf-8")
    jpg = TIMEUS / "PH 1858-78.jpg"
    cases = {}

    def page(name, text, image=None):
        (folder / f"{name}.xml").write_text(text, encoding="utf-8")
        if image is not None:
            (folder / f"{name}.jpg").write_bytes(image) if isinstance(image, bytes) else \
                (folder / f"{name}.jpg").symlink_to(image)

    page("missing-image", source.replace("PH 1858-78.jpg", "missing-image.jpg"))
    cases["missing-image"] = "image not found"
    page("zero-size", source.replace("PH 1858-78.jpg", "zero-size.jpg"), b"")
    cases["zero-size"] = "empty (0 bytes)"
    page("corrupt", source.replace("PH 1858-78.jpg", "corrupt.jpg"), jpg.read_bytes()[:300])
    cases["corrupt"] = "not a readable image"
    page("other-shape", re.sub(r'imageWidth="\d+"', 'imageWidth="2000"',
                               source.replace("PH 1858-78.jpg", "other-shape.jpg")), jpg)
    cases["other-shape"] = "a different shape"
    page("bomb", source.replace("<PcGts", '<!DOCTYPE PcGts [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>\n<PcGts'))
    cases["bomb"] = "declares XML entities"
    text = source.replace("PH 1858-78.jpg", "bad-lines.jpg")
    first = text.index('<Coords points="', text.index("<TextLine"))
    end = text.index('"', first + len('<Coords points="'))
    text = text[:first] + '<Coords points="1,1 2,2' + text[end:]
    page("bad-lines", text, jpg)
    cases["bad-lines"] = "fewer than 3 points"
    return cases


def test_bad_input_is_named_skipped_and_the_rest_goes_on(tmp_path, capsys):
    pages = link_pages(tmp_path / "pages", ["PH 1858-78"])
    cases = write_bad_pages(pages)
    out = tmp_path / "out"
    assert main(["prepare", str(pages), "--output", str(out), "--val-fraction", "0", "--workers", "1"]) == 0
    report = json.loads((out / "prepare_report.json").read_text(encoding="utf-8"))
    messages = [s["message"] for s in report["skipped"]]
    for name, reason in cases.items():
        assert any(f"{name}.xml" in m and reason in m for m in messages), (name, messages)
    assert all("\n" not in m for m in messages)
    written = {s.path.parent.name for s in read_list(out / "training_all.txt")}
    assert written == {"PH 1858-78", "bad-lines"}  # the good page, and the good lines of the damaged one
    assert report["lines"]["written"] == 3 + 2
    err = capsys.readouterr().err
    assert "bomb.xml: declares XML entities" in err and "Traceback" not in err
    assert main(["prepare", str(pages), "--output", str(tmp_path / "strict"), "--strict"]) == 1
    assert "--strict" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["page", "alto"])
def test_kraken_fixtures_all_give_output_or_a_named_skip(tmp_path, kind):
    report = prepare([FIXTURES / kind], tmp_path, val_fraction=0.0, workers=1, progress=False)
    files = sorted(str(p) for p in (FIXTURES / kind).rglob("*.xml"))
    assert report["pages"]["found"] == len(files)
    for s in report["skipped"]:
        assert s["message"].startswith(s["file"]) and "\n" not in s["message"]
    skipped_pages = {s["file"] for s in report["skipped"] if s["line"] is None}
    assert {f for f in files if "/invalid/" in f} <= skipped_pages

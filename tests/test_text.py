"""text: each page's lines in reading order as plain UTF-8, beside the page or in one file with page separators."""

from __future__ import annotations

import shutil
import unicodedata

from conftest import DATA, FIXTURES, IFORAL, TIMEUS
from loghi_ft.cli import main
from loghi_ft.errors import PARTIAL
from loghi_ft.pages.documents import find_pages, read_page

HTROMANCE = DATA / "htromance-fr" / "data" / "fr"
# its lines are stored decomposed (NFD): the text keeps them so
DECOMPOSED = HTROMANCE / "las-concernant-lully-8" / "[Acte_de_vente_au_Sieur_[...]_btv1b52506825h_8.xml"
UNCUT = HTROMANCE / "bnf-ge-dd-2025-(-res)" / "GE DD-2025 (RES)_f21.xml"  # line "tels" has no Coords


def blocks(text: str) -> dict[str, list[str]]:
    """A folder's text split at its separators: page path -> the page's lines."""
    out: dict[str, list[str]] = {}
    page = None
    for line in text.split("\n")[:-1]:
        if line.startswith("=== ") and line.endswith(" ==="):
            page = line[4:-4]
            out[page] = []
        else:
            out[page].append(line)
    return out


def test_page_text_follows_the_reading_order_not_the_file_order(capsys):
    page = FIXTURES / "page" / "explicit_ro.xml"  # ReadingOrder: region r2, then r1, then r3
    assert main(["text", str(page)]) == 0
    assert capsys.readouterr().out == ("=== explicit_ro.xml ===\n"
                                       "Line 1 in region 2\nLine 2 in region 2\n"
                                       "Line 1 in region 1\nLine 2 in region 1\n"
                                       "Line 1 in region 3\n")


def test_folder_file_has_every_page_after_its_separator_with_trailing_spaces_stripped(tmp_path, capsys):
    out = tmp_path / "timeus.txt"
    assert main(["text", str(TIMEUS), "--output", str(out)]) == 0
    assert "text: 159 pages, 4229 lines" in capsys.readouterr().out
    got = blocks(out.read_bytes().decode("utf-8"))
    pages = sorted(find_pages([TIMEUS]))
    assert list(got) == [p.name for p in pages]
    trailing = 0
    for xml in pages:
        texts = [line.text for line in read_page(xml).lines]
        trailing += sum(t != t.rstrip() for t in texts)
        assert got[xml.name] == [t.rstrip() for t in texts]
    assert trailing > 0  # the data has transcriptions ending in spaces: they are gone, nothing else changed


def test_unicode_form_is_kept_as_read(tmp_path):
    out = tmp_path / "text.txt"
    assert main(["text", str(DECOMPOSED), "--output", str(out)]) == 0
    texts = [line.text.rstrip() for line in read_page(DECOMPOSED).lines]
    assert any(unicodedata.normalize("NFC", t) != t for t in texts)
    assert out.read_bytes() == f"=== {DECOMPOSED.name} ===\n{''.join(t + chr(10) for t in texts)}".encode("utf-8")


def test_per_page_writes_each_text_beside_its_page_as_the_folder_file_has_it(tmp_path, capsys):
    folder = tmp_path / "pages"
    for charter in ("foral_de_gouveia_1217", "foral_de_linhares_1217"):
        shutil.copytree(IFORAL / charter, folder / charter, ignore=shutil.ignore_patterns("*.jpg"))
    combined = tmp_path / "all.txt"
    assert main(["text", str(folder), "--per-page", "--output", str(combined)]) == 0
    got = blocks(combined.read_text(encoding="utf-8"))
    xmls = sorted(find_pages([folder]))
    assert list(got) == [xml.relative_to(folder).as_posix() for xml in xmls]
    for xml in xmls:
        beside = xml.with_suffix(".txt").read_text(encoding="utf-8")
        assert beside.split("\n")[:-1] == got[xml.relative_to(folder).as_posix()]
        assert beside.split("\n")[:-1] == [line.text.rstrip() for line in read_page(xml).lines]
    assert f"text: {len(xmls)} pages" in capsys.readouterr().out


def test_pages_and_lines_left_out_are_listed_and_the_status_is_partial(tmp_path, capsys):
    folder = tmp_path / "pages"
    folder.mkdir()
    shutil.copy(UNCUT, folder / "f21.xml")
    shutil.copy(FIXTURES / "page" / "invalid" / "dims.xml", folder / "dims.xml")
    out = tmp_path / "text.txt"
    assert main(["text", str(folder), "--output", str(out)]) == PARTIAL == 3
    captured = capsys.readouterr()
    assert f"{folder / 'f21.xml'}: line eSc_line_badbc441: has no Coords; not in the text" in captured.err
    assert f"left out: {folder / 'dims.xml'}: imageWidth 'foo' is not a number" in captured.err
    assert "2 pages or lines left out" in captured.out
    got = blocks(out.read_text(encoding="utf-8"))
    assert list(got) == ["f21.xml"] and "tels" not in got["f21.xml"]
    assert got["f21.xml"] == [line.text.rstrip() for line in read_page(UNCUT).lines]


def test_output_that_is_also_a_page_text_is_refused(tmp_path, capsys):
    folder = tmp_path / "pages"
    shutil.copytree(IFORAL / "foral_de_gouveia_1217", folder, ignore=shutil.ignore_patterns("*.jpg"))
    assert main(["text", str(folder), "--per-page", "--output", str(folder / "1.txt")]) == 1
    assert "is also the text file of one of the pages" in capsys.readouterr().err
    assert not list(folder.glob("*.txt"))

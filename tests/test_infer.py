"""infer: text and confidence into every line of real pages, schema-valid, resumable, bad input reported."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from lxml import etree

from conftest import DATA, FIXTURES, IFORAL, PAGE_XSD, ROOT, TIMEUS
from loghi_ft.cli import main
from loghi_ft.errors import PARTIAL
from loghi_ft.pages.lines import cut_page, load_image
from loghi_ft.pages.documents import read_page

NS = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
# a small, quick model: the tests are about the mechanics, not the readings
SPEC = "None,None,32,1 Cr3,3,8 Mp2,2,2,2 Cr3,3,16 Mp2,2,2,2 Rc3 Bl32"
PAGE = IFORAL / "foral_de_gouveia_1217" / "3.xml"
SMALL_PAGES = [PAGE, IFORAL / "foral_de_gouveia_1217" / "1.xml", IFORAL / "foral_de_linhares_1217" / "1.xml",
               IFORAL / "foral_de_folgosinho_1217" / "1.xml"]
# a real page whose interlinear line "tels" cannot be cut: no Coords in the PAGE XML, a box 0 pixels high in the
# ALTO it was converted from
HTROMANCE = DATA / "htromance-fr"
UNCUT_PAGE = HTROMANCE / "data" / "fr" / "bnf-ge-dd-2025-(-res)" / "GE DD-2025 (RES)_f21.xml"
UNCUT_ALTO = HTROMANCE / "alto-original" / "fr" / "bnf-ge-dd-2025-(-res)" / "GE DD-2025 (RES)_f21.xml"
UNCUT_ID = "eSc_line_badbc441"


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    """An untrained model over the iForal characters, saved as a model folder."""
    import torch

    from loghi_ft.model.folder import ModelInfo, save_model
    from loghi_ft.model.vgsl import build_model
    torch.manual_seed(0)
    charset = sorted({c for p in sorted(IFORAL.rglob("*.xml")) for line in read_page(p).lines for c in line.text})
    net = build_model(SPEC, len(charset) + 1)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_model(net, ModelInfo(spec=net.spec, height=net.height, channels=net.channels, charset=charset), folder)
    return folder


def pages_folder(tmp_path: Path, sources: list[Path]) -> Path:
    """A folder of links to real pages and their images (file names as in the data)."""
    folder = tmp_path / "in"
    for xml in sources:
        sub = folder / xml.parent.name
        sub.mkdir(parents=True, exist_ok=True)
        for f in (xml, xml.with_suffix(".jpg")):
            (sub / f.name).symlink_to(f)
    return folder


def read_alone(model: Path, strips: list) -> list:
    """Each strip read by itself in fp32 (a batch of one, no padding): what `infer --batch-size 1` must write."""
    from loghi_ft.model.codec import Codec
    from loghi_ft.model.decode import Decoder
    from loghi_ft.model.pixels import preprocess
    from loghi_ft.model.recognizers import open_recognizer
    recognizer = open_recognizer(model, "-1", "fp32")
    decoder = Decoder(Codec(recognizer.info.charset))
    return [decoder(*recognizer(*preprocess([strip], recognizer.info)))[0] for strip in strips]


def stripped(tree: etree._ElementTree) -> bytes:
    """Canonical XML without the line TextEquivs and loghi-ft's MetadataItem."""
    root = etree.fromstring(etree.tostring(tree))
    for el in root.findall(f".//{NS}TextLine/{NS}TextEquiv") + root.findall(f".//{NS}MetadataItem[@name='loghi-ft']"):
        parent = el.getparent()
        previous = el.getprevious()
        # the whitespace around a removed element belongs to neither document's content
        if previous is not None:
            previous.tail = (previous.tail or "").rstrip() + (el.tail or "").rstrip()
        else:
            parent.text = (parent.text or "").rstrip() + (el.tail or "").rstrip()
        parent.remove(el)
    for el in root.iter():
        el.tail = (el.tail or "").strip() or None
        if len(el):
            el.text = (el.text or "").strip() or None
    return etree.tostring(root, method="c14n")


def test_every_line_gets_its_own_reading_and_only_that_changes(model, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["infer", "--model", str(model), str(PAGE), "--output", str(out), "--workers", "1",
                 "--batch-size", "1", "--precision", "fp32"]) == 0
    written = out / PAGE.name
    tree = etree.parse(str(written))
    lines = tree.findall(f".//{NS}TextLine")
    assert len(lines) == len(read_page(PAGE).lines) == 7
    cut = list(cut_page(read_page(PAGE), 32))
    expected = dict(zip([line.id for line, _, _ in cut], read_alone(model, [strip for _, strip, _ in cut])))
    for line in lines:
        equivs = line.findall(f"{NS}TextEquiv")
        assert len(equivs) == 1
        reading = expected[line.get("id")]
        assert (equivs[0].find(f"{NS}Unicode").text or "") == reading.text
        assert float(equivs[0].get("conf")) == pytest.approx(reading.conf, abs=1e-4)
    # each line has its own confidence (the untrained model's are all below 0.00005, so the XML's 4 decimals
    # cannot show it)
    assert len({reading.conf for reading in expected.values()}) == len(expected)
    schema = etree.XMLSchema(etree.parse(str(PAGE_XSD)))
    assert schema.validate(tree), schema.error_log
    items = tree.findall(f".//{NS}MetadataItem[@name='loghi-ft']")
    assert len(items) == 1
    labels = {label.get("type"): label.get("value") for label in items[0].iter(f"{NS}Label")}
    assert labels["model"] == "tiny" and len(labels["model_hash"]) == 16
    assert stripped(tree) == stripped(etree.parse(str(PAGE)))
    out = capsys.readouterr().out
    assert "1 pages, 7 lines recognised" in out and out.rstrip().endswith("; complete")


def test_words_get_coords_inside_their_line(model, tmp_path):
    out = tmp_path / "out"
    assert main(["infer", "--model", str(model), str(PAGE), "--output", str(out), "--words", "--workers", "0",
                 "--beam-width", "3"]) == 0
    tree = etree.parse(str(out / PAGE.name))
    assert etree.XMLSchema(etree.parse(str(PAGE_XSD))).validate(tree)
    for line in tree.iter(f"{NS}TextLine"):
        xs = [float(p.split(",")[0]) for p in line.find(f"{NS}Coords").get("points").split()]
        text = line.find(f"{NS}TextEquiv/{NS}Unicode").text or ""
        words = line.findall(f"{NS}Word")
        assert [w.find(f"{NS}TextEquiv/{NS}Unicode").text for w in words] == text.split()
        for w in words:
            wx = [float(p.split(",")[0]) for p in w.find(f"{NS}Coords").get("points").split()]
            assert min(xs) - 1 <= min(wx) <= max(wx) <= max(xs) + 1


def test_rerun_skips_pages_done_by_the_same_model_unless_overwrite(model, tmp_path, capsys):
    source = pages_folder(tmp_path, [PAGE, IFORAL / "foral_de_folgosinho_1217" / "1.xml"])
    out = tmp_path / "out"
    args = ["infer", "--model", str(model), str(source), "--output", str(out), "--workers", "0"]
    assert main(args) == 0
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*.xml")}
    assert len(first) == 2
    capsys.readouterr()
    assert main(args) == 0  # pages done by this model before count as done
    assert "0 pages, 0 lines recognised" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.xml")} == first
    assert main(args + ["--overwrite"]) == 0
    assert "2 pages" in capsys.readouterr().out


def test_shards_split_the_pages_between_them(model, tmp_path):
    sources = SMALL_PAGES
    source = pages_folder(tmp_path, sources)
    got = []
    for k in (1, 2):
        out = tmp_path / f"out{k}"
        assert main(["infer", "--model", str(model), str(source), "--output", str(out), "--workers", "0",
                     "--shard", f"{k}/2"]) == 0
        got.append({p.relative_to(out).as_posix() for p in out.rglob("*.xml")})
    assert got[0] and got[1] and not got[0] & got[1]
    assert got[0] | got[1] == {f"{p.parent.name}/{p.name}" for p in sources}


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_or_corrupting_pages(model, tmp_path):
    sources = SMALL_PAGES + [IFORAL / "foral_de_valhelhas_1217" / "1.xml"]
    source = pages_folder(tmp_path, sources)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "loghi_ft", "infer", "--model", str(model), str(source), "--output", str(out),
           "--batch-size", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.rglob("*.xml")) and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in out.rglob("*.xml")}
    assert 1 <= len(done) < len(sources), "the run should have been killed part-way"
    for p in out.rglob("*"):
        # a write cut short by the kill leaves at most its hidden temporary file, never a partial page
        assert p.is_dir() or p.suffix == ".xml" or (p.name.startswith(".") and p.suffix == ".tmp"), p
    for p in done:  # every page there is complete: parseable, with text in every line
        page = read_page(p)
        assert etree.parse(str(p)).find(f".//{NS}MetadataItem[@name='loghi-ft']") is not None
        assert len(page.lines) == len(read_page(source / p.relative_to(out)).lines)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(sources) - len(done)} pages" in result.stdout
    assert f"{len(done)} already done by this model" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in done} == done
    assert len(list(out.rglob("*.xml"))) == len(sources)


def test_bad_pages_are_reported_and_the_rest_goes_on(model, tmp_path, capsys):
    source = pages_folder(tmp_path, [PAGE])
    # a page whose image is missing, one whose XML is not PAGE, one line that cannot be cut
    shutil.copy(FIXTURES / "page" / "explicit_ro.xml", source / "no_image.xml")
    (source / "notes.xml").write_text("<notes>not a page</notes>")
    broken = source / "cut" / "3.xml"
    broken.parent.mkdir()
    (broken.parent / "3.jpg").symlink_to(PAGE.with_suffix(".jpg"))
    tree = etree.parse(str(PAGE))
    first = tree.find(f".//{NS}TextLine")
    first.find(f"{NS}Coords").set("points", "90000,90000 90010,90000 90010,90010")
    tree.write(str(broken), xml_declaration=True, encoding="UTF-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    args = ["infer", "--model", str(model), str(source), str(empty), "--output", str(out), "--workers", "0"]
    assert main(args) == PARTIAL
    captured = capsys.readouterr()
    assert "no_image.xml" in captured.err and "image" in captured.err
    assert f"{empty}: no PAGE XML found" in captured.err
    assert f"{broken}: line {first.get('id')}: polygon lies outside the image" in captured.err
    assert "2 pages, 13 lines recognised" in captured.out
    assert ("INCOMPLETE (exit status 3): 1 lines not recognised (written without text), 1 skipped (1 image missing)"
            in captured.out)
    cut = etree.parse(str(out / "cut" / "3.xml")).find(f".//{NS}TextLine[@id='{first.get('id')}']")
    assert cut.find(f"{NS}TextEquiv").get("conf") == "0.0000"
    assert not cut.find(f"{NS}TextEquiv/{NS}Unicode").text
    assert not (out / "no_image.xml").exists()


def page_without_coords_2013(folder: Path) -> tuple[Path, str]:
    """The kraken fixtures' 5-line Transkribus page (PAGE 2013) with its first line's Coords taken out."""
    source = FIXTURES / "170025120000003,0074-lite.xml"
    tree = etree.parse(str(source))
    ns = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15}"
    first = tree.find(f".//{ns}TextLine")
    first.remove(first.find(f"{ns}Coords"))
    xml = folder / source.name
    tree.write(str(xml), xml_declaration=True, encoding="UTF-8")
    (folder / "170025120000003,0074.jpg").symlink_to(source.with_name("170025120000003,0074.jpg"))
    return xml, first.get("id")


def written_text(xml: Path, line_id: str) -> tuple[str, str]:
    """(text, confidence) written for one line: PAGE's TextEquiv, or ALTO's String."""
    root = etree.parse(str(xml)).getroot()
    line = next(e for e in root.iter()
                if etree.QName(e).localname == "TextLine" and line_id in (e.get("id"), e.get("ID")))
    if "alto" in root.tag:
        [string] = [e for e in line if etree.QName(e).localname == "String"]
        return string.get("CONTENT"), string.get("WC")
    [equiv] = [e for e in line if etree.QName(e).localname == "TextEquiv"]
    return "".join(equiv.itertext()).strip(), equiv.get("conf")


@pytest.mark.parametrize("kind", ["page2019", "alto", "page2013"])
def test_line_not_cut_is_emptied_listed_and_the_run_is_partial(model, tmp_path, capsys, kind):
    source = tmp_path / "in"
    source.mkdir()
    if kind == "page2013":
        xml, line_id = page_without_coords_2013(source)
        old = "".join(etree.parse(str(FIXTURES / xml.name)).find(".//{*}TextLine/{*}TextEquiv").itertext()).strip()
        why = "has no Coords"
    else:
        xml, line_id, why = source / UNCUT_PAGE.name, UNCUT_ID, "has no Coords"
        shutil.copy(UNCUT_PAGE if kind == "page2019" else UNCUT_ALTO, xml)
        xml.with_suffix(".jpg").symlink_to(UNCUT_PAGE.with_suffix(".jpg"))
        old = "tels"
        if kind == "alto":
            why = "polygon encloses no area"
    assert written_text(xml, line_id)[0] == old != ""
    out = tmp_path / "out"
    args = ["infer", "--model", str(model), str(source), "--output", str(out), "--workers", "0"]
    assert main(args) == PARTIAL
    captured = capsys.readouterr()
    assert f"{xml}: line {line_id}: {why}; written without text" in captured.err
    assert "INCOMPLETE (exit status 3): 1 lines not recognised" in captured.out
    # the ground truth no longer passes for a reading
    assert written_text(out / xml.name, line_id) == ("", "0.0000")
    # a second run leaves the page as it is, and still says that a line of it was not recognised
    assert main(args) == PARTIAL
    captured = capsys.readouterr()
    assert f"{out / xml.name}: 1 lines not recognised when this model wrote it" in captured.err
    assert "0 pages, 0 lines recognised" in captured.out and "1 already done by this model" in captured.out


def test_text_beside_each_page_is_its_lines_in_reading_order(model, tmp_path, capsys):
    source = pages_folder(tmp_path, SMALL_PAGES[:2])
    out = tmp_path / "out"
    args = ["infer", "--model", str(model), str(source), "--output", str(out), "--workers", "0", "--text"]
    assert main(args) == 0
    pages = sorted(out.rglob("*.xml"))
    assert [p.relative_to(out).as_posix() for p in pages] == ["foral_de_gouveia_1217/1.xml",
                                                             "foral_de_gouveia_1217/3.xml"]
    texts = {}
    for xml in pages:
        readings = [line.text for line in read_page(xml).lines]  # what infer wrote, in reading order
        texts[xml] = xml.with_suffix(".txt").read_bytes()
        assert texts[xml].decode("utf-8").split("\n") == [t.rstrip() for t in readings] + [""]
        assert len(readings) == len(read_page(source / xml.relative_to(out)).lines) and any(readings)
    # a page done before gets its text when a later run asks for it, without being read again
    pages[0].with_suffix(".txt").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "0 pages, 0 lines recognised" in capsys.readouterr().out
    assert {xml: xml.with_suffix(".txt").read_bytes() for xml in pages} == texts


def test_model_folder_missing_its_weights_is_one_clear_message(model, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    (broken / "model.safetensors").unlink()
    assert main(["infer", "--model", str(broken), str(PAGE), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.safetensors" in err and "Traceback" not in err


def test_unwritable_output_folder_is_one_clear_message(model, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert main(["infer", "--model", str(model), str(PAGE), "--output", str(blocker / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot create the output folder" in err


def test_list_file_of_line_images_gives_a_loghi_results_file(model, tmp_path):
    page = read_page(PAGE)
    images = []
    for line, strip, _ in cut_page(page, 48):
        path = tmp_path / "lines" / f"{line.id}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), strip)
        images.append(path)
    (tmp_path / "lines" / "missing.png").unlink(missing_ok=True)
    listing = tmp_path / "lines.txt"
    listing.write_text("".join(f"lines/{p.name}\tsome text\n" for p in images) + "lines/missing.png\tx\n")
    # the missing image is a line not recognised: listed, and the run is partial
    assert main(["infer", "--model", str(model), str(listing), "--output", str(tmp_path / "out"), "--workers", "0",
                 "--batch-size", "1", "--precision", "fp32"]) == PARTIAL
    rows = (tmp_path / "out" / "lines.results.txt").read_text(encoding="utf-8").splitlines()
    assert [r.split("\t")[0] for r in rows] == [str(p) for p in images] + [str(tmp_path / "lines" / "missing.png")]
    for row, reading in zip(rows, read_alone(model, [load_image(p) for p in images]), strict=False):
        _path, conf, text = row.split("\t")
        assert text == reading.text and float(conf) == pytest.approx(reading.conf, abs=1e-4)
    assert rows[-1].split("\t")[1:] == ["0.0000", ""]


def test_timeus_page_in_place_keeps_its_namespace_and_regions(model, tmp_path):
    xml = TIMEUS / "PH 1858-15.xml"
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(xml, source / xml.name)
    (source / "PH 1858-15.jpg").symlink_to(xml.with_suffix(".jpg"))
    assert main(["infer", "--model", str(model), str(source), "--in-place", "--workers", "0"]) == 0
    tree = etree.parse(str(source / xml.name))
    assert stripped(tree) == stripped(etree.parse(str(xml)))
    assert all(line.find(f"{NS}TextEquiv").get("conf") for line in tree.iter(f"{NS}TextLine"))


def test_onnx_export_reads_the_same_as_the_model_folder(model, tmp_path):
    from loghi_ft.model.onnx import export
    onnx = export(model, tmp_path / "tiny.onnx")
    texts = []
    for source, extra, out in ((model, ["--precision", "fp32"], tmp_path / "torch"), (onnx, [], tmp_path / "onnx")):
        assert main(["infer", "--model", str(source), str(PAGE), "--output", str(out), "--workers", "0"] + extra) == 0
        tree = etree.parse(str(out / PAGE.name))
        texts.append([(u.text or "") for u in tree.iter(f"{NS}Unicode")])
        hashes = [label.get("value") for label in tree.iter(f"{NS}Label") if label.get("type") == "model_hash"]
        assert len(hashes) == 1 and len(hashes[0]) == 16
    assert texts[0] == texts[1] and len(texts[0]) == 7


def test_beam_search_finds_the_labelling_best_path_misses():
    import numpy as np
    import torch

    from loghi_ft.model.decode import Decoder
    from loghi_ft.model.codec import Codec
    # each frame alone prefers the blank (0.6), but "a" sums three alignments: 0.16 + 0.24 + 0.24 = 0.64 > 0.36
    logits = torch.tensor(np.log([[[0.6, 0.4], [0.6, 0.4]]]), dtype=torch.float32)
    lengths = torch.tensor([2])
    codec = Codec(["a"])
    assert Decoder(codec)(logits, lengths)[0].text == ""
    best = Decoder(codec, beam_width=4)(logits, lengths)[0]
    # the confidence of "a" is its probability over all its alignments (model/decode.py), per character
    assert best.text == "a" and best.conf == pytest.approx(0.64)


def test_character_ngram_tips_a_close_call_toward_known_words():
    import numpy as np
    import torch

    from loghi_ft.model.decode import CharNgram, Decoder
    from loghi_ft.model.codec import Codec
    codec = Codec(list("abc"))
    # frames read "a", then "c" (0.5) narrowly over "b" (0.45); the word list knows only "ab"
    probs = [[0.02, 0.96, 0.01, 0.01], [0.98, 0.01, 0.005, 0.005], [0.03, 0.02, 0.45, 0.5], [0.98, 0.01, 0.005, 0.005]]
    logits = torch.tensor(np.log([probs]), dtype=torch.float32)
    lengths = torch.tensor([4])
    assert Decoder(codec, beam_width=5)(logits, lengths)[0].text == "ac"
    lm = CharNgram(["ab", "abab", "ab ab"], order=3)
    assert Decoder(codec, beam_width=5, lm=lm, lm_weight=0.5)(logits, lengths)[0].text == "ab"


def test_word_spans_follow_the_aligned_frames():
    import numpy as np
    import torch

    from loghi_ft.model.decode import Decoder, word_spans
    from loghi_ft.model.codec import Codec
    codec = Codec(list(" ab"))
    path = [0, 2, 2, 0, 1, 1, 0, 0, 3, 0, 2, 0]  # "a", " ", "b", "a" at frames 1-2, 4-5, 8, 10
    logits = torch.full((1, len(path), 4), -6.0)
    for t, k in enumerate(path):
        logits[0, t, k] = 4.0
    for beam in (1, 3):
        decoded = Decoder(codec, beam_width=beam)(logits, torch.tensor([len(path)]))[0]
        assert decoded.text == "a ba"
        words = word_spans(decoded.chars, len(path), 120)  # 10 strip pixels per frame
        assert [w.text for w in words] == ["a", "ba"]
        assert words[0].x0 == 0.0 and words[1].x1 == 120.0
        assert 30.0 <= words[0].x1 <= 45.0 and 60.0 <= words[1].x0 <= 85.0
        assert all(0.9 < w.conf <= 1.0 for w in words)


def test_page_streaming_and_writing_never_import_torch():
    # the cutting workers import this module alone: torch there would cost each of them its start-up and memory
    code = "import sys, loghi_ft.inference.pages; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"

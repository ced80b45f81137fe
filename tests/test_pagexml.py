"""Reading PAGE 2013/2019 and ALTO, writing text back, refusing dangerous or broken XML."""

import shutil
from pathlib import Path

import pytest
from lxml import etree

from conftest import FIXTURES, IFORAL, PAGE_XSD, TIMEUS
from loghi_ft.errors import UserError
from loghi_ft.pages.documents import LineResult, WordResult, find_pages, read_page, write_page

PAGE2013 = FIXTURES / "170025120000003,0074.xml"
ALTO = FIXTURES / "alto" / "bsb00084914_00007.xml"
ALTO_XSD = FIXTURES / "schemas" / "alto-4-3.xsd"
# eScriptorium's ALTO as the CREMMA and FoNDUE repositories hold it (the base model's training data); see its README
CREMMA = Path(__file__).parent / "data" / "cremma-mss-17" / "39_eaa25_default.xml"
NS2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
NS2013 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"


@pytest.fixture(scope="module")
def page_schema():
    return etree.XMLSchema(etree.parse(str(PAGE_XSD)))


def schema_errors(schema, path):
    schema.validate(etree.parse(str(path)))
    return sorted(e.message for e in schema.error_log)


def test_reads_page_2019_escriptorium_export(data_dir):
    page = read_page(TIMEUS / "PH 1858-1.xml")
    assert page.format == "page2019"
    assert (page.width, page.height) == (3072, 4608)
    assert page.image_path == TIMEUS / "PH 1858-1.jpg" and page.image_path.exists()
    assert len(page.lines) == 22 and page.problems == []
    first = page.lines[0]
    assert first.id == "r3l13" and first.text == "Audience" and first.region_id == "eSc_dummyblock_"
    assert first.polygon[0] == (1451.0, 2104.0) and len(first.polygon) == 7
    assert first.baseline[0] == (1452.0, 2106.0) and len(first.baseline) == 19


def test_reads_page_2013_transkribus_export_in_reading_order(data_dir):
    page = read_page(PAGE2013)
    assert page.format == "page2013"
    assert len(page.lines) == 44
    assert page.lines[0].id == "line_1469098625593_463" and page.lines[0].text == "$pag:39"
    assert page.lines[2].text == "y salvedades alli expressadas; Y fue acetada;"
    assert page.lines[1].text == "$-nor su hijo, De todos sus bienes, con los pactos"
    lite = read_page(FIXTURES / "170025120000003,0074-lite.xml")
    assert lite.lines[1].text == ""  # an empty Unicode stays empty, it is not dropped here


def test_reading_order_element_decides_region_order(data_dir):
    assert [l.id for l in read_page(FIXTURES / "page" / "explicit_ro.xml").lines] == ["l3", "l4", "l1", "l2", "l5"]
    nested = read_page(FIXTURES / "page" / "explicit_ro_unordered.xml")
    assert [l.id for l in nested.lines] == ["l1", "l2", "l3"]


def test_https_namespace_variant_is_read(data_dir):
    page = read_page(FIXTURES / "page" / "cPAS-2000.xml")
    assert page.format == "page2013" and len(page.lines) == 97


def test_reads_alto_polygons_baselines_and_strings(data_dir):
    page = read_page(ALTO)
    assert page.format == "alto" and (page.width, page.height) == (3177, 4308)
    assert len(page.lines) == 31
    first = page.lines[0]
    assert first.id == "eSc_line_192895"
    assert first.baseline == [(848.0, 682.0), (934.0, 678.0), (1027.0, 689.0), (1214.0, 696.0), (2731.0, 700.0)]
    assert first.polygon[:2] == [(844.0, 678.0), (851.0, 635.0)]
    assert first.text.startswith("בשאול וגו' ˙")


def test_reads_escriptorium_alto_of_the_base_model_sources():
    page = read_page(CREMMA)
    assert page.format == "alto" and (page.width, page.height) == (3612, 5040) and page.problems == []
    assert page.image_path == CREMMA.parent / "39_eaa25_default.jpg"
    assert [l.text for l in page.lines] == ["((Le Roy est a marli", "Je m'en retourne a meaux",
                                            "et a germigny iusqu'à la feste))"]
    assert {l.region_id for l in page.lines} == {"eSc_textblock_e6f6f3b3"}
    last = page.lines[2]
    assert last.id == "eSc_line_026a8011" and len(last.polygon) == 175
    assert last.polygon[:2] == [(1029.0, 1755.0), (1016.0, 1663.0)]
    assert last.baseline == [(1033.0, 1759.0), (2633.0, 1779.0), (2813.0, 1802.0)]


def test_alto_line_without_shape_uses_its_box_and_words_are_joined(data_dir):
    page = read_page(FIXTURES / "alto" / "missing_coords_ro.xml")
    first = page.lines[0]
    assert first.polygon == [(20.0, 20.0), (480.0, 20.0), (480.0, 180.0), (20.0, 180.0)]
    assert first.text == "Line one"


INVALID_REASONS = {
    "page/invalid/dims.xml": "imageWidth 'foo' is not a number",
    "page/invalid/image.xml": "names no page image",
    "page/invalid/zero_dims_missing_image.xml": "not found",
    "alto/invalid/dims.xml": "WIDTH 'bar' is not a number",
    "alto/invalid/image.xml": "names no page image",
    "alto/invalid/mu.xml": "MeasurementUnit 'mm' is not supported",
    "alto/invalid/zero_dims_missing_image.xml": "not found",
}


@pytest.mark.parametrize("name", sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/**/*.xml")
                                        if p.parent.name != "schemas"))
def test_every_fixture_reads_or_gives_one_line_naming_the_file(data_dir, name):
    path = FIXTURES / name
    if name in INVALID_REASONS:
        with pytest.raises(UserError) as err:
            read_page(path)
        message = str(err.value)
        assert message.startswith(str(path)) and "\n" not in message
        assert INVALID_REASONS[name] in message
    else:
        page = read_page(path)
        assert page.format in ("page2013", "page2019", "alto")
        assert all(len(l.polygon) >= 3 for l in page.lines)


def test_zero_dimensions_mean_unknown_when_the_image_is_there(data_dir):
    page = read_page(FIXTURES / "page" / "zero_dims.xml")
    assert (page.width, page.height) == (0, 0) and page.image_path.exists() and page.lines == []


def test_line_with_fewer_than_three_points_is_dropped_and_named(tmp_path, data_dir):
    text = (FIXTURES / "page" / "explicit_ro.xml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.xml"
    bad.write_text(text.replace('<Coords points="10,10 490,10 490,140 10,140"/>', '<Coords points="10,10 490,10"/>'),
                   encoding="utf-8")
    page = read_page(bad)
    assert "l1" not in [l.id for l in page.lines] and len(page.lines) == 4
    assert page.problems == ["line l1: Coords has fewer than 3 points"]


ENTITY_BOMB = """<?xml version="1.0"?>
<!DOCTYPE PcGts [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
]>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
 <Page imageFilename="x.jpg" imageWidth="10" imageHeight="10">
  <TextRegion id="r"><TextLine id="l"><Coords points="0,0 5,0 5,5"/>
   <TextEquiv><Unicode>&f;</Unicode></TextEquiv></TextLine></TextRegion>
 </Page>
</PcGts>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE PcGts [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
 <Page imageFilename="x.jpg" imageWidth="10" imageHeight="10">
  <TextRegion id="r"><TextLine id="l"><Coords points="0,0 5,0 5,5"/>
   <TextEquiv><Unicode>&secret;</Unicode></TextEquiv></TextLine></TextRegion>
 </Page>
</PcGts>
"""


@pytest.mark.parametrize("content", [ENTITY_BOMB, EXTERNAL_ENTITY], ids=["entity-bomb", "external-entity"])
def test_entities_are_refused_not_expanded(tmp_path, content):
    path = tmp_path / "evil.xml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match="declares XML entities") as err:
        read_page(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="declares XML entities"):
        write_page(path, tmp_path / "out.xml", {}, {})
    assert not (tmp_path / "out.xml").exists()


def test_broken_and_empty_xml_give_one_line(tmp_path):
    truncated = tmp_path / "truncated.xml"
    truncated.write_bytes((TIMEUS / "PH 1858-1.xml").read_bytes()[:700])
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    for path, reason in ((truncated, "not well-formed XML"), (empty, "empty file"),
                         (tmp_path / "missing.xml", "file not found")):
        with pytest.raises(UserError, match=reason) as err:
            read_page(path)
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_find_pages_takes_page_subfolders_and_skips_other_xml(tmp_path, data_dir):
    (tmp_path / "page").mkdir()
    shutil.copy(PAGE2013, tmp_path / "page" / PAGE2013.name)
    (tmp_path / PAGE2013.with_suffix(".jpg").name).symlink_to(PAGE2013.with_suffix(".jpg"))
    (tmp_path / "notes.xml").write_text("<notes><note>not a page</note></notes>", encoding="utf-8")
    (tmp_path / "garbage.xml").write_bytes(b"\x00\x01 not xml")
    found = list(find_pages([tmp_path]))
    assert found == [tmp_path / "page" / PAGE2013.name]
    assert read_page(found[0]).image_path == tmp_path / PAGE2013.with_suffix(".jpg").name
    with pytest.raises(UserError, match="no such file or folder"):
        list(find_pages([tmp_path / "nothing-here"]))


def strip_written(root, ns, line_ids):
    """The tree without what write_page may change: the lines' TextEquiv/Word and the processing note."""
    for line in root.iter(f"{{{ns}}}TextLine"):
        if line.get("id") in line_ids:
            for child in line.findall(f"{{{ns}}}TextEquiv") + line.findall(f"{{{ns}}}Word"):
                line.remove(child)
    for item in root.iter(f"{{{ns}}}MetadataItem"):
        if item.get("name") == "loghi-ft":
            item.getparent().remove(item)
    return etree.tostring(root, method="c14n")


@pytest.mark.parametrize("xml", sorted(IFORAL.glob("*/*.xml"))[:3], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_round_trip_iforal_stays_valid_and_changes_only_the_text(tmp_path, page_schema, xml):
    assert schema_errors(page_schema, xml) == []
    page = read_page(xml)
    results = {line.id: LineResult(f"recognised {i} ⁊", 0.87) for i, line in enumerate(page.lines)}
    out = tmp_path / "out.xml"
    write_page(xml, out, results, {"version": "0.1.0", "model": "base", "model_hash": "abc123"})
    assert schema_errors(page_schema, out) == []
    again = read_page(out)
    assert [l.text for l in again.lines] == [f"recognised {i} ⁊" for i in range(len(page.lines))]
    assert [l.polygon for l in again.lines] == [l.polygon for l in page.lines]
    written = etree.parse(str(out)).getroot()
    equivs = written.findall(f".//{{{NS2019}}}TextLine/{{{NS2019}}}TextEquiv")
    assert len(equivs) == len(page.lines) and {e.get("conf") for e in equivs} == {"0.8700"}
    items = written.findall(f".//{{{NS2019}}}MetadataItem")
    assert [(i.get("type"), i.get("name")) for i in items] == [("processingStep", "loghi-ft")]
    assert {l.get("type"): l.get("value") for l in items[0].iter(f"{{{NS2019}}}Label")}["model_hash"] == "abc123"
    before = strip_written(etree.parse(str(xml)).getroot(), NS2019, set(results))
    assert strip_written(written, NS2019, set(results)) == before


def test_round_trip_with_words_stays_valid(tmp_path, page_schema):
    xml = sorted(IFORAL.glob("*/*.xml"))[0]
    line = read_page(xml).lines[0]
    box = [(10, 10), (50, 10), (50, 30), (10, 30)]
    out = tmp_path / "out.xml"
    write_page(xml, out, {line.id: LineResult("In nne", 0.5, [WordResult("In", 0.6, box), WordResult("nne", 0.4, box)])},
               {"version": "0.1.0"})
    assert schema_errors(page_schema, out) == []
    words = etree.parse(str(out)).getroot().findall(f".//{{{NS2019}}}TextLine[@id='{line.id}']/{{{NS2019}}}Word")
    assert [w.findtext(f"{{{NS2019}}}TextEquiv/{{{NS2019}}}Unicode") for w in words] == ["In", "nne"]


@pytest.mark.parametrize("name", ["PH 1858-1.xml", "PH 1858-32.xml"])
def test_timeus_pages_gain_no_schema_errors(tmp_path, page_schema, name):
    xml = TIMEUS / name
    before = schema_errors(page_schema, xml)
    assert before  # as exported, their regions lack Coords
    page = read_page(xml)
    out = tmp_path / "out.xml"
    write_page(xml, out, {l.id: LineResult("texte", 0.5) for l in page.lines}, {"version": "0.1.0"})
    assert schema_errors(page_schema, out) == before


def test_page_2013_is_written_back_as_2013(tmp_path):
    out = tmp_path / "out.xml"
    line = read_page(PAGE2013).lines[2]
    write_page(PAGE2013, out, {line.id: LineResult("nuevo texto", 0.25)}, {"version": "0.1.0", "model": "m"})
    root = etree.parse(str(out)).getroot()
    assert etree.QName(root).namespace == NS2013
    # the 2013 schema has no MetadataItem: the note goes to Comments
    assert root.find(f"{{{NS2013}}}MetadataItem") is None
    assert "loghi-ft: version=0.1.0 model=m" in root.findtext(f"{{{NS2013}}}Metadata/{{{NS2013}}}Comments")
    texts = {l.id: l.text for l in read_page(out).lines}
    assert texts[line.id] == "nuevo texto"
    original = {l.id: l.text for l in read_page(PAGE2013).lines}
    assert {k: v for k, v in texts.items() if k != line.id} == {k: v for k, v in original.items() if k != line.id}
    root.find(f"{{{NS2013}}}Metadata").remove(root.find(f"{{{NS2013}}}Metadata/{{{NS2013}}}Comments"))
    assert strip_written(root, NS2013, {line.id}) == strip_written(etree.parse(str(PAGE2013)).getroot(), NS2013,
                                                                   {line.id})


@pytest.mark.parametrize("alto", [ALTO, CREMMA], ids=["kraken", "cremma"])
def test_alto_write_back_adds_no_schema_errors(tmp_path, alto):
    schema = etree.XMLSchema(etree.parse(str(ALTO_XSD)))
    before = schema_errors(schema, alto)
    page = read_page(alto)
    out = tmp_path / "out.xml"
    write_page(alto, out, {l.id: LineResult(f"שורה {i}", 0.9) for i, l in enumerate(page.lines)}, {"version": "0.1.0"})
    assert schema_errors(schema, out) == before
    assert [l.text for l in read_page(out).lines] == [f"שורה {i}" for i in range(len(page.lines))]


def test_write_in_place_leaves_no_temporary_file(tmp_path):
    xml = tmp_path / "1.xml"
    shutil.copy(sorted(IFORAL.glob("*/1.xml"))[0], xml)
    line = read_page(xml).lines[0]
    write_page(xml, xml, {line.id: LineResult("in place", 1.0)}, {"version": "0.1.0"})
    assert read_page(xml).lines[0].text == "in place"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.xml"]

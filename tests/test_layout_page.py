"""Layout ground truth read from PAGE and ALTO, layouts written as PAGE XML, and the reading order of a layout."""

import collections
import dataclasses
import random

import cv2
import numpy as np
import pytest
from lxml import etree
from PIL import Image

from conftest import DATA, FIXTURES, IFORAL, PAGE_XSD, TIMEUS
from loghi_ft.errors import UserError
from loghi_ft.pages.documents import read_page
from loghi_ft.pages.layout import read_layout, reading_order, write_layout

PAGES = DATA / "htromance-fr" / "data" / "fr"
ALTO_PAGES = DATA / "htromance-fr" / "alto-original" / "fr"
LETTER = PAGES / "bnf-2011-091-acm05-20" / "2011_091_ACM05-20_f1.xml"
POEM = PAGES / "bnf-français-2394" / "Français 2394_f24.xml"
LETTER_WITH_STAMP = PAGES / "bnf-français-3816" / "Recueil_de_lettres_originales__btv1b52507597h_15.xml"
SINGLE_COLUMN = PAGES / "bnf-français-2394" / "Français 2394_f26.xml"
# the one htromance line with a baseline and no polygon (README), which makes this page fail the schema
NO_POLYGON = PAGES / "bnf-ge-dd-2025-(-res)" / "GE DD-2025 (RES)_f21.xml"
TWO_COLUMNS = IFORAL / "foral_de_folgosinho_1217" / "2.xml"
PAGE2013 = FIXTURES / "170025120000003,0074.xml"
BSB_ALTO = FIXTURES / "alto" / "bsb00084914_00007.xml"
NS2013 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"
NS2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
METADATA = {"model": "layout-base", "version": "0.1.0"}


@pytest.fixture(scope="module")
def page_schema():
    return etree.XMLSchema(etree.parse(str(PAGE_XSD)))


def schema_errors(schema, path):
    schema.validate(etree.parse(str(path)))
    return [e.message for e in schema.error_log]


def rounded(points):
    return [(round(x), round(y)) for x, y in points]


def shuffled(layout, seed=0):
    """The layout with its regions and lines in random order and no line placed in a region."""
    rng = random.Random(seed)
    lines = [dataclasses.replace(line, region_id=None) for line in layout.lines]
    regions = list(layout.regions)
    rng.shuffle(lines)
    rng.shuffle(regions)
    return dataclasses.replace(layout, regions=regions, lines=lines)


def without(xml_path, tmp_path, local_name):
    """A copy of a real page with every element called `local_name` removed."""
    tree = etree.parse(str(xml_path))
    for element in list(tree.iter(f"{{*}}{local_name}")):
        element.getparent().remove(element)
    path = tmp_path / xml_path.name
    tree.write(str(path), xml_declaration=True, encoding="UTF-8")
    return path


# ---------------------------------------------------------------- reading

def test_reads_segmonto_region_and_line_types_of_an_escriptorium_page(data_dir):
    layout = read_layout(LETTER)
    assert (layout.width, layout.height) == (1510, 1505) and layout.problems == []
    assert layout.image_path == LETTER.with_suffix(".jpg") and layout.xml_path == LETTER
    assert [r.id for r in layout.regions] == ["eSc_textblock_551d281a", "eSc_textblock_17e96e3d",
                                              "eSc_textblock_47f34908", "eSc_textblock_afd16cd3"]
    assert {r.type for r in layout.regions} == {"MainZone"} and all(r.conf is None for r in layout.regions)
    assert layout.regions[0].polygon[:2] == [(614.0, 511.0), (630.0, 525.0)] and len(layout.regions[0].polygon) == 9
    assert collections.Counter(l.type for l in layout.lines) == {"DefaultLine": 10, "HeadingLine": 5,
                                                                  "InterlinearLine": 1}
    first = layout.lines[0]
    assert (first.id, first.region_id, first.text) == ("eSc_line_b7496bb2", "eSc_textblock_551d281a",
                                                       "Citoyen Directeur")
    assert first.baseline == [(243.0, 550.0), (615.0, 545.0)] and len(first.polygon) == 88
    assert [r.type for r in read_layout(POEM).regions] == ["MainZone", "GraphicZone"]


def test_page_and_alto_readings_of_every_htromance_page_agree(data_dir):
    regions, lines, pages = collections.Counter(), collections.Counter(), 0
    for xml in sorted(PAGES.glob("*/*.xml")):
        page, alto = read_layout(xml), read_layout(ALTO_PAGES / xml.relative_to(PAGES))
        assert (page.width, page.height, page.image_path.name) == (alto.width, alto.height, alto.image_path.name)
        assert [(r.id, r.type, r.polygon) for r in page.regions] == [(r.id, r.type, r.polygon) for r in alto.regions]
        assert [dataclasses.astuple(l) for l in page.lines] == [dataclasses.astuple(l) for l in alto.lines]
        regions.update(r.type for r in page.regions)
        lines.update(l.type for l in page.lines)
        pages += 1
    # the counts the data's README gives
    assert pages == 129
    assert regions == {"MainZone": 176, "NumberingZone": 90, "StampZone": 35, "MarginTextZone": 19,
                       "TitlePageZone": 9, "GraphicZone": 9}
    assert lines == {"DefaultLine": 2446, "HeadingLine": 68, "InterlinearLine": 24}


def test_page_whose_regions_have_no_coords_has_no_region_ground_truth(data_dir):
    layout = read_layout(TIMEUS / "PH 1858-1.xml")
    assert layout.regions == []
    assert layout.problems == ["region eSc_dummyblock_: no Coords; region skipped"]
    assert len(layout.lines) == 22 and all(l.region_id is None and l.type is None for l in layout.lines)
    assert layout.lines[0].baseline[0] == (1452.0, 2106.0) and len(layout.lines[0].baseline) == 19


@pytest.mark.parametrize("xml", [NO_POLYGON, ALTO_PAGES / NO_POLYGON.relative_to(PAGES)], ids=["page", "alto"])
def test_line_without_polygon_keeps_its_baseline(data_dir, xml):
    layout = read_layout(xml)
    line = next(l for l in layout.lines if l.id == "eSc_line_badbc441")
    assert line.polygon == [] and line.baseline == [(917.0, 847.0), (945.0, 847.0)] and line.text == "tels"
    assert len(layout.problems) == 1 and layout.problems[0].startswith("line eSc_line_badbc441: ")
    assert layout.problems[0].endswith("; kept with its baseline only")


def test_missing_baselines_are_derived_near_the_true_ones(data_dir, tmp_path):
    truth = read_layout(LETTER)
    derived = read_layout(without(LETTER, tmp_path, "Baseline"))
    assert [l.id for l in derived.lines] == [l.id for l in truth.lines]
    assert derived.problems == [f"line {l.id}: no Baseline; baseline derived from its polygon" for l in truth.lines]
    distances = []
    for made, true in zip(derived.lines, truth.lines):
        true_points = np.array(sorted(true.baseline))
        xs = np.linspace(true_points[0, 0], true_points[-1, 0], 20)
        (x0, y0), (x1, y1) = made.baseline
        distances.append(np.abs(y0 + (xs - x0) * (y1 - y0) / (x1 - x0) - np.interp(xs, *true_points.T)).mean())
    # this page: 2.4 px on average, lines 53 px high; along the polygons' lower edge itself it would be 14.2 px
    assert np.mean(distances) < 5


def test_region_types_from_transkribus_custom_page_type_and_element_kind(data_dir, tmp_path):
    assert [r.type for r in read_layout(PAGE2013).regions] == ["$pag", "$pac", "$tip", "$par"]
    cpas = FIXTURES / "page" / "cPAS-2000.xml"
    types = [r.type for r in read_layout(cpas).regions]
    # Transkribus writes a space in custom as \u0020
    assert types[:3] == ["Image/Drawing/Figure", "Machine Printed text", "Machine Printed text"]
    tree = etree.parse(str(cpas))
    for region in tree.iter("{*}ImageRegion", "{*}TextRegion"):
        del region.attrib["custom"]
    next(tree.iter("{*}TextRegion")).set("type", "heading")
    tree.write(str(tmp_path / "cPAS-2000.xml"))
    assert [r.type for r in read_layout(tmp_path / "cPAS-2000.xml").regions][:3] == ["image", "heading", "text"]


def test_alto_tags_give_types_only_when_they_name_one(data_dir):
    layout = read_layout(BSB_ALTO)
    # BT2 with a language tag beside it; Paratext and Margin blocks
    assert [r.type for r in layout.regions] == ["Main", "Paratext", "Paratext", "Paratext", "Margin"]
    # "type_label_0 train_line": a TYPE="type" tag; the dummy labels have other TYPEs and name no type
    assert [(l.id, l.type) for l in layout.lines if l.type] == [("eSc_line_192896", "heading")]
    assert layout.problems == ["line eSc_line_192879: no BASELINE; baseline derived from its polygon"]


@pytest.mark.parametrize("xml, region, ids", [
    (FIXTURES / "page" / "missing_coords_ro.xml", "r_nocoords: Coords has fewer than 3 points", ["r1", "r2"]),
    (FIXTURES / "alto" / "missing_coords_ro.xml", "tb_nocoords: no Shape/Polygon or HPOS/VPOS/WIDTH/HEIGHT",
     ["tb_1", "tb_2"]),
], ids=["page", "alto"])
def test_region_without_coordinates_is_skipped_and_its_lines_kept(data_dir, xml, region, ids):
    layout = read_layout(xml)
    assert [r.id for r in layout.regions] == ids and layout.problems == [f"region {region}; region skipped"]
    assert [l.region_id for l in layout.lines] == [ids[0], ids[0], None, ids[1]]
    assert len(layout.lines[2].polygon) == 4 and len(layout.lines[2].baseline) == 2


@pytest.mark.parametrize("xml, message", [
    ("page/invalid/dims.xml", "imageWidth 'foo' is not a number"),
    ("page/invalid/image.xml", "names no page image"),
    ("page/invalid/zero_dims_missing_image.xml", "page size not declared (0x0) and image"),
    ("alto/invalid/dims.xml", "Page WIDTH 'bar' is not a number"),
    ("alto/invalid/image.xml", "names no page image"),
    ("alto/invalid/mu.xml", "MeasurementUnit 'mm' is not supported"),
    ("alto/invalid/zero_dims_missing_image.xml", "page size not declared (0x0) and image"),
    ("schemas/alto-4-3.xsd", "not a PAGE or ALTO file"),
])
def test_unusable_files_raise_a_user_error_naming_them(data_dir, xml, message):
    with pytest.raises(UserError) as error:
        read_layout(FIXTURES / xml)
    assert str(error.value).startswith(f"{FIXTURES / xml}: ") and message in str(error.value)


@pytest.mark.parametrize("xml", ["page/zero_dims.xml", "alto/zero_dims.xml"])
def test_size_is_the_images_when_the_page_declares_none(data_dir, xml):
    layout = read_layout(FIXTURES / xml)
    assert (layout.width, layout.height) == (123, 45) and layout.regions == [] and layout.lines == []


def test_size_of_an_exif_rotated_image_is_as_opencv_decodes_it(data_dir, tmp_path):
    with Image.open(FIXTURES / "page" / "zero_dims.png") as image:
        exif = image.getexif()
        exif[0x0112] = 6  # stored 123x45, shown turned a quarter
        image.save(tmp_path / "zero_dims.jpg", exif=exif)
    page = (FIXTURES / "page" / "zero_dims.xml").read_text().replace("zero_dims.png", "zero_dims.jpg")
    (tmp_path / "zero_dims.xml").write_text(page)
    layout = read_layout(tmp_path / "zero_dims.xml")
    assert (layout.height, layout.width) == cv2.imread(str(tmp_path / "zero_dims.jpg")).shape[:2] == (123, 45)


# ---------------------------------------------------------------- writing

def test_page_with_no_writing_is_written_valid_and_empty(data_dir, tmp_path, page_schema):
    blank = reading_order(read_layout(FIXTURES / "page" / "zero_dims.xml"))
    write_layout(blank, tmp_path / "out.xml", image_filename="zero_dims.png", metadata=METADATA)
    assert schema_errors(page_schema, tmp_path / "out.xml") == []
    back = read_layout(tmp_path / "out.xml")
    assert (back.width, back.height, back.regions, back.lines) == (123, 45, [], [])


@pytest.mark.parametrize("xml", [LETTER, POEM, NO_POLYGON, IFORAL / "foral_de_gouveia_1217" / "1.xml"],
                         ids=["letter", "poem", "no-polygon", "iforal"])
def test_written_page_validates_and_reads_back_as_the_layout(data_dir, tmp_path, page_schema, xml):
    layout = read_layout(xml)
    out = tmp_path / "out.xml"
    write_layout(layout, out, image_filename=layout.image_path.name, metadata=METADATA)
    assert schema_errors(page_schema, out) == []
    back = read_layout(tmp_path / "out.xml")
    assert (back.width, back.height, back.image_path.name) == (layout.width, layout.height, layout.image_path.name)
    assert [(r.id, r.type, rounded(r.polygon)) for r in back.regions] == \
           [(r.id, r.type, rounded(r.polygon)) for r in layout.regions]
    assert [(l.id, l.type, l.region_id, rounded(l.baseline), l.text) for l in back.lines] == \
           [(l.id, l.type, l.region_id, rounded(l.baseline), l.text) for l in layout.lines]
    kept = [(b.polygon, rounded(l.polygon)) for b, l in zip(back.lines, layout.lines) if l.polygon]
    assert all(b == l for b, l in kept) and back.problems == []
    root = etree.parse(str(out)).getroot()
    assert root.nsmap[None] == NS2019 and root.findtext(f"{{{NS2019}}}Metadata/{{{NS2019}}}Creator") == "loghi-ft"
    item = root.find(f"{{{NS2019}}}Metadata/{{{NS2019}}}MetadataItem")
    assert item.get("value") == "model=layout-base version=0.1.0"
    refs = root.findall(f".//{{{NS2019}}}ReadingOrder/{{{NS2019}}}OrderedGroup/{{{NS2019}}}RegionRefIndexed")
    assert [(r.get("index"), r.get("regionRef")) for r in refs] == \
           [(str(i), r.id) for i, r in enumerate(layout.regions)]


def test_page_with_a_line_without_polygon_becomes_valid(data_dir, tmp_path, page_schema):
    assert schema_errors(page_schema, NO_POLYGON) != []
    layout = read_layout(NO_POLYGON)
    write_layout(layout, tmp_path / "out.xml", image_filename=NO_POLYGON.with_suffix(".jpg").name, metadata=METADATA)
    line = next(l for l in read_layout(tmp_path / "out.xml").lines if l.id == "eSc_line_badbc441")
    # the band one line height (the page's median, 65 px) above the baseline
    assert line.polygon == [(917.0, 847.0), (945.0, 847.0), (945.0, 782.0), (917.0, 782.0)]


def test_written_ids_types_and_points_are_made_valid(data_dir, tmp_path, page_schema):
    layout = read_layout(LETTER)
    regions = [dataclasses.replace(layout.regions[0], id="1 region", conf=0.75),
               dataclasses.replace(layout.regions[1], type="paragraph"),
               dataclasses.replace(layout.regions[2], type="Main Zone; {odd}", id=layout.regions[1].id)]
    orphan = layout.regions[3].id  # dropped: its lines belong to no region now
    lines = [dataclasses.replace(l, region_id="1 region", conf=0.5) if l.region_id == layout.regions[0].id else l
             for l in layout.lines]
    lines[-1] = dataclasses.replace(lines[-1], baseline=[(-40.0, 1500.2), (1600.0, 1700.0)])
    out = tmp_path / "out.xml"
    write_layout(dataclasses.replace(layout, regions=regions, lines=lines), out, image_filename="p.jpg",
                 metadata=METADATA)
    assert schema_errors(page_schema, out) == []
    back = read_layout(out)
    assert [(r.id, r.type) for r in back.regions] == [
        ("r_1", "MainZone"), (layout.regions[1].id, "paragraph"), ("r_3", "Main Zone; {odd}"), ("r_4", "text")]
    assert back.regions[0].conf == 0.75 and back.lines[0].conf == 0.5 and back.lines[0].region_id == "r_1"
    # @type only where PAGE has the type
    assert [e.get("type") for e in etree.parse(str(out)).iter(f"{{{NS2019}}}TextRegion")] == [
        None, "paragraph", None, None]
    moved = [l for l in back.lines if l.region_id == "r_4"]
    # the lines of the dropped region and of the one whose id was taken
    assert [l.id for l in moved] == [l.id for l in layout.lines if l.region_id in (orphan, layout.regions[2].id)]
    assert back.lines[-1].baseline == [(0.0, 1500.0), (1510.0, 1505.0)]


def test_layout_written_into_a_page_without_lines_fills_its_regions(data_dir, tmp_path, page_schema):
    source = IFORAL / "foral_de_guarda_1217" / "1.xml"
    bare = without(source, tmp_path, "TextLine")
    layout = reading_order(read_layout(source))
    write_layout(layout, tmp_path / "out.xml", image_filename="ignored.jpg", metadata=METADATA, base_xml=bare)
    assert schema_errors(page_schema, tmp_path / "out.xml") == []
    back = read_layout(tmp_path / "out.xml")
    assert [r.id for r in back.regions] == [r.id for r in layout.regions] == ["eSc_textblock_48a74861"]
    assert [(l.id, l.region_id, rounded(l.baseline)) for l in back.lines] == \
           [(l.id, l.region_id, rounded(l.baseline)) for l in layout.lines]
    root = etree.parse(str(tmp_path / "out.xml")).getroot()
    assert root.findtext(f"{{{NS2019}}}Metadata/{{{NS2019}}}Creator") == "escriptorium"
    assert root.find(f"{{{NS2019}}}Page").get("imageFilename") == "1.jpg"
    assert [e.get("name") for e in root.iter(f"{{{NS2019}}}MetadataItem")] == ["loghi-ft"]


def test_replacing_the_lines_of_a_page_2013_keeps_its_namespace(data_dir, tmp_path):
    layout = read_layout(PAGE2013)
    relabelled = dataclasses.replace(layout, lines=[dataclasses.replace(l, text=f"line {i}")
                                                    for i, l in enumerate(layout.lines)])
    write_layout(relabelled, tmp_path / "kept.xml", image_filename="x.jpg", metadata=METADATA, base_xml=PAGE2013,
                 replace_lines=True)
    page = read_page(tmp_path / "kept.xml")
    assert page.format == "page2013" and [l.text for l in page.lines] == [f"line {i}" for i in range(44)]
    assert [l.region_id for l in page.lines] == [l.region_id for l in layout.lines]
    root = etree.parse(str(tmp_path / "kept.xml")).getroot()
    assert "loghi-ft: model=layout-base" in root.findtext(f"{{{NS2013}}}Metadata/{{{NS2013}}}Comments")
    # new regions in place of the old ones: those left empty go, with nothing referring to them
    renamed = dataclasses.replace(layout, regions=[dataclasses.replace(r, id=f"new_{r.id}") for r in layout.regions],
                                  lines=[dataclasses.replace(l, region_id=f"new_{l.region_id}") for l in layout.lines])
    write_layout(renamed, tmp_path / "new.xml", image_filename="x.jpg", metadata=METADATA, base_xml=PAGE2013,
                 replace_lines=True)
    back = read_layout(tmp_path / "new.xml")
    assert [r.id for r in back.regions] == [f"new_{r.id}" for r in layout.regions] and len(back.lines) == 44
    assert etree.parse(str(tmp_path / "new.xml")).getroot().nsmap[None] == NS2013


def test_replacing_lines_drops_emptied_regions_from_nested_reading_order_groups(data_dir, tmp_path):
    base = FIXTURES / "page" / "explicit_ro_unordered.xml"  # r1, r2 in one OrderedGroup, r3 in another
    layout = read_layout(base)
    keep_r3 = [dataclasses.replace(r, id=f"new_{r.id}") if r.id != "r3" else r for r in layout.regions]
    lines = [dataclasses.replace(l, region_id=f"new_{l.region_id}") if l.region_id != "r3" else l
             for l in layout.lines]
    write_layout(dataclasses.replace(layout, regions=keep_r3, lines=lines), tmp_path / "out.xml",
                 image_filename="x.jpg", metadata=METADATA, base_xml=base, replace_lines=True)
    order = etree.parse(str(tmp_path / "out.xml")).find(f".//{{{NS2013}}}ReadingOrder")
    # the main text's group lost both its regions and went; the margin's stays; ours join the unordered group
    assert [(etree.QName(e).localname, e.get("id") or e.get("regionRef")) for e in order.iter("{*}*")][1:] == [
        ("UnorderedGroup", "ug_top"), ("OrderedGroup", "ro_margin"), ("RegionRefIndexed", "r3"),
        ("RegionRef", "new_r1"), ("RegionRef", "new_r2")]
    assert [(l.id, l.region_id) for l in read_layout(tmp_path / "out.xml").lines] == [
        ("l3", "r3"), ("l1", "new_r1"), ("l2", "new_r2")]


def test_base_that_is_not_page_is_refused(data_dir, tmp_path):
    with pytest.raises(UserError, match="a layout is written into PAGE only"):
        write_layout(read_layout(BSB_ALTO), tmp_path / "out.xml", image_filename="x.jpg", metadata=METADATA,
                     base_xml=BSB_ALTO)
    assert not (tmp_path / "out.xml").exists()


# ---------------------------------------------------------------- reading order

@pytest.mark.parametrize("xml", [SINGLE_COLUMN, LETTER_WITH_STAMP, TWO_COLUMNS, TIMEUS / "PH 1858-1.xml"],
                         ids=["single-column", "stamp-and-page-number", "two-columns-one-region", "no-regions"])
def test_reading_order_of_shuffled_ground_truth_is_the_files(data_dir, xml):
    truth = read_layout(xml)
    ordered = reading_order(shuffled(truth))
    assert [l.id for l in ordered.lines] == [l.id for l in truth.lines]
    if truth.regions:
        assert [l.region_id for l in ordered.lines] == [l.region_id for l in truth.lines]
        holding = {l.region_id for l in truth.lines}
        first_seen = list(dict.fromkeys(l.region_id for l in truth.lines))
        assert [r.id for r in ordered.regions if r.id in holding] == first_seen
        assert len(ordered.regions) == len(truth.regions)
    else:  # all lines in one new region around them
        assert [(r.id, r.type) for r in ordered.regions] == [("region_1", "text")]
        assert {l.region_id for l in ordered.lines} == {"region_1"}


def test_reading_order_agrees_with_most_htromance_pages(data_dir):
    # Measured: 59 of the 129 pages come back exactly in the file's line order, 24 of the 31 with one region; most
    # of the others differ by the annotators' convention: page numbers (NumberingZone, at the top) and stamps listed
    # after the main text, which our top-to-bottom rule reads first, interlinear lines after the line they amend.
    # timeus-1858: 150 of 159 pages (the others begin with the end of a case written at the page's top).
    exact = single = single_exact = 0
    for xml in sorted(PAGES.glob("*/*.xml")):
        truth = read_layout(xml)
        same = [l.id for l in reading_order(shuffled(truth)).lines] == [l.id for l in truth.lines]
        exact += same
        single += len(truth.regions) == 1
        single_exact += same and len(truth.regions) == 1
    assert exact >= 59 and (single, single_exact) == (31, 24)


def test_line_outside_every_region_goes_to_a_new_region_or_the_nearest(data_dir):
    layout = read_layout(LETTER)
    heading, main = layout.regions[0], layout.regions[1]
    ordered = reading_order(dataclasses.replace(layout, regions=layout.regions[1:]))
    # "Citoyen Directeur" lies 138 px above the main text, lines are 53 px high: a region of its own
    new = next(r for r in ordered.regions if r.id not in {r.id for r in layout.regions})
    assert new.type == "text" and [l.id for l in ordered.lines if l.region_id == new.id] == ["eSc_line_b7496bb2"]
    # the main text region shrunk by 10 px at the bottom still takes its last line, which now sticks out
    ys = [y for _, y in main.polygon]
    shrunk = dataclasses.replace(main, polygon=[(x, min(y, max(ys) - 10)) for x, y in main.polygon])
    ordered = reading_order(dataclasses.replace(layout, regions=[heading, shrunk] + layout.regions[2:]))
    assert [l.region_id for l in ordered.lines if l.region_id == main.id] == \
           [l.region_id for l in layout.lines if l.region_id == main.id]

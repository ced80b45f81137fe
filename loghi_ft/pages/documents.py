"""PAGE XML (2013, 2019) and ALTO 4 line data: read pages into records, write recognised text back."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from lxml import etree

from loghi_ft.atomic import write_atomic
from loghi_ft.errors import UserError

PAGE_NS = re.compile(r"^https?://schema\.primaresearch\.org/PAGE/gts/pagecontent/(\d{4}-\d{2}-\d{2})$")
ALTO_NS = re.compile(r"^https?://www\.loc\.gov/standards/alto/ns-v[234]#$")
PAGE_FORMATS = {"2013-07-15": "page2013", "2019-07-15": "page2019"}
NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")
# the DOCTYPE's internal subset, where entities are declared; PAGE and ALTO never need one
INTERNAL_DTD = re.compile(rb"<!DOCTYPE[^\[>]*\[(.*?)\]\s*>", re.S)
ENTITIES = "{}: declares XML entities (<!ENTITY>); refused, since expanding them can exhaust memory or read other files"
# Transkribus keeps reading order in a custom attribute: custom="readingOrder {index:3;}"
CUSTOM_INDEX = re.compile(r"readingOrder\s*\{[^}]*index:\s*(\d+)")


@dataclass
class TextLine:
    id: str
    polygon: list[tuple[float, float]]          # Coords points (x, y) in page pixels
    baseline: list[tuple[float, float]] | None  # None when absent
    text: str                                   # TextEquiv/Unicode ("" when none)
    region_id: str | None = None


@dataclass
class Page:
    xml_path: Path
    image_path: Path  # resolved (relative to the XML; for a page/ subfolder, the parent folder)
    width: int        # as declared in the XML; 0 when the XML declares none (take the image's)
    height: int
    format: str       # "page2013" | "page2019" | "alto"
    lines: list[TextLine]
    problems: list[str] = field(default_factory=list)  # lines dropped while reading, one message each


@dataclass
class WordResult:
    text: str
    conf: float
    polygon: list[tuple[float, float]]


@dataclass
class LineResult:
    text: str
    conf: float
    words: list[WordResult] = field(default_factory=list)


def find_pages(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """PAGE/ALTO files among `inputs` (files, or folders searched recursively), sorted within each folder."""
    seen = set()
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            candidates = sorted(p for p in item.rglob("*") if p.suffix.lower() == ".xml" and p.is_file())
        elif item.is_file():
            candidates = [item]
        else:
            raise UserError(f"{item}: no such file or folder")
        for path in candidates:
            key = path.resolve()
            if key in seen:
                continue
            seen.add(key)
            # an explicitly named file is always returned, so a bad one gets its message from read_page
            if not item.is_dir() or _root_kind(path) is not None:
                yield path


def read_page(xml_path: str | Path) -> Page:
    """Read one PAGE or ALTO file; UserError("<file>: <reason>") when it cannot be used."""
    xml_path = Path(xml_path)
    root = _parse(xml_path)
    kind = _kind(root)
    if kind is None:
        raise UserError(f"{xml_path}: not a PAGE or ALTO file (root element {root.tag})")
    if kind == "alto":
        return _read_alto(xml_path, root)
    return _read_page_xml(xml_path, root, kind)


def write_page(xml_path: str | Path, output_path: str | Path, results: dict[str, LineResult],
               metadata: dict[str, str]) -> None:
    """Copy `xml_path` to `output_path` with the text of the lines in `results` set; atomic, may be in place."""
    xml_path, output_path = Path(xml_path), Path(output_path)
    root = _parse(xml_path)
    kind = _kind(root)
    if kind is None:
        raise UserError(f"{xml_path}: not a PAGE or ALTO file (root element {root.tag})")
    ns = etree.QName(root).namespace
    if kind == "alto":
        _write_alto(root, ns, results, metadata)
    else:
        _write_page_xml(root, ns, kind, results, metadata)
    tree = root.getroottree()
    # lxml reports standalone="no" even when the declaration had none: keep what the file said
    declared = re.search(rb"^<\?xml[^>]*standalone", xml_path.read_bytes()[:200]) is not None
    data = etree.tostring(tree, xml_declaration=True, encoding="UTF-8",
                          standalone=tree.docinfo.standalone if declared else None)
    write_atomic(output_path, data)


# ---------------------------------------------------------------- parsing

def _parser() -> etree.XMLParser:
    # never fetch or expand anything the document points at: user files may come from anywhere
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False,
                           remove_blank_text=False)


def _parse(xml_path: Path) -> etree._Element:
    try:
        data = xml_path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{xml_path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{xml_path}: is a folder, not an XML file") from None
    except OSError as exc:
        raise UserError(f"{xml_path}: cannot read ({exc.strerror})") from None
    if not data.strip():
        raise UserError(f"{xml_path}: empty file")
    subset = INTERNAL_DTD.search(data)
    if subset and b"<!ENTITY" in subset.group(1):
        raise UserError(ENTITIES.format(xml_path))
    try:
        root = etree.fromstring(data, _parser(), base_url=str(xml_path))
    except etree.XMLSyntaxError as exc:
        raise UserError(f"{xml_path}: not well-formed XML ({_one_line(str(exc))})") from None
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise UserError(ENTITIES.format(xml_path))
    return root


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _kind(root: etree._Element) -> str | None:
    if not isinstance(root.tag, str):
        return None
    qname = etree.QName(root)
    ns = qname.namespace or ""
    m = PAGE_NS.match(ns)
    if qname.localname == "PcGts" and m:
        return PAGE_FORMATS.get(m.group(1), "page-" + m.group(1))
    if qname.localname == "alto" and ALTO_NS.match(ns):
        return "alto"
    return None


def _root_kind(path: Path) -> str | None:
    """Kind of a file judged from its root element alone, without reading the rest."""
    try:
        for _, elem in etree.iterparse(str(path), events=("start",), resolve_entities=False,
                                       no_network=True, load_dtd=False):
            return _kind(elem) or None
    except (etree.XMLSyntaxError, OSError):
        # an .xml that is not even XML is not a page: find_pages skips it silently
        return None
    return None


def _points(text: str | None) -> list[tuple[float, float]]:
    """Coordinates from "x,y x,y" (PAGE) or "x y x y" / "x,y x,y" (ALTO); ValueError when unpaired."""
    nums = [float(n) for n in NUMBER.findall(text or "")]
    if len(nums) % 2:
        raise ValueError(f"odd number of coordinates in '{_shorten(text)}'")
    return list(zip(nums[0::2], nums[1::2]))


def _shorten(text: str | None, n: int = 40) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[:n] + "..."


def _dimension(xml_path: Path, value: str | None, name: str) -> int:
    if value is None or value.strip() == "":
        return 0
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{xml_path}: {name} '{value}' is not a number") from None
    if number < 0 or number != number:
        raise UserError(f"{xml_path}: {name} '{value}' is negative")
    return int(round(number))


def _image_path(xml_path: Path, name: str | None) -> Path:
    if not name or not name.strip():
        raise UserError(f"{xml_path}: names no page image")
    name = name.strip()
    if name.startswith("file://"):
        name = name[len("file://"):]
    rel = Path(name)
    if rel.is_absolute():
        return rel
    here = xml_path.parent / rel
    # Transkribus and Loghi keep the XML in a page/ subfolder of the images' folder
    if xml_path.parent.name == "page" and not here.exists():
        return xml_path.parent.parent / rel
    return here


def _check_size(xml_path: Path, image_path: Path, width: int, height: int) -> None:
    if (width <= 0 or height <= 0) and not image_path.exists():
        raise UserError(f"{xml_path}: page size not declared ({width}x{height}) and image {image_path} not found")


def _order(elems: list[etree._Element]) -> list[etree._Element]:
    """Sort by Transkribus' custom readingOrder index when every element has one; else document order."""
    keys = [CUSTOM_INDEX.search(e.get("custom") or "") for e in elems]
    if not all(keys):
        return elems
    return [e for _, _, e in sorted((int(k.group(1)), i, e) for i, (k, e) in enumerate(zip(keys, elems)))]


def _page_region_order(page: etree._Element, ns: str) -> list[etree._Element]:
    """TextRegions in reading order: the ReadingOrder element's (else Transkribus' custom index), then the rest."""
    regions = list(page.iter(f"{{{ns}}}TextRegion"))
    ro = page.find(f"{{{ns}}}ReadingOrder")
    if ro is not None:
        by_id = {r.get("id"): r for r in regions}
        ordered = list(dict.fromkeys(by_id[ref] for ref in _ro_refs(ro, ns) if ref in by_id))
    else:
        ordered = _order([r for r in regions if r.getparent() is page])
    placed = set(ordered)
    return ordered + [r for r in regions if r not in placed]


def _ro_refs(group: etree._Element, ns: str) -> list[str]:
    """Region ids of a reading-order group, depth first; indexed children sorted by @index."""
    children = [c for c in group if isinstance(c.tag, str)]
    if any(c.get("index") is not None for c in children):
        children.sort(key=lambda c: _int(c.get("index")))
    refs = []
    for c in children:
        local = etree.QName(c).localname
        if c.get("regionRef"):
            refs.append(c.get("regionRef"))
        if local.endswith("Group") or local.endswith("Indexed") or local == "ReadingOrder":
            refs += _ro_refs(c, ns)
    return refs


def _int(value: str | None) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1 << 30


def _read_page_xml(xml_path: Path, root: etree._Element, kind: str) -> Page:
    if kind not in PAGE_FORMATS.values():
        raise UserError(f"{xml_path}: PAGE version {kind[5:]} is not supported (only 2013-07-15 and 2019-07-15)")
    ns = etree.QName(root).namespace
    page = root.find(f"{{{ns}}}Page")
    if page is None:
        raise UserError(f"{xml_path}: no Page element")
    width = _dimension(xml_path, page.get("imageWidth"), "imageWidth")
    height = _dimension(xml_path, page.get("imageHeight"), "imageHeight")
    image_path = _image_path(xml_path, page.get("imageFilename"))
    _check_size(xml_path, image_path, width, height)
    lines, problems, seen = [], [], set()
    for region in _page_region_order(page, ns):
        for line_el in _order(region.findall(f"{{{ns}}}TextLine")):
            line_id = line_el.get("id") or ""
            where = f"line {line_id or '(no id)'}"
            problem = _claim_id(line_id, seen, "id")
            if problem:
                problems.append(f"{where}: {problem}")
                continue
            coords = line_el.find(f"{{{ns}}}Coords")
            try:
                polygon = _points(coords.get("points")) if coords is not None else []
                baseline_el = line_el.find(f"{{{ns}}}Baseline")
                baseline = _points(baseline_el.get("points")) if baseline_el is not None else None
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if coords is None:
                problems.append(f"{where}: has no Coords")
                continue
            if len(polygon) < 3:
                problems.append(f"{where}: Coords has fewer than 3 points")
                continue
            if baseline is not None and len(baseline) < 2:
                baseline = None
            lines.append(TextLine(line_id, polygon, baseline, _page_text(line_el, ns), region.get("id")))
    return Page(xml_path, image_path, width, height, kind, lines, problems)


def _claim_id(line_id: str, seen: set[str], attr: str) -> str | None:
    """Why a line cannot be used for its identifier (none, or one used before); else record it."""
    if not line_id:
        return f"has no {attr}"
    if line_id in seen:
        return f"{attr} used twice on this page"
    seen.add(line_id)
    return None


def _page_text(line_el: etree._Element, ns: str) -> str:
    equivs = line_el.findall(f"{{{ns}}}TextEquiv")
    if not equivs:
        return ""
    # several readings: PAGE says index 0 (or the lowest) is the main one
    equiv = min(equivs, key=lambda e: _int(e.get("index")))
    uni = equiv.find(f"{{{ns}}}Unicode")
    return (uni.text or "") if uni is not None else ""


def _read_alto(xml_path: Path, root: etree._Element) -> Page:
    ns = etree.QName(root).namespace
    q = lambda name: f"{{{ns}}}{name}"  # noqa: E731
    unit = root.findtext(f"{q('Description')}/{q('MeasurementUnit')}")
    if unit is not None and unit.strip() not in ("pixel", ""):
        raise UserError(f"{xml_path}: MeasurementUnit '{unit.strip()}' is not supported (only pixel)")
    page = root.find(f"{q('Layout')}/{q('Page')}")
    if page is None:
        raise UserError(f"{xml_path}: no Layout/Page element")
    width = _dimension(xml_path, page.get("WIDTH"), "Page WIDTH")
    height = _dimension(xml_path, page.get("HEIGHT"), "Page HEIGHT")
    image_path = _image_path(xml_path, root.findtext(f"{q('Description')}/{q('sourceImageInformation')}/{q('fileName')}"))
    _check_size(xml_path, image_path, width, height)
    lines, problems, seen = [], [], set()
    for line_el in page.iter(q("TextLine")):
        line_id = line_el.get("ID") or ""
        where = f"line {line_id or '(no id)'}"
        problem = _claim_id(line_id, seen, "ID")
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        try:
            polygon = _alto_polygon(line_el, q)
            baseline = _alto_baseline(line_el.get("BASELINE"), polygon)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if len(polygon) < 3:
            problems.append(f"{where}: has neither a Shape/Polygon nor HPOS/VPOS/WIDTH/HEIGHT")
            continue
        block = line_el.getparent()
        lines.append(TextLine(line_id, polygon, baseline, _alto_text(line_el, q),
                              block.get("ID") if block is not None else None))
    return Page(xml_path, image_path, width, height, "alto", lines, problems)


def _alto_polygon(line_el: etree._Element, q) -> list[tuple[float, float]]:
    poly = line_el.find(f"{q('Shape')}/{q('Polygon')}")
    if poly is not None:
        return _points(poly.get("POINTS"))
    box = [line_el.get(a) for a in ("HPOS", "VPOS", "WIDTH", "HEIGHT")]
    if any(v is None for v in box):
        return []
    try:
        x, y, w, h = map(float, box)
    except ValueError:
        raise ValueError("HPOS/VPOS/WIDTH/HEIGHT are not numbers") from None
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


def _alto_baseline(value: str | None, polygon: list[tuple[float, float]]) -> list[tuple[float, float]] | None:
    if not value or not value.strip():
        return None
    nums = NUMBER.findall(value)
    if len(nums) == 1 and polygon:
        # ALTO before 4.2: BASELINE is one vertical position across the line's box
        y = float(nums[0])
        xs = [p[0] for p in polygon]
        return [(min(xs), y), (max(xs), y)]
    points = _points(value)
    return points if len(points) >= 2 else None


def _alto_text(line_el: etree._Element, q) -> str:
    text, after_string = "", False
    for child in line_el:
        if child.tag == q("SP"):
            text, after_string = text + " ", False
        elif child.tag in (q("String"), q("HYP")):
            # Strings with no SP between them are still separate words (eScriptorium writes them so)
            text += (" " if after_string and child.tag == q("String") else "") + (child.get("CONTENT") or "")
            after_string = True
    return text


# ---------------------------------------------------------------- writing

def _conf(value: float) -> str:
    return f"{min(1.0, max(0.0, float(value))):.4f}"


def _points_attr(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{int(round(x))},{int(round(y))}" for x, y in points)


def _text_equiv(ns: str, text: str, conf: float) -> etree._Element:
    equiv = etree.Element(f"{{{ns}}}TextEquiv", conf=_conf(conf))
    etree.SubElement(equiv, f"{{{ns}}}Unicode").text = text
    return equiv


def _insert_before(parent: etree._Element, new: etree._Element, later: tuple[str, ...]) -> None:
    """Insert `new` before the first child whose local name is in `later` (schema order), else append."""
    for i, child in enumerate(parent):
        if isinstance(child.tag, str) and etree.QName(child).localname in later:
            parent.insert(i, new)
            return
    parent.append(new)


def _write_page_xml(root: etree._Element, ns: str, kind: str, results: dict[str, LineResult],
                    metadata: dict[str, str]) -> None:
    for line_el in root.iter(f"{{{ns}}}TextLine"):
        result = results.get(line_el.get("id"))
        if result is None:
            continue
        old = line_el.findall(f"{{{ns}}}TextEquiv")
        new = _text_equiv(ns, result.text, result.conf)
        if old:
            new.tail = old[0].tail
            line_el.replace(old[0], new)
            for extra in old[1:]:
                line_el.remove(extra)
        else:
            _insert_before(line_el, new, ("TextStyle", "UserDefined", "Labels"))
        words = [w for w in result.words if len(w.polygon) >= 3]
        if words:
            for w in line_el.findall(f"{{{ns}}}Word"):
                line_el.remove(w)
            for i, w in enumerate(words):
                word_el = etree.Element(f"{{{ns}}}Word", id=f"{line_el.get('id')}_w{i}")
                etree.SubElement(word_el, f"{{{ns}}}Coords", points=_points_attr(w.polygon))
                word_el.append(_text_equiv(ns, w.text, w.conf))
                _insert_before(line_el, word_el, ("TextEquiv", "TextStyle", "UserDefined", "Labels"))
    _page_metadata(root, ns, kind, metadata)


def _page_metadata(root: etree._Element, ns: str, kind: str, metadata: dict[str, str]) -> None:
    meta = root.find(f"{{{ns}}}Metadata")
    if meta is None:
        from datetime import datetime, timezone
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        meta = etree.Element(f"{{{ns}}}Metadata")
        for name, text in (("Creator", "loghi-ft"), ("Created", now), ("LastChange", now)):
            etree.SubElement(meta, f"{{{ns}}}{name}").text = text
        root.insert(0, meta)
    value = " ".join(f"{k}={v}" for k, v in metadata.items())
    if kind == "page2013":
        # the 2013 schema has no MetadataItem; Comments is the one free-text place it allows
        comments = meta.find(f"{{{ns}}}Comments")
        if comments is None:
            comments = etree.Element(f"{{{ns}}}Comments")
            _insert_before(meta, comments, ("UserDefined",))
        comments.text = ((comments.text + "\n") if comments.text else "") + f"loghi-ft: {value}"
        return
    item = etree.Element(f"{{{ns}}}MetadataItem", type="processingStep", name="loghi-ft", value=value)
    labels = etree.SubElement(item, f"{{{ns}}}Labels")
    for k, v in metadata.items():
        etree.SubElement(labels, f"{{{ns}}}Label", value=str(v), type=str(k))
    meta.append(item)


def _write_alto(root: etree._Element, ns: str, results: dict[str, LineResult], metadata: dict[str, str]) -> None:
    q = lambda name: f"{{{ns}}}{name}"  # noqa: E731
    for line_el in root.iter(q("TextLine")):
        result = results.get(line_el.get("ID"))
        if result is None:
            continue
        keep_tail = None
        for child in list(line_el):
            if child.tag in (q("String"), q("SP"), q("HYP")):
                keep_tail = keep_tail or child.tail
                line_el.remove(child)
        words = [w for w in result.words if len(w.polygon) >= 3] or [None]
        for i, w in enumerate(words):
            if i:
                line_el.append(etree.Element(q("SP")))
            if w is None:
                string = etree.Element(q("String"), CONTENT=result.text, WC=_conf(result.conf))
                for a in ("HPOS", "VPOS", "WIDTH", "HEIGHT"):
                    if line_el.get(a) is not None:
                        string.set(a, line_el.get(a))
            else:
                xs, ys = [p[0] for p in w.polygon], [p[1] for p in w.polygon]
                string = etree.Element(q("String"), CONTENT=w.text, WC=_conf(w.conf),
                                       HPOS=str(round(min(xs))), VPOS=str(round(min(ys))),
                                       WIDTH=str(round(max(xs) - min(xs))), HEIGHT=str(round(max(ys) - min(ys))))
            string.tail = keep_tail
            line_el.append(string)
    _alto_metadata(root, q, metadata)


def _alto_metadata(root: etree._Element, q, metadata: dict[str, str]) -> None:
    desc = root.find(q("Description"))
    if desc is None:
        desc = etree.Element(q("Description"))
        root.insert(0, desc)
    step = etree.Element(q("Processing"), ID=_unique_id(root, "loghi_ft_processing"))
    etree.SubElement(step, q("processingStepSettings")).text = " ".join(f"{k}={v}" for k, v in metadata.items())
    software = etree.SubElement(step, q("processingSoftware"))
    etree.SubElement(software, q("softwareName")).text = "loghi-ft"
    if metadata.get("version"):
        etree.SubElement(software, q("softwareVersion")).text = str(metadata["version"])
    desc.append(step)


def _unique_id(root: etree._Element, base: str) -> str:
    taken = {e.get("ID") for e in root.iter() if isinstance(e.tag, str) and e.get("ID")}
    n, candidate = 0, base
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    return candidate

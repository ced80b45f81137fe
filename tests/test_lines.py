"""Cutting line strips from real page images: height, masking, straightening, bad polygons and images."""

import dataclasses
import shutil

import cv2
import numpy as np
import pytest

from conftest import FIXTURES, TIMEUS
from loghi_ft.errors import UserError
from loghi_ft.pages.lines import LineError, cut_line, cut_page, load_image
from loghi_ft.pages.documents import TextLine, read_page

PAGE = TIMEUS / "PH 1858-1.xml"


@pytest.fixture(scope="module")
def page():
    return read_page(PAGE)


@pytest.fixture(scope="module")
def image(page):
    return load_image(page.image_path)


def line_by_id(page, line_id):
    return next(l for l in page.lines if l.id == line_id)


def correlation(a, b):
    width = min(a.shape[1], b.shape[1])
    a, b = a[:, :width].astype(float).ravel(), b[:, :width].astype(float).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_load_image_gives_2d_uint8_at_full_and_reduced_size(page, image):
    assert image.dtype == np.uint8 and image.shape == (4608, 3072)
    assert load_image(page.image_path, reduce=2).shape == (2304, 1536)


def test_every_line_of_a_real_page_is_a_strip_of_the_asked_height(page, image):
    results = list(cut_page(page, 64, image))
    assert [r[0].id for r in results] == [l.id for l in page.lines]
    assert all(reason is None for _, _, reason in results)
    for line, strip, _ in results:
        assert strip.dtype == np.uint8 and strip.ndim == 2 and strip.shape[0] == 64
        xs = [p[0] for p in line.polygon]
        # aspect ratio kept: width follows the line's length over its height
        assert 1 <= strip.shape[1] <= (max(xs) - min(xs)) * 64 / 40
    assert cut_line(image, page.lines[2], 48).shape[0] == 48


def test_without_baseline_the_box_is_cut_and_outside_the_polygon_is_white(page, image):
    line = line_by_id(page, "r3l15")
    xs, ys = [p[0] for p in line.polygon], [p[1] for p in line.polygon]
    x0, y0, x1, y1 = int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys))
    # a triangle: its bounding box is the line's; the upper right half lies outside it
    triangle = [(x0, y0), (x0, y1), (x1, y1)]
    box_height = y1 - y0 + 1
    strip = cut_line(image, TextLine("t", triangle, None, ""), height=box_height)
    assert strip.shape == (box_height, x1 - x0 + 1)
    mask = np.zeros_like(strip)
    cv2.fillPoly(mask, [np.array(triangle, np.int32) - [x0, y0]], 255)
    inside = cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0
    outside = cv2.dilate(mask, np.ones((3, 3), np.uint8)) == 0
    assert (strip[outside] == 255).all()
    crop = image[y0:y1 + 1, x0:x1 + 1]
    assert (strip[inside] == crop[inside]).all()
    assert crop[outside].mean() < 240  # the paper itself is not white, so the test can tell


def test_outside_a_notched_polygon_is_white_in_a_straightened_strip(image):
    # a real stretch of the page, polygon with a notch cut from its top right quarter
    x0, y0, x1, y1 = 1451, 2019, 1900, 2135
    xm, ym = (x0 + x1) // 2, (y0 + y1) // 2
    polygon = [(x0, y0), (xm, y0), (xm, ym), (x1, ym), (x1, y1), (x0, y1)]
    line = TextLine("notch", polygon, [(x0, 2106), (x1, 2106)], "")
    strip = cut_line(image, line, 64)
    top_right = strip[2:int(64 * (ym - y0) / (y1 - y0)) - 2, strip.shape[1] // 2 + 2:]
    assert top_right.size and (top_right == 255).all()
    assert strip[:, : strip.shape[1] // 2 - 2].mean() < 240


def rotate_line(image, line, degrees):
    h, w = image.shape
    cx, cy = np.mean(line.polygon, axis=0)
    matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), degrees, 1.0)
    rotated = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=255)
    move = lambda pts: [tuple(matrix @ np.array([x, y, 1.0])) for x, y in pts]  # noqa: E731
    return rotated, dataclasses.replace(line, polygon=move(line.polygon), baseline=move(line.baseline))


def test_deskew_levels_a_tilted_baseline(page, image):
    line = line_by_id(page, "r3l15")  # a long line, 2100 px wide
    level = cut_line(image, line, 64)
    rotated_image, tilted = rotate_line(image, line, 6.0)
    ys = [p[1] for p in tilted.baseline]
    assert max(ys) - min(ys) > 150  # the baseline now climbs by more than a line's height
    straightened = cut_line(rotated_image, tilted, 64)
    assert abs(straightened.shape[1] - level.shape[1]) <= 3
    assert correlation(straightened, level) > 0.85
    # cutting the tilted box without straightening gives a different, worse strip
    boxed = cut_line(rotated_image, dataclasses.replace(tilted, baseline=None), 64)
    assert correlation(cv2.resize(boxed, level.shape[::-1]), level) < 0.5


def test_dewarp_follows_a_curved_baseline():
    # ink drawn along a wave: after dewarping it must run level along the strip
    width, amplitude = 1200, 60
    xs = np.arange(100, 100 + width, 10, dtype=float)
    ys = 300 + amplitude * np.sin((xs - 100) / width * 2 * np.pi)
    image = np.full((600, 1400), 230, np.uint8)
    curve = np.stack([xs, ys], axis=1)
    cv2.polylines(image, [np.round(curve).astype(np.int32)], False, 0, thickness=8)
    polygon = [(x, y - 50) for x, y in curve] + [(x, y + 30) for x, y in curve[::-1]]
    strip = cut_line(image, TextLine("wave", polygon, [tuple(p) for p in curve], ""), 64)
    ink = strip < 100
    columns = ink.any(axis=0)
    rows = np.arange(64)[:, None]
    centre = (rows * ink).sum(axis=0)[columns] / ink.sum(axis=0)[columns]
    assert columns.mean() > 0.95
    assert centre.std() < 1.0  # level: the wave's 120 px swing is gone
    assert abs(centre.mean() - 64 * 50 / 80) < 2.0  # and it sits on the baseline's row


def test_polygons_that_cannot_be_cut_raise_line_error(image):
    with pytest.raises(LineError, match="fewer than 3 points"):
        cut_line(image, TextLine("two", [(10, 10), (20, 20)], None, ""), 64)
    with pytest.raises(LineError, match=r"line far: polygon lies outside the image \(3072x4608\)"):
        cut_line(image, TextLine("far", [(5000, 5000), (5100, 5000), (5100, 5050)], None, ""), 64)
    with pytest.raises(LineError, match="no area"):
        cut_line(image, TextLine("flat", [(10, 10), (500, 10), (900, 10)], [(10, 10), (900, 10)], ""), 64)
    assert issubclass(LineError, UserError)


def test_a_polygon_partly_outside_the_image_is_cut_to_the_image(image):
    strip = cut_line(image, TextLine("edge", [(2900, 100), (3300, 100), (3300, 200), (2900, 200)],
                                     [(2900, 190), (3300, 190)], ""), 64)
    assert strip.shape[0] == 64 and (strip[:, -strip.shape[1] // 3:] == 255).all()


def test_cut_page_reports_bad_lines_and_goes_on(page, image):
    bad = TextLine("outside", [(9000, 9000), (9100, 9000), (9100, 9100)], None, "x")
    broken = dataclasses.replace(page, lines=[page.lines[0], bad, page.lines[1]])
    results = list(cut_page(broken, 64, image))
    assert [r[0].id for r in results] == ["r3l13", "outside", "r3l14"]
    assert results[1][1] is None and "outside the image" in results[1][2]
    assert results[0][1] is not None and results[2][1] is not None


@pytest.mark.parametrize("content, reason", [(None, "image not found"), (b"", "empty"),
                                             (b"\xff\xd8\xff\xe0 not really a jpeg", "not a readable image")],
                         ids=["missing", "zero-size", "corrupt"])
def test_unusable_images_give_one_line_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "page.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=reason) as err:
        load_image(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_resized_image_is_cut_with_scaled_coordinates(tmp_path, page, image):
    # users often keep a smaller copy of the scan than the one the XML was made on: same shape, scaled
    half = cv2.resize(image, (1536, 2304), interpolation=cv2.INTER_AREA)
    small_page = dataclasses.replace(page, lines=page.lines[:4])
    full = [s for _, s, _ in cut_page(small_page, 32, image)]
    scaled = [s for _, s, _ in cut_page(small_page, 32, half)]
    for a, b in zip(full, scaled):
        assert abs(a.shape[1] - b.shape[1]) <= 2 and correlation(a, b) > 0.9


def test_an_image_of_another_shape_is_refused(page, image):
    other = image[:, :2000]
    with pytest.raises(UserError, match="a different shape") as err:
        list(cut_page(page, 64, other))
    assert str(err.value).startswith(str(page.xml_path))


def test_zero_size_declared_page_takes_the_image_as_it_is(tmp_path):
    xml = tmp_path / "zero_dims.xml"
    shutil.copy(FIXTURES / "page" / "zero_dims.png", tmp_path / "zero_dims.png")
    xml.write_text((FIXTURES / "page" / "zero_dims.xml").read_text(encoding="utf-8").replace(
        '/>\n</PcGts>', '><TextRegion id="r"><TextLine id="l"><Coords points="10,5 100,5 100,40 10,40"/>'
        '<Baseline points="10,35 100,35"/></TextLine></TextRegion></Page>\n</PcGts>'), encoding="utf-8")
    page = read_page(xml)
    assert (page.width, page.height) == (0, 0) and len(page.lines) == 1
    [(line, strip, reason)] = list(cut_page(page, 32))
    assert reason is None and strip.shape[0] == 32

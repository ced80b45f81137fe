"""Reading any page image for the layout model: depths, alpha, CMYK, pages, EXIF orientation, bad and huge files."""

import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import tifffile   # comes with scikit-image
from PIL import Image, ImageOps

from conftest import ROOT, TIMEUS
from loghi_ft.errors import UserError
from loghi_ft.pages.images import load_page_image
from loghi_ft.pages.lines import load_image

PAGE_IMAGE = TIMEUS / "PH 1858-10.jpg"
HTROMANCE_PNG = next((TIMEUS.parent / "htromance-fr" / "data").glob("*/*/*.png"))   # a real RGBA scan, opaque
FULL_RGB_BYTES = 12000 * 9000 * 3


@pytest.fixture(scope="module")
def crop():
    """900x600 RGB of handwriting from a real page (not square, so a turn shows in the shape)."""
    page = cv2.imread(str(PAGE_IMAGE), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(page[1000:1600, 600:1500, ::-1])


def write_cv2(path, rgb, params=()):
    """Writes an RGB (or gray) array through OpenCV, which wants BGR."""
    ok, data = cv2.imencode(path.suffix, rgb[..., ::-1] if rgb.ndim == 3 else rgb, list(params))
    assert ok
    path.write_bytes(data.tobytes())
    return path


def with_exif_orientation(path, image, orientation, **options):
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), **options)
    return path


def png_header_only(width, height):
    """A PNG whose IHDR claims width x height and whose pixel data is empty."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_real_jpeg_page_loads_as_opencv_decodes_it():
    image = load_page_image(PAGE_IMAGE)
    assert (image.width, image.height, image.scale, image.notes) == (3072, 4608, 1.0, [])
    assert image.pixels.dtype == np.uint8 and image.pixels.flags.c_contiguous
    assert np.array_equal(image.pixels, cv2.imread(str(PAGE_IMAGE), cv2.IMREAD_COLOR)[..., ::-1])


def test_max_side_decodes_a_jpeg_reduced_to_the_asked_size():
    full = load_page_image(PAGE_IMAGE).pixels
    image = load_page_image(PAGE_IMAGE, max_side=1000)
    assert image.pixels.shape == (1000, 667, 3)
    assert (image.width, image.height) == (3072, 4608) and image.scale == pytest.approx(1000 / 4608)
    expected = cv2.resize(full, (667, 1000), interpolation=cv2.INTER_AREA)
    assert np.abs(image.pixels.astype(int) - expected).mean() < 2.0


def test_max_side_larger_than_the_image_keeps_it_whole(crop, tmp_path):
    image = load_page_image(write_cv2(tmp_path / "crop.png", crop), max_side=4000)
    assert image.scale == 1.0 and np.array_equal(image.pixels, crop)


def test_real_opaque_rgba_png_scan_loads_without_alpha_note():
    image = load_page_image(HTROMANCE_PNG, max_side=1200)
    assert max(image.pixels.shape[:2]) == 1200 and image.notes == []
    assert image.pixels.mean() > 150   # paper, not a black background from a dropped alpha


@pytest.mark.parametrize("suffix, params, compression", [
    (".tif", (cv2.IMWRITE_TIFF_COMPRESSION, 5), "tiff_lzw"),
    (".tif", (cv2.IMWRITE_TIFF_COMPRESSION, 8), "tiff_adobe_deflate"),
    (".png", (), None),
])
def test_full_range_16bit_samples_come_back_as_the_8bit_original(crop, tmp_path, suffix, params, compression):
    path = write_cv2(tmp_path / f"deep{suffix}", crop.astype(np.uint16) * 257, params)
    assert Image.open(path).info.get("compression") == compression
    image = load_page_image(path)
    assert np.array_equal(image.pixels, crop)
    assert image.notes == ["16-bit samples scaled to 8 (0..65535 -> 0..255)"]


def test_12bit_data_in_a_16bit_file_is_scaled_by_its_depth_not_left_dark(crop, tmp_path):
    image = load_page_image(write_cv2(tmp_path / "sensor.png", crop.astype(np.uint16) * 16))
    assert np.array_equal(image.pixels, crop)
    assert image.notes == ["16-bit samples scaled to 8 (0..4095 -> 0..255)"]


def test_signed_samples_below_zero_come_out_black(crop, tmp_path):
    stored = crop[..., 1].astype(np.int16) * 16 - 8   # 12-bit data with a negative offset, as instruments write
    tifffile.imwrite(tmp_path / "signed.tif", stored)
    image = load_page_image(tmp_path / "signed.tif")
    assert np.array_equal(image.pixels[..., 0], np.clip(stored, 0, None) >> 4)
    assert image.notes == ["16-bit samples scaled to 8 (0..4095 -> 0..255)"]


def test_float_tiff_in_unit_range_is_scaled_to_8bit(crop, tmp_path):
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    path = tmp_path / "float.tif"
    Image.fromarray(gray.astype(np.float32) / 255.0, "F").save(path)
    image = load_page_image(path)
    assert np.array_equal(image.pixels, np.dstack([gray] * 3))
    assert image.notes == ["32-bit float samples scaled to 8 (0..1 -> 0..255)"]


def test_float_tiff_outside_unit_range_is_scaled_from_its_own_range(crop, tmp_path):
    values = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32) * 10.0 + 300.0
    values[:10, :10] = np.nan   # unreadable samples count as 0
    Image.fromarray(values, "F").save(tmp_path / "float.tif")
    image = load_page_image(tmp_path / "float.tif")
    expected = np.round(np.nan_to_num(values) / np.nanmax(values) * 255.0).astype(np.uint8)
    assert np.array_equal(image.pixels[..., 0], expected)
    assert image.notes == [f"32-bit float samples scaled to 8 (0..{np.nanmax(values):g} -> 0..255)"]


def test_multipage_tiff_gives_its_first_page_with_a_note(crop, tmp_path):
    path = tmp_path / "three.tif"
    pages = [Image.fromarray(crop), Image.fromarray(crop[::-1].copy()), Image.fromarray(crop).convert("L")]
    pages[0].save(path, save_all=True, append_images=pages[1:], compression="tiff_deflate")
    image = load_page_image(path)
    assert np.array_equal(image.pixels, crop)
    assert image.notes == ["multi-page TIFF: page 1 of 3 used"]


@pytest.mark.parametrize("depth", [8, 16])
def test_rgba_png_transparent_border_becomes_white(crop, tmp_path, depth):
    alpha = np.zeros(crop.shape[:2], np.uint8)
    alpha[50:-50, 50:-50] = 255
    rgba = np.dstack([crop, alpha]).astype(np.uint16) * (257 if depth == 16 else 1)
    rgba[alpha == 0, :3] = 0   # what editors store under full transparency
    ok, data = cv2.imencode(".png", rgba[..., [2, 1, 0, 3]].astype(np.uint16 if depth == 16 else np.uint8))
    (tmp_path / "alpha.png").write_bytes(data.tobytes())
    image = load_page_image(tmp_path / "alpha.png")
    assert (image.pixels[alpha == 0] == 255).all()
    assert np.array_equal(image.pixels[50:-50, 50:-50], crop[50:-50, 50:-50])
    assert image.notes[-1] == "alpha composited on white"


def test_half_transparent_ink_is_mixed_with_white(crop, tmp_path):
    path = tmp_path / "half.png"
    Image.fromarray(np.dstack([crop, np.full(crop.shape[:2], 128, np.uint8)])).save(path)
    expected = (crop.astype(int) * 128 + 255 * 127 + 127) // 255
    assert np.array_equal(load_page_image(path).pixels, expected)


def test_gray_with_alpha_and_palette_pngs_composite_on_white(crop, tmp_path):
    border = np.ones(crop.shape[:2], bool)
    border[50:-50, 50:-50] = False
    gray = Image.fromarray(crop).convert("L")
    la = np.dstack([np.asarray(gray), np.where(border, 0, 255).astype(np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    image = load_page_image(tmp_path / "la.png")
    assert (image.pixels[border] == 255).all()
    assert np.array_equal(image.pixels[~border], np.dstack([np.asarray(gray)] * 3)[~border])

    palette = Image.fromarray(crop).quantize(colors=200)
    indices = np.asarray(palette).copy()
    indices[border] = 255   # an unused entry (black), made transparent
    paletted = Image.fromarray(indices, "P")
    paletted.putpalette(palette.getpalette() + [0, 0, 0] * (256 - 200))
    paletted.save(tmp_path / "palette.png", transparency=255)
    image = load_page_image(tmp_path / "palette.png")
    assert (image.pixels[border] == 255).all()
    assert np.array_equal(image.pixels[~border], np.asarray(palette.convert("RGB"))[~border])


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_colours_come_back_right_not_inverted(crop, tmp_path, suffix):
    path = tmp_path / f"cmyk{suffix}"
    Image.fromarray(crop).convert("CMYK").save(path, quality=95)
    header = Image.open(path)
    assert header.mode == "CMYK"
    if suffix == ".jpg":
        assert "adobe" in header.info   # Pillow writes Adobe's inverted CMYK, as Photoshop does
    image = load_page_image(path)
    assert np.abs(image.pixels.astype(int) - crop).mean() < 3.0
    assert image.notes == ["CMYK converted"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_displayed(crop, tmp_path, orientation):
    path = with_exif_orientation(tmp_path / "turned.jpg", Image.fromarray(crop), orientation, quality=95)
    image = load_page_image(path)
    displayed = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))   # Pillow's reading
    assert image.pixels.shape == displayed.shape
    assert (image.width, image.height) == (displayed.shape[1], displayed.shape[0])
    assert np.abs(image.pixels.astype(int) - displayed).max() <= 2
    # the line cutter's decoder (OpenCV) turns the page the same way, so PAGE coordinates mean the same pixels
    assert np.array_equal(image.pixels, cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])
    assert image.notes == ([] if orientation == 1 else [f"EXIF orientation {orientation} applied"])


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_orientation_6_turns_the_page_clockwise_and_agrees_with_the_line_cutter(crop, tmp_path, suffix):
    path = with_exif_orientation(tmp_path / f"six{suffix}", Image.fromarray(crop), 6)
    image = load_page_image(path)
    assert (image.width, image.height) == (600, 900) and image.pixels.shape == (900, 600, 3)
    turned = np.rot90(crop, k=-1)   # clockwise
    assert np.abs(image.pixels.astype(int) - turned).mean() < (3.0 if suffix == ".jpg" else 0.5)
    gray = load_image(path)
    assert gray.shape == image.pixels.shape[:2]
    assert np.abs(cv2.cvtColor(image.pixels, cv2.COLOR_RGB2GRAY).astype(int) - gray).mean() < 1.0


def test_orientation_and_max_side_give_the_displayed_size_reduced(crop, tmp_path):
    path = with_exif_orientation(tmp_path / "six.jpg", Image.fromarray(crop), 6, quality=95)
    image = load_page_image(path, max_side=300)
    assert (image.width, image.height, image.scale) == (600, 900, pytest.approx(1 / 3))
    assert image.pixels.shape == (300, 200, 3)


@pytest.mark.parametrize("kind", ["rgb", "gray16", "bilevel"])
def test_turned_tiled_tiff_is_decoded_by_pillow_which_keeps_its_tiles_in_place(crop, tmp_path, kind):
    """OpenCV 5.0 scrambles the tiles of a tiled TIFF with orientation 6; libtiff through Pillow turns it right."""
    stored = {"rgb": crop, "gray16": crop[..., 1].astype(np.uint16) * 257, "bilevel": crop[..., 1] > 128}[kind]
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, stored, tile=(256, 256), extratags=[(0x0112, "H", 1, 6, True)],
                     photometric="rgb" if kind == "rgb" else "minisblack")
    image = load_page_image(path)
    expected = {"rgb": crop, "gray16": crop[..., 1], "bilevel": (crop[..., 1] > 128).astype(np.uint8) * 255}[kind]
    expected = np.rot90(expected, k=-1)
    assert (image.width, image.height) == (600, 900)
    assert np.array_equal(image.pixels, expected if kind == "rgb" else np.dstack([expected] * 3))
    assert image.notes[-1] == "EXIF orientation 6 applied"


def test_gray_tiff_with_alpha_keeps_its_alpha(crop, tmp_path):
    """OpenCV drops the alpha of a gray+alpha TIFF; a transparent border must still come out white."""
    gray = crop[..., 1]
    alpha = np.zeros_like(gray)
    alpha[50:-50, 50:-50] = 255
    tifffile.imwrite(tmp_path / "la.tif", np.dstack([np.where(alpha == 0, 0, gray), alpha]),
                     photometric="minisblack", extrasamples=["unassalpha"])
    image = load_page_image(tmp_path / "la.tif")
    assert (image.pixels[alpha == 0] == 255).all()
    assert np.array_equal(image.pixels[50:-50, 50:-50, 0], gray[50:-50, 50:-50])
    assert image.notes == ["alpha composited on white"]


def test_truncated_jpeg_is_refused_naming_the_file(crop, tmp_path):
    whole = write_cv2(tmp_path / "whole.jpg", crop).read_bytes()
    path = tmp_path / "half of a scan.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="half of a scan.jpg: image data is corrupt or truncated"):
        load_page_image(path)


@pytest.mark.parametrize("content, message", [
    (b"", "image file is empty"),
    (b"these are not the pixels you are looking for", "not a readable image"),
    (png_header_only(0, 600), "not a readable image"),
    # a 12000x16000 scan passes the size check (Pillow's default limit would refuse it), then lacks its pixels
    (png_header_only(12000, 16000), "image data is corrupt or truncated"),
    (png_header_only(40000, 30000), "image has more than 1,073,741,824 pixels"),
    (png_header_only(60000, 60000), "image has more than 1,073,741,824 pixels"),
], ids=["empty", "not an image", "zero width", "192 megapixels", "1.2 gigapixels", "3.6 gigapixels"])
def test_unusable_files_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "scan.png"
    path.write_bytes(content)
    with pytest.raises(UserError, match=f"scan.png: {message}"):
        load_page_image(path)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(UserError, match="nowhere.jpg: image not found"):
        load_page_image(tmp_path / "nowhere.jpg")
    with pytest.raises(UserError, match="is a folder"):
        load_page_image(tmp_path)


def test_blank_white_page_loads(tmp_path):
    image = load_page_image(write_cv2(tmp_path / "blank.jpg", np.full((1200, 800, 3), 255, np.uint8)))
    assert image.pixels.shape == (1200, 800, 3) and (image.pixels == 255).all() and image.notes == []


MEASURE_PEAK = """
import sys
from loghi_ft.pages.images import load_page_image
def status(field):  # kB; VmHWM is this process's peak (ru_maxrss would carry the parent's over the fork)
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field + ":"))
before = status("VmRSS")
image = load_page_image(sys.argv[1], max_side=2048)
print(image.pixels.shape[0], image.pixels.shape[1], image.width, image.height, (status("VmHWM") - before) * 1024)
"""


def test_12000x9000_scan_is_reduced_while_decoding_in_bounded_memory(tmp_path):
    """A double-page spread at 12000x9000: decoded at 1/4 in the DCT domain, never at full size."""
    pages = [cv2.imread(str(TIMEUS / f"PH 1858-{n}.jpg"), cv2.IMREAD_COLOR) for n in (10, 11)]
    spread = np.hstack([cv2.resize(page, (6000, 9000), interpolation=cv2.INTER_LINEAR) for page in pages])
    path = write_cv2(tmp_path / "spread.jpg", spread[..., ::-1])
    del spread, pages
    run = subprocess.run([sys.executable, "-c", MEASURE_PEAK, str(path)], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    rows, cols, width, height, growth = map(int, run.stdout.split())
    assert (rows, cols, width, height) == (1536, 2048, 12000, 9000)
    assert growth < FULL_RGB_BYTES / 3, f"peak memory grew {growth / 2**20:.0f} MiB"

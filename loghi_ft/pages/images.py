"""Page images for the layout model: any scan decoded to 8-bit RGB as displayed, reduced while decoding when large.

Pillow reads the header (format, size, colour mode, pages, EXIF orientation) without decoding. OpenCV decodes the
pixels, as the line cutter (pages/lines.py) does, so both see the same pixels; Pillow decodes only the two TIFF kinds
OpenCV gets wrong. JPEG, PNG and WebP pages are turned here as their EXIF orientation says, by the transforms
OpenCV's IMREAD_COLOR applies; libtiff turns TIFF pages itself. Either way PAGE coordinates mean the pixels as
displayed, for the segmenter and the cutter alike.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from loghi_ft.errors import UserError

# OpenCV's own default decode limit (CV_IO_MAX_IMAGE_PIXELS, 2^30): what the cutter cannot read is refused here too.
# Pillow's default (89 Mpx warning, 179 Mpx error) would refuse a legitimate 12000x16000 scan (192 Mpx), so its
# decompression-bomb guard is set to ours, deliberately, for the whole process.
MAX_PIXELS = 1 << 30
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ORIENTATION = 0x0112  # the EXIF tag
# JPEG is decoded at 1/2, 1/4, 1/8 size in the DCT domain, so a large scan never exists in memory at full size
REDUCED_COLOR = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


@dataclass
class PageImage:
    pixels: np.ndarray          # H x W x 3 uint8 RGB, as displayed, possibly reduced
    width: int                  # the full image's size as displayed: the coordinates written to PAGE
    height: int
    scale: float = 1.0          # pixels / full size (<= 1)
    notes: list[str] = field(default_factory=list)   # what was done to make the file readable


def load_page_image(path: str | Path, max_side: int | None = None) -> PageImage:
    """The image as 8-bit RGB as displayed, no side longer than `max_side`; UserError naming the file if unusable."""
    path = Path(path)
    data = read_image_bytes(path)
    header = _open_header(path, data)
    # the size as decoded: libtiff turns a TIFF page while decoding, and Pillow reports a TIFF's size turned
    decoded_w, decoded_h = header.size
    orientation = _orientation(header)
    turn = 1 if header.format == "TIFF" else orientation
    width, height = (decoded_h, decoded_w) if turn >= 5 else (decoded_w, decoded_h)
    scale = 1.0
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
    notes = []
    pixels = _decode(path, data, header, orientation, scale, notes)
    if scale < 1.0:
        size = (max(1, round(decoded_w * scale)), max(1, round(decoded_h * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    if turn != 1:
        pixels = np.ascontiguousarray(_orient(pixels, turn))
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied")
    # to RGB last, on the smallest copy
    pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB if pixels.ndim == 2 else cv2.COLOR_BGR2RGB)
    return PageImage(pixels, width, height, scale, notes)


def read_image_bytes(path: Path) -> bytes:
    """The file's bytes; UserError when it is missing, a folder, unreadable or empty."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: image not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not an image") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read image ({exc.strerror})") from None
    if not data:
        raise UserError(f"{path}: image file is empty (0 bytes)")
    return data


def _open_header(path: Path, data: bytes) -> Image.Image:
    """Pillow's lazily opened image: header read, pixels not decoded; UserError for unknown or oversized files."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_PIXELS and twice that and raises above: refuse both alike, quietly
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UserError(f"{path}: image has more than {MAX_PIXELS:,} pixels (OpenCV's limit too); refused") from None
    except UnidentifiedImageError:
        # Pillow refuses zero width or height here too
        raise UserError(f"{path}: not a readable image (unknown format, or a header that does not hold)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image (corrupt header: {exc})") from None


def _orientation(header: Image.Image) -> int:
    """The EXIF orientation (1 to 8; 1 when absent or invalid)."""
    if header.format == "PNG" and "exif" not in header.info:
        # an eXIf chunk after the pixel data: Pillow would decode the whole image to find it, OpenCV ignores it
        return 1
    value = header.getexif().get(ORIENTATION, 1)
    return value if value in range(1, 9) else 1


def _decode(path: Path, data: bytes, header: Image.Image, orientation: int, scale: float,
            notes: list[str]) -> np.ndarray:
    """The first page as uint8 gray or BGR, turned only if TIFF; a JPEG reduced towards `scale` while decoding."""
    pages = getattr(header, "n_frames", 1)
    if pages > 1:
        notes.append(f"multi-page {header.format}: page 1 of {pages} used")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if header.format == "TIFF" and (header.mode == "LA" or (orientation != 1 and 322 in header.tag_v2)):
        # OpenCV drops a gray TIFF's alpha and scrambles the tiles of a turned tiled TIFF (322: TileWidth)
        pixels = _decode_with_pillow(path, header)
    elif header.format == "JPEG" or header.mode == "CMYK":
        # OpenCV converts CMYK (Adobe's inverted JPEGs included) to colour itself; JPEG holds no alpha or depth
        reduce = _reduction(scale) if header.format == "JPEG" else 1
        pixels = cv2.imdecode(buffer, REDUCED_COLOR[reduce] | cv2.IMREAD_IGNORE_ORIENTATION)
    else:
        pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)   # keeps depth and alpha
    if pixels is None or pixels.size == 0:
        raise UserError(f"{path}: image data is corrupt or truncated (its {header.format} header reads, "
                        "its pixels do not)")
    if header.mode == "CMYK":
        notes.append("CMYK converted")
    return _to_8bit_opaque(pixels, notes)


def _decode_with_pillow(path: Path, header: Image.Image) -> np.ndarray:
    """Pillow's decoding as gray (any depth), BGR or BGRA, like OpenCV's IMREAD_UNCHANGED."""
    try:
        header.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: image data is corrupt or truncated ({exc})") from None
    if header.mode == "L" or header.mode.startswith(("I", "F")):
        return np.asarray(header)
    if header.mode == "1":
        return np.asarray(header.convert("L"))
    if "A" in header.mode:
        return np.asarray(header.convert("RGBA"))[..., [2, 1, 0, 3]]
    return np.asarray(header.convert("RGB"))[..., ::-1]


def _reduction(scale: float) -> int:
    """Largest JPEG decode reduction (1, 2, 4, 8) that still gives at least `scale` of the full size."""
    reduce = 1
    while reduce < 8 and 1.0 / (reduce * 2) >= scale:
        reduce *= 2
    return reduce


def _to_8bit_opaque(pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    """Gray or BGR uint8: deeper samples scaled down, alpha composited on white."""
    alpha = None
    if pixels.ndim == 3 and pixels.shape[2] == 4:   # OpenCV gives gray+alpha as BGRA too
        pixels, alpha = pixels[..., :3], pixels[..., 3]
    if pixels.dtype != np.uint8:
        pixels = _samples_to_8bit(pixels, notes)
    if alpha is not None:
        alpha = _alpha_to_8bit(alpha)
        if alpha.min() < 255:
            pixels = _composite_on_white(pixels, alpha)
            notes.append("alpha composited on white")
    return pixels


def _samples_to_8bit(pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    """Integer samples shifted down by the bit depth in use, floats from [0, 1] or else from their own range.

    The depth in use is the highest bit set anywhere: full-range 16-bit scans are shifted by 8 bits, as OpenCV
    (and so the line cutter) does, while 12-bit data in a 16-bit file is shifted by 4 instead of coming out black.
    """
    bits = pixels.dtype.itemsize * 8
    if pixels.dtype.kind in "ui":
        if pixels.dtype.kind == "i":
            pixels = np.clip(pixels, 0, None)   # nothing below black
        shift = max(0, int(pixels.max()).bit_length() - 8)
        # in place where the array is ours: a 16-bit scan is large, and its 8-bit copy is made next anyway
        pixels = np.right_shift(pixels, shift, out=pixels if pixels.flags.writeable else None).astype(np.uint8)
        notes.append(f"{bits}-bit samples scaled to 8 (0..{(256 << shift) - 1} -> 0..255)")
        return pixels
    pixels = np.nan_to_num(pixels.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0.0 or high > 1.0:
        pixels = (pixels - low) / max(high - low, 1e-12)
    else:
        low, high = 0.0, 1.0
    notes.append(f"{bits}-bit float samples scaled to 8 ({low:g}..{high:g} -> 0..255)")
    return np.round(pixels * 255.0).astype(np.uint8)


def _alpha_to_8bit(alpha: np.ndarray) -> np.ndarray:
    """Alpha scaled from its type's full range (opaque is the type's maximum; Pillow opens no float alpha)."""
    return np.right_shift(alpha, alpha.dtype.itemsize * 8 - 8).astype(np.uint8)


def _composite_on_white(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """colour * a + white * (1 - a), in 16-bit integers (at most 255 * 255, so no overflow)."""
    a = alpha.astype(np.uint16)
    if pixels.ndim == 3:
        a = a[..., None]
    mixed = pixels.astype(np.uint16) * a + 255 * (255 - a) + 127
    return (mixed // 255).astype(np.uint8)


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels turned as EXIF orientation 2 to 8 says they are displayed."""
    if orientation in (5, 6, 7, 8):
        # 5 transpose, 6 turn clockwise, 7 transverse, 8 turn counter-clockwise
        pixels = pixels.swapaxes(0, 1)
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    if orientation in (2, 3):
        pixels = pixels[:, ::-1]
    if orientation in (3, 4):
        pixels = pixels[::-1]
    return pixels

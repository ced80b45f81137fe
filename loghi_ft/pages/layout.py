"""Layout of a page as the layout model learns and writes it: typed regions and lines (baseline + polygon)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

Points = list[tuple[float, float]]


@dataclass
class Region:
    id: str
    type: str                    # the user's class name: PAGE @type, else SegmOnto's custom type, else "text"
    polygon: Points              # page pixels
    conf: float | None = None    # a prediction's confidence (mean probability inside), None for ground truth


@dataclass
class LayoutLine:
    id: str
    baseline: Points
    polygon: Points
    type: str | None = None      # SegmOnto line type (DefaultLine, HeadingLine, ...) when the page gives one
    region_id: str | None = None
    text: str = ""
    conf: float | None = None


@dataclass
class Layout:
    image_path: Path
    width: int                   # page pixels (the image's, as decoded)
    height: int
    regions: list[Region] = field(default_factory=list)
    lines: list[LayoutLine] = field(default_factory=list)   # in reading order
    xml_path: Path | None = None
    problems: list[str] = field(default_factory=list)       # what reading skipped, one message each

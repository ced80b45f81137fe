"""What the layout network learns to draw: a page's ground truth rasterised at the scale it sees the page at."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from loghi_ft.pages.layout import Layout, Points

BASELINE_WIDTH = 3  # pixels at the model's scale, whatever the page's line height


def transformed(layout: Layout, matrix: np.ndarray) -> Layout:
    """The layout with every point mapped by the 2x3 affine `matrix` (scaling, rotation, shift)."""
    def move(points: Points) -> Points:
        if not points:
            return points
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return [tuple(q) for q in (p @ matrix[:, :2].T + matrix[:, 2])]
    return replace(layout, regions=[replace(r, polygon=move(r.polygon)) for r in layout.regions],
                   lines=[replace(x, baseline=move(x.baseline), polygon=move(x.polygon)) for x in layout.lines])


def rasterise(layout: Layout, shape: tuple[int, int], region_types: list[str], line_types: list[str]
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Targets for a layout already at the model's scale: uint8 maps (2 + regions, H, W) of baselines, line
    bodies and one per region class; and int8 line types (H, W), -1 where untyped (None when lines have no types)."""
    h, w = shape
    maps = np.zeros((2 + len(region_types), h, w), dtype=np.uint8)
    typed = len(line_types) > 1
    types = np.full((h, w), -1, dtype=np.int8) if typed else None
    for line in layout.lines:
        if len(line.polygon) >= 3:
            cv2.fillPoly(maps[1], [_pixels(line.polygon)], 1)
            if typed and line.type in line_types:
                cv2.fillPoly(types, [_pixels(line.polygon)], line_types.index(line.type))
    for line in layout.lines:  # baselines over bodies, so that a neighbour's body never hides one
        if len(line.baseline) >= 2:
            cv2.polylines(maps[0], [_pixels(line.baseline)], False, 1, BASELINE_WIDTH, lineType=cv2.LINE_8)
    for region in layout.regions:
        if region.type in region_types and len(region.polygon) >= 3:
            cv2.fillPoly(maps[2 + region_types.index(region.type)], [_pixels(region.polygon)], 1)
    return maps, types


def _pixels(points: Points) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)

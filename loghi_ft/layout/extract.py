"""From the network's maps to a page's layout: baselines traced along the skeleton of the baseline map, a polygon
around each from the line-body map between its neighbours, regions as the outlines of each class's map.

Every traced baseline becomes a line: where the body map gives nothing to outline, the polygon is a band around
the baseline (counted in `Extracted.bands`), never a dropped line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from skimage.morphology import skeletonize

from loghi_ft.layout.net import BASELINE, BODY, LayoutInfo
from loghi_ft.pages.layout import LayoutLine, Points, Region

# traces shorter than MIN_BASELINE skeleton pixels (for a model that sees pages 1024 pixels long; scaled with its
# size) or with a mean baseline probability below MIN_CONF are specks, flourishes and smudges. Chosen on the shipped
# base layout model's 54 validation pages (timeus-1858 and htromance-fr val; benchmarks/layout_thresholds.py):
# F1 0.891 at 24 (P 0.83, R 0.96), 0.904 at 40, 0.910 at 56 (P 0.87, R 0.96; htromance-fr's unseen manuscripts
# 0.943), 0.909 at 80. A MIN_CONF of 0.7 adds 0.007 there (0.8: 0.013, from timeus) but leaves a model trained for a
# few epochs (the tests' small ones, a new model's first validations) finding nothing
MIN_BASELINE, MIN_CONF = 56, 0.6
MIN_REGION = 0.0003     # of the page's area (a page number is about 0.001): smaller blobs are noise
# a polygon reaches UP of the gap to the baseline above and DOWN of the gap below. Chosen by the page CER of the
# lines the shipped base layout model finds on its val pages (the shipped recognisers reading them; sweep in
# benchmarks/README.md): htromance-fr with many-hands-small 18.06% at 0.85/0.35, 15.56% at 0.7/0.3, 14.85% at
# 0.6/0.3, 20.12% at 0.85/0.5; timeus-1858 with timeus-1858-small 24.99%, 24.89%, 27.32%. (On timeus' val pages
# with polygons made from the ground truth's own maps 0.85/0.35 had read best: 7.03% against 7.52% at 0.7/0.3.)
# Following each line's ink (adaptive threshold, strokes reaching its x-height) instead read worse: 12.5% on test.
UP, DOWN = 0.7, 0.3
MARGIN = 4              # columns (model scale) a polygon reaches beyond each end of its baseline
STEP = 4                # columns between the polygon's points (model scale)
# split_at_gutters: a gutter between two columns is a gap free of ink in the band GUTTER_BAND x the line spacing
# above the baseline, at least GUTTER_WIDTH x the spacing wide, at the same columns of at least GUTTER_LINES lines
# one above the other. benchmarks/layout_gutters.py, the base layout model, pages enlarged as segment does: on the
# 54 val pages of timeus-1858 and htromance-fr (no columns) 3 lines (band 0.6) cut 5 lines on 3 pages, F1 0.9097 ->
# 0.9072; 4 (band 0.4), 5 and 6 cut none. 5 keeps a line of margin. On iForal's charters, whose narrow gutter the
# network bridges, F1 inside the transcribed area 0.799 uncut, 0.883 at 4, 0.871 at 5, 0.846 at 6 (blla 0.825);
# the 37 test pages of timeus-1858 and htromance-fr: no line cut at any setting
GUTTER_LINES, GUTTER_WIDTH, GUTTER_BAND = 5, 0.3, 0.4
# split_at_leaders: a line is cut where, for at least LEADER_WIDTH x the line spacing, the band from LEADER_BAND x the
# spacing above its baseline to just below it has no ink but flat marks: components no taller than LEADER_FLAT x
# the spacing, the dots and dashes of a leader between a table's label and its value ("Recette ....... 12 l."),
# which the network draws as one baseline and the transcriber as two lines. Chosen with
# benchmarks/layout_gutters.py --leaders on the base layout model's 54 val pages of timeus-1858 and htromance-fr and
# the 74 training pages of htromance-fr (its test pages left out). Val, F1 0.9097 with gutters alone: unchanged at
# width 2 up to FLAT 0.09, 0.9093 at 0.10 and 0.12 (an untranscribed line at a page's top cut), 0.9087 at width 1.5
# (3 lines cut). Training pages, 0.9140 with gutters alone: 0.9151 at width 2 FLAT 0.06 and 0.08, 0.9152 at 0.09
# to 0.12 and at width 1.5, 0.9144 at width 3. So width 2, and the largest FLAT that costs val nothing
LEADER_WIDTH, LEADER_FLAT, LEADER_BAND = 2.0, 0.09, 0.5


@dataclass
class Extracted:
    regions: list[Region] = field(default_factory=list)
    lines: list[LayoutLine] = field(default_factory=list)
    bands: int = 0      # lines whose polygon is the fallback band (the body map outlined nothing there)
    cut: int = 0        # lines cut in two at a gutter between columns (split_at_gutters)
    leaders: int = 0    # lines cut or trimmed at a dot leader or a wide blank (split_at_leaders)


def extract(probs: np.ndarray, info: LayoutInfo, scale: float, threshold: float = 0.5,
            reach: tuple[float, float] = (UP, DOWN), gray: np.ndarray | None = None) -> Extracted:
    """Regions and lines in page pixels from probabilities (channels, H, W) at `scale` model pixels per page pixel;
    `reach`: the shares of the gaps to the neighbouring baselines a line polygon may reach (line_polygon); `gray`:
    the page as the model saw it (H, W), to cut lines at the gutters between columns (split_at_gutters) and at
    dot leaders (split_at_leaders)."""
    traces = kept_baselines(probs[BASELINE], info.size, threshold)
    out = Extracted()
    if gray is not None:
        ink = ink_mask(gray)
        traces, out.cut = split_at_gutters(traces, probs[BASELINE], ink)
        traces, out.leaders = split_at_leaders(traces, probs[BASELINE], ink)
    body = probs[BODY] > threshold
    gaps = neighbour_gaps([t for t, _, _ in traces], probs.shape[1:])
    for k, (trace, pixels, conf) in enumerate(traces):
        polygon, band = line_polygon(trace, body, gaps[k], reach)
        out.bands += band
        kind = line_type(probs, pixels, info)
        out.lines.append(LayoutLine(f"l{k + 1}", page_points(trace, scale), page_points(polygon, scale), kind,
                                    conf=round(conf, 4)))
    for c, name in enumerate(info.region_types):
        out.regions += [Region(f"r{len(out.regions) + n + 1}", name, page_points(poly, scale), conf)
                        for n, (poly, conf) in enumerate(outlines(probs[2 + c], threshold))]
    return out


def kept_baselines(baseline: np.ndarray, size: int, threshold: float = 0.5, shortest: int = MIN_BASELINE,
                   least_conf: float = MIN_CONF) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """The traces of a baseline probability map (model scale, for a model of page size `size`) that are lines, not
    specks: at least `shortest` skeleton pixels at a 1024-pixel page, mean probability at least `least_conf`; each
    as (polyline, skeleton pixels, mean probability)."""
    kept = []
    for trace, pixels in trace_baselines(baseline > threshold, max(3, round(shortest * size / 1024))):
        conf = float(baseline[pixels[:, 0], pixels[:, 1]].mean())
        if conf >= least_conf:
            kept.append((trace, pixels, conf))
    return kept


def trace_baselines(mask: np.ndarray, shortest: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each baseline of at least `shortest` skeleton pixels as (polyline (n, 2) x,y from its start to its end, its
    skeleton pixels (m, 2) row,col)."""
    skeleton = skeletonize(mask).astype(np.uint8)
    count, labels = cv2.connectedComponents(skeleton, connectivity=8)
    rows, cols = np.nonzero(labels)
    order = np.argsort(labels[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(labels[rows, cols], np.arange(1, count + 1))
    traces = []
    for k in range(1, count):
        r, c = rows[starts[k - 1]:starts[k]], cols[starts[k - 1]:starts[k]]
        if len(r) < shortest:
            continue
        traces.append((_polyline(np.stack([c, r], axis=1).astype(np.float64)), np.stack([r, c], axis=1)))
    return traces


def _polyline(points: np.ndarray) -> np.ndarray:
    """The skeleton pixels as a polyline along their main direction (left to right for a level line): the mean of
    the pixels in steps of 3 along it, simplified to within a pixel."""
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    direction = vt[0] if vt[0][0] >= 0 or abs(vt[0][0]) < abs(vt[0][1]) and vt[0][1] > 0 else -vt[0]
    t = (points - centre) @ direction
    bins = np.floor((t - t.min()) / 3).astype(int)
    sums = np.zeros((bins.max() + 1, 2))
    np.add.at(sums, bins, points)
    counts = np.bincount(bins)[:, None]
    line = sums[counts[:, 0] > 0] / counts[counts[:, 0] > 0]
    line[0], line[-1] = points[np.argmin(t)], points[np.argmax(t)]  # reach the ends of the trace
    simple = cv2.approxPolyDP(line.astype(np.float32).reshape(-1, 1, 2), 1.0, False).reshape(-1, 2)
    return simple.astype(np.float64) if len(simple) >= 2 else line[[0, -1]]


def split_at_gutters(traces: list[tuple[np.ndarray, np.ndarray, float]], baseline: np.ndarray, ink: np.ndarray
                     ) -> tuple[list[tuple[np.ndarray, np.ndarray, float]], int]:
    """The traces (kept_baselines') with each line that bridges a gutter between two columns cut there, and how
    many lines were cut. A gutter: columns where GUTTER_LINES or more lines in a row, one above the other, have no
    ink in the band above their baseline, between ink on both sides, at least GUTTER_WIDTH x the page's line
    spacing wide (a word gap lines up with those of the lines above and below only by chance, over a few lines).
    A piece shorter than the line spacing is a stroke reaching across the gutter and is dropped. `ink`: the
    page's ink (ink_mask) at the model's scale."""
    h, w = ink.shape
    spans = _spans([t for t, _, _ in traces], (h, w))
    spacing = _median_gap(_neighbours(spans)[0])
    if len(traces) < GUTTER_LINES or spacing is None:
        return traces, 0
    ink = ink.astype(bool)
    reach = max(2, int(GUTTER_BAND * spacing))
    n = len(traces)
    covered, free, middle = np.zeros((n, w), bool), np.zeros((n, w), bool), np.zeros(n)
    for i, (xs, ys) in enumerate(spans):
        if len(xs) < 2:
            continue
        covered[i, xs] = True
        inked = _inked(ink, xs, ys, reach, 1)
        middle[i] = np.median(ys)
        if inked.sum() >= 2:
            first, last = np.flatnonzero(inked)[[0, -1]]
            free[i, xs[first + 1:last]] = ~inked[first + 1:last]
    # lines in order down the page; in each column a line that crosses it with ink ends the run of free lines
    order = np.argsort(middle, kind="stable")
    runs = np.cumsum(covered[order] & ~free[order], axis=0)
    rows_free, cols_free = np.nonzero(free[order])
    length = np.zeros((n + 1, w), np.int64)
    np.add.at(length, (runs[rows_free, cols_free], cols_free), 1)
    gutter = np.zeros((n, w), bool)
    gutter[order[rows_free], cols_free] = length[runs[rows_free, cols_free], cols_free] >= GUTTER_LINES
    out, cut = [], 0
    for i, kept in enumerate(traces):
        cols = np.flatnonzero(gutter[i])
        groups = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1) if len(cols) else []
        gaps = [(g[0], g[-1]) for g in groups if len(g) >= GUTTER_WIDTH * spacing]
        pieces = _pieces(kept, gaps, baseline, spacing)
        out += pieces or [kept]
        cut += len(pieces) > 1
    return out, cut


def split_at_leaders(traces: list[tuple[np.ndarray, np.ndarray, float]], baseline: np.ndarray, ink: np.ndarray
                     ) -> tuple[list[tuple[np.ndarray, np.ndarray, float]], int]:
    """The traces with each line cut where a dot leader (or a wide blank) parts it, and trimmed where one ends it,
    and how many lines were cut or trimmed. Such a stretch: at least LEADER_WIDTH x the page's line spacing of
    columns whose band from LEADER_BAND x the spacing above the baseline to just below it holds no ink but flat
    marks (connected components no taller than LEADER_FLAT x the spacing: dots, dashes, the rule of a leader).
    The pieces are the line's skeleton from the first inked column after one stretch to the last before the next;
    a piece shorter than the spacing is dropped. `ink`: the page's ink (ink_mask) at the model's scale."""
    spans = _spans([t for t, _, _ in traces], ink.shape)
    spacing = _median_gap(_neighbours(spans)[0])
    if spacing is None:
        return traces, 0
    _, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    tall = stats[:, cv2.CC_STAT_HEIGHT] > LEADER_FLAT * spacing
    tall[0] = False     # the background
    letters = tall[labels]
    up, width = max(2, int(round(LEADER_BAND * spacing))), LEADER_WIDTH * spacing
    out, cut = [], 0
    for kept, (xs, ys) in zip(traces, spans):
        inked = np.flatnonzero(_inked(letters, xs, ys, up, 2)) if len(xs) >= 2 else np.zeros(0, int)
        if len(inked) < 2:
            out.append(kept)
            continue
        # stretches as (first, last) free column: within the line, before its first ink and after its last
        gaps = [(xs[a] + 1, xs[b] - 1) for a, b in zip(inked, inked[1:]) if b - a - 1 >= width]
        if xs[inked[0]] - xs[0] >= width:
            gaps.insert(0, (-np.inf, xs[inked[0]] - 1))
        if xs[-1] - xs[inked[-1]] >= width:
            gaps.append((xs[inked[-1]] + 1, np.inf))
        pieces = _pieces(kept, gaps, baseline, spacing)
        out += pieces or [kept]
        cut += bool(pieces) and bool(gaps)
    return out, cut


def _inked(ink: np.ndarray, xs: np.ndarray, ys: np.ndarray, up: int, down: int) -> np.ndarray:
    """Per column xs of a line whose baseline is at heights ys: whether `ink` (a bool mask) has a pixel from `up`
    rows above the baseline to `down` rows below it."""
    y = np.round(ys).astype(int)
    top = max(0, int(y.min()) - up)
    rows = np.arange(top, min(ink.shape[0], int(y.max()) + down + 1))[:, None]
    return (ink[top:top + len(rows), xs] & (rows >= y - up) & (rows <= y + down)).any(axis=0)


def _pieces(kept: tuple[np.ndarray, np.ndarray, float], gaps: list[tuple[float, float]], baseline: np.ndarray,
            spacing: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """A trace's pieces between `gaps` (first and last column of each, in order; +-inf for one that runs off an
    end), each at least `spacing` skeleton pixels, as (polyline, skeleton pixels, mean baseline probability);
    [] when there is no gap."""
    if not gaps:
        return []
    bounds = [(-np.inf, -np.inf), *gaps, (np.inf, np.inf)]
    pieces = []
    for (_, a), (b, _) in zip(bounds, bounds[1:]):
        part = kept[1][(kept[1][:, 1] > a) & (kept[1][:, 1] < b)]
        if len(part) >= spacing:
            pieces.append((_polyline(part[:, ::-1].astype(np.float64)), part,
                           float(baseline[part[:, 0], part[:, 1]].mean())))
    return pieces


def ink_mask(gray: np.ndarray) -> np.ndarray:
    """1 where a pixel is darker than its neighbourhood (writing), else 0."""
    return cv2.adaptiveThreshold(gray, 1, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 25, 15)


def line_spacing(lines: list[np.ndarray], shape: tuple[int, int]) -> float | None:
    """The page's median distance from a baseline to the nearest one above it (over the columns where one is), in
    the lines' pixels; None when no line has another above it."""
    return _median_gap(_neighbours(_spans(lines, shape))[0])


# ink_spacing: the page is cut into this many vertical strips, so that columns and a slight slant each keep their
# own rows of ink; a period shorter than SHORTEST_PERIOD model pixels is the texture of a stroke or of paper, not
# lines; the first peak of the autocorrelation at least PEAK_SHARE of its highest is the line period (the highest
# can be its double, every other line)
STRIPS, SHORTEST_PERIOD, PEAK_SHARE = 8, 6, 0.6


def ink_spacing(gray: np.ndarray, area: np.ndarray) -> float | None:
    """The spacing of the lines of writing within `area` (a 0/1 mask) of a grayscale page: the period of the rows
    of ink, the first strong peak of the autocorrelation of each strip's ink per row (summed over strips, to a
    tenth of a pixel); None when the area is too small to measure or has no period.

    It does not depend on what a layout model found: at the base layout model's 1024 pixels a charter's lines
    about 14 pixels apart come out as fragments that cross and overlap, and the spacing of those (line_spacing)
    reads 28 or 306 where the ink reads 14.3 and 14.4. Measured inside the area of the lines found, so that an
    illustration's texture does not count (on a page of coats of arms the whole page's ink reads 5.5 against
    lines 26.6 apart); within 2 pixels of the true baselines' spacing on 98 of 102 pages of the shared data's
    val, test and iForal pages, and more than 2 under it only on pages spaced 50 and more."""
    h, w = gray.shape
    longest = h // 6
    if longest <= SHORTEST_PERIOD + 1:
        return None
    ink = ink_mask(gray).astype(np.float64) * area
    total, strips = np.zeros(longest + 1), 0
    for k in range(STRIPS):
        cols = slice(k * w // STRIPS, (k + 1) * w // STRIPS)
        measured = area[:, cols].sum(axis=1)
        rows = measured > 0
        if rows.sum() < 3 * SHORTEST_PERIOD:
            continue
        profile = np.where(rows, ink[:, cols].sum(axis=1) / np.maximum(measured, 1), 0.0)
        profile[rows] -= profile[rows].mean()
        spectrum = np.fft.rfft(profile, n=2 * h)
        auto = np.fft.irfft(spectrum * np.conj(spectrum))[:longest + 1]
        if auto[0] > 0:
            total += auto / auto[0]
            strips += 1
    if not strips:
        return None
    t = np.arange(SHORTEST_PERIOD, longest)
    peaks = t[(total[t] > total[t - 1]) & (total[t] >= total[t + 1]) & (total[t] > 0)]
    if not len(peaks):
        return None
    first = int(peaks[np.argmax(total[peaks] >= PEAK_SHARE * total[peaks].max())])
    a, b, c = total[first - 1:first + 2]
    curve = a - 2 * b + c
    return float(first + (0.5 * (a - c) / curve if curve else 0.0))


def lines_area(polygons: list[np.ndarray], shape: tuple[int, int], reach: int = 10) -> np.ndarray:
    """A 0/1 mask of the polygons (model pixels) filled and widened by `reach` pixels every way."""
    area = np.zeros(shape, np.uint8)
    cv2.fillPoly(area, [np.round(p).astype(np.int32) for p in polygons if len(p) >= 3], 1)
    return cv2.dilate(area, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))


def _median_gap(above: list[np.ndarray]) -> float | None:
    """The median of the finite distances to the baseline above (None when there is none)."""
    seen = np.concatenate([g[np.isfinite(g)] for g in above] + [np.zeros(0)])
    return float(np.median(seen)) if len(seen) else None


# a page is enlarged at most this much beyond the model's size: time and memory grow with the square
ENLARGE_LIMIT = 2.0


def enlarged_size(size: int, trained: list[float], spacing: float | None) -> int | None:
    """The longer side that gives a page whose baselines are `spacing` pixels apart at `size` the median spacing
    of the model's training pages, when it is closer than their 5th percentile (`trained`: 5th percentile,
    median, 95th; segment.rescaled_size says why never smaller); else None. At most ENLARGE_LIMIT x size."""
    if len(trained) != 3 or spacing is None or spacing <= 0 or spacing >= trained[0]:
        return None
    larger = min(round(size * trained[1] / spacing), round(size * ENLARGE_LIMIT))
    return larger if larger > size else None


def _spans(lines: list[np.ndarray], shape: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each line's columns xs (within the page, MARGIN beyond its ends) and its baseline's height ys there."""
    w = shape[1]
    spans = []
    for line in lines:
        # the skeleton stops short of the ends of a baseline; a line's first and last letters reach beyond them
        x0, x1 = int(np.floor(line[:, 0].min())) - MARGIN, int(np.ceil(line[:, 0].max())) + MARGIN
        xs = np.arange(max(0, x0), min(w - 1, x1) + 1)
        order = np.argsort(line[:, 0])
        ys = np.interp(xs, line[order, 0], line[order, 1]) if len(xs) else np.zeros(0)
        spans.append((xs, ys))
    return spans


def _neighbours(spans: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per line and column, the distance to the nearest baseline above and below (inf where none overlaps)."""
    above = [np.full(len(xs), np.inf) for xs, _ in spans]
    below = [np.full(len(xs), np.inf) for xs, _ in spans]
    for i, (xi, yi) in enumerate(spans):
        for j, (xj, yj) in enumerate(spans):
            if i == j or not len(xi) or not len(xj) or xj[0] > xi[-1] or xj[-1] < xi[0]:
                continue
            lo, hi = max(xi[0], xj[0]), min(xi[-1], xj[-1])
            a, b = slice(lo - xi[0], hi - xi[0] + 1), slice(lo - xj[0], hi - xj[0] + 1)
            d = yi[a] - yj[b]  # > 0: line j is above line i
            above[i][a] = np.where(d > 0, np.minimum(above[i][a], d), above[i][a])
            below[i][a] = np.where(d < 0, np.minimum(below[i][a], -d), below[i][a])
    return above, below


def neighbour_gaps(lines: list[np.ndarray], shape: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each line, its columns xs, and per column the distance to the nearest baseline above and below
    (the page's median gap where no neighbour overlaps it)."""
    h = shape[0]
    spans = _spans(lines, shape)
    above, below = _neighbours(spans)
    typical = _median_gap(above)
    typical = min(max(12.0, 0.04 * h) if typical is None else typical, 0.25 * h)
    out = []
    for (xs, ys), up, down in zip(spans, above, below):
        up = np.minimum(np.where(np.isfinite(up), up, typical), 1.5 * typical)
        down = np.minimum(np.where(np.isfinite(down), down, typical), 1.5 * typical)
        out.append((xs, ys, np.stack([up, down])))
    return out


def line_polygon(trace: np.ndarray, body: np.ndarray, gap: tuple[np.ndarray, np.ndarray, np.ndarray],
                 reach: tuple[float, float] = (UP, DOWN)) -> tuple[np.ndarray, bool]:
    """The outline of the line's body between its neighbours: per column, the highest and lowest body pixel within
    the band reach[0] x gap above and reach[1] x gap below the baseline (UP and DOWN by default); a plain band where
    the body map has nothing."""
    xs, ys, (up, down) = gap
    up_share, down_share = reach
    if len(xs) < 2:
        return _band(trace, up.mean() if len(up) else 10.0, down.mean() if len(down) else 4.0), True
    top_limit = np.maximum(0, np.floor(ys - up_share * up)).astype(int)
    bottom_limit = np.minimum(body.shape[0] - 1, np.ceil(ys + down_share * down)).astype(int)
    rows = np.arange(body.shape[0])[:, None]
    inside = (rows >= top_limit) & (rows <= bottom_limit) & body[:, xs]
    found = inside.any(axis=0)
    if found.mean() < 0.3:
        return _band(trace, float(np.median(up)) * 0.6, float(np.median(down)) * 0.3), True
    top = np.where(found, inside.argmax(axis=0), ys - 0.4 * up)
    bottom = np.where(found, body.shape[0] - 1 - inside[::-1].argmax(axis=0), ys + 0.15 * down)
    top, bottom = np.minimum(top, ys - 1), np.maximum(bottom, ys + 1)  # the baseline is always inside
    k = max(1, int(np.median(up) // 2) | 1)  # smooth over about half a line height
    top, bottom = _running_min(top, k), -_running_min(-bottom, k)
    pick = np.unique(np.r_[np.arange(0, len(xs), STEP), len(xs) - 1])
    outline = np.r_[np.stack([xs[pick], top[pick]], 1), np.stack([xs[pick], bottom[pick]], 1)[::-1]]
    return outline.astype(np.float64), False


def _running_min(values: np.ndarray, k: int) -> np.ndarray:
    padded = np.pad(values, k // 2, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, k).min(axis=1)[:len(values)]


def _band(trace: np.ndarray, up: float, down: float) -> np.ndarray:
    """A band from `up` above to `down` below the polyline (perpendicular to its overall direction)."""
    d = trace[-1] - trace[0]
    d = d / max(np.hypot(*d), 1e-9)
    normal = np.array([d[1], -d[0]])  # points up for a line drawn left to right
    return np.r_[trace + normal * max(up, 2.0), (trace - normal * max(down, 1.0))[::-1]]


def line_type(probs: np.ndarray, pixels: np.ndarray, info: LayoutInfo) -> str | None:
    """The line type most probable along the line's baseline (None for a model without typed lines)."""
    if len(info.line_types) < 2:
        return info.line_types[0] if info.line_types else None
    first = 2 + len(info.region_types)
    scores = probs[first:first + len(info.line_types)][:, pixels[:, 0], pixels[:, 1]].sum(axis=1)
    return info.line_types[int(scores.argmax())]


def outlines(prob: np.ndarray, threshold: float) -> list[tuple[np.ndarray, float]]:
    """Each blob of one region class above `threshold` as (outline polygon, mean probability inside)."""
    mask = cv2.morphologyEx((prob > threshold).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    smallest = MIN_REGION * mask.size
    out = []
    for k in range(1, count):
        if stats[k, cv2.CC_STAT_AREA] < smallest:
            continue
        blob = (labels == k).astype(np.uint8)
        contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contour = max(contours, key=cv2.contourArea)
        simple = cv2.approxPolyDP(contour, 2.0, True).reshape(-1, 2)
        if len(simple) < 3:
            continue
        out.append((simple.astype(np.float64), round(float(prob[blob > 0].mean()), 4)))
    return out


def page_points(points: np.ndarray, scale: float) -> Points:
    """Model-scale x,y points in page pixels."""
    return [(float(x) / scale, float(y) / scale) for x, y in points]


"""Layout scores: baseline detection (Transkribus scheme, as kraken 7's `ketos segtest` applies it) and regions.

Baselines. Every polyline is resampled at RESAMPLE_STEP (5 px) along its length. A point scores 1 when its
distance to the other polyline is at most `tolerance` (default 10 page pixels; a shift of exactly the
tolerance still scores 1), falls linearly to 0 at 3 x tolerance (a point 2 x tolerance away scores 0.5) and
is 0 from there on: the Transkribus scheme's penalty (Grüning et al. 2017, arXiv:1705.03311). A pair of lines
scores the mean of its two directed scores (the predicted points against the true line, and the true points
against the predicted line). Lines are matched one to one by the Hungarian method on those pair scores;
precision is the sum of the matched pairs' scores over the number of predicted lines, recall the same sum
over the number of true lines. So a missing line costs recall only, an extra line precision only, and a true
line predicted as two halves gives one half-covered match plus one unmatched prediction.
This is kraken 7's definition, with two differences: distances are measured from a point to the other
polyline's segments (simplified within SIMPLIFY = 0.5 px, so that lines traced pixel by pixel stay fast), not
to its nearest resampled point (so a result does not depend on where the samples fall), and pages aggregate by summing (micro: every line weighs the same), where kraken averages page figures.
No predictions and no truth scores 1; either side empty alone scores 0.
The tolerance is in page pixels. kraken's `ketos segtest` measures at its network's output scale (its default
spec reads pages 1800 px high and strides by 4), so its 10 px are about 10 x page height / 450 page pixels;
pass that tolerance to compare with its figures.

Regions. Polygons are rasterised at page size by pycocotools (run-length encoded, so a 10,000-pixel page
costs little memory). Pixel IoU per class: intersection over union of the class's true and predicted areas,
summed over pages. COCO AP@[.5:.95] and AP50 of region instances per class, computed once over all pages
added; a predicted region's score is Region.conf (1.0 when None). A class in the truth that is never predicted
scores 0; a class only ever predicted scores 0 too (every region of it is a false positive) and counts in the
means; with no regions on either side, the means are 1. Polygons with fewer than three points have no area and
are left out.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.optimize import linear_sum_assignment

from loghi_ft.pages.layout import Layout, Points, Region

RESAMPLE_STEP = 5.0     # px between resampled points, as in the Transkribus scheme and kraken
FALLOFF = 3.0           # a point's score reaches 0 at FALLOFF x tolerance
SIMPLIFY = 0.5          # px: how far the polyline measured against may stray from the one given


@dataclass
class BaselineCounts:
    matched: float = 0.0    # sum of the scores of matched line pairs
    predicted: int = 0      # predicted lines
    truth: int = 0          # true lines

    @property
    def precision(self) -> float:
        return self._ratio(self.predicted)

    @property
    def recall(self) -> float:
        return self._ratio(self.truth)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def _ratio(self, lines: int) -> float:
        if self.predicted == 0 and self.truth == 0:
            return 1.0
        return self.matched / lines if lines else 0.0

    def __add__(self, other: BaselineCounts) -> BaselineCounts:
        return BaselineCounts(self.matched + other.matched, self.predicted + other.predicted,
                              self.truth + other.truth)


def baseline_counts(truth: list[Points], predicted: list[Points], tolerance: float = 10.0) -> BaselineCounts:
    """Score one page's predicted baselines against its true ones (see the module docstring)."""
    counts = BaselineCounts(predicted=len(predicted), truth=len(truth))
    if not truth or not predicted:
        return counts
    pred, true = _Polylines(predicted), _Polylines(truth)
    scores = (pred.scores_against(true, tolerance) + true.scores_against(pred, tolerance).T) / 2
    rows, cols = linear_sum_assignment(scores, maximize=True)
    counts.matched = float(scores[rows, cols].sum())
    return counts


class _Polylines:
    """A page's lines, resampled (the points that are scored) and as geometries (what points are measured to)."""

    def __init__(self, lines: list[Points]):
        vertices = [_vertices(points) for points in lines]
        samples = [_resample(pts) for pts in vertices]
        self.size = len(lines)
        self.counts = np.array([len(s) for s in samples])
        self.owner = np.repeat(np.arange(self.size), self.counts)
        self.points = shapely.points(np.concatenate(samples)) if self.counts.sum() else np.empty(0, dtype=object)
        self.kept = np.array([k for k, pts in enumerate(vertices) if len(pts)], dtype=np.int64)
        self.geometries = np.array([_geometry(vertices[k]) for k in self.kept], dtype=object)

    def scores_against(self, others: _Polylines, tolerance: float) -> np.ndarray:
        """(self.size, others.size): mean score of each line's points against each of the other polylines."""
        scores = np.zeros((self.size, others.size))
        if not len(self.points) or not len(others.kept):
            return scores
        # only pairs within reach can score above 0: the tree finds them without measuring the rest
        near_point, near_line = shapely.STRtree(others.geometries).query(
            self.points, predicate="dwithin", distance=FALLOFF * tolerance)
        dist = shapely.distance(self.points[near_point], others.geometries[near_line])
        point_score = np.clip((FALLOFF * tolerance - dist) / ((FALLOFF - 1) * tolerance), 0.0, 1.0)
        np.add.at(scores, (self.owner[near_point], others.kept[near_line]), point_score)
        return scores / np.maximum(self.counts, 1)[:, None]


def _vertices(points: Points) -> np.ndarray:
    """(n, 2) vertices with repeated ones dropped."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts[np.concatenate([[True], np.any(np.diff(pts, axis=0) != 0, axis=1)])] if len(pts) else pts


def _resample(pts: np.ndarray) -> np.ndarray:
    """Points evenly spaced along the polyline, at most RESAMPLE_STEP apart, both ends kept."""
    if len(pts) < 2:
        return pts
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    at = np.linspace(0.0, along[-1], math.ceil(along[-1] / RESAMPLE_STEP) + 1)
    return np.stack([np.interp(at, along, pts[:, 0]), np.interp(at, along, pts[:, 1])], axis=1)


def _geometry(pts: np.ndarray) -> shapely.Geometry:
    """The polyline to measure against; simplified within SIMPLIFY px, since a line traced pixel by pixel
    (thousands of vertices) would make every distance cost thousands of segment tests."""
    if len(pts) == 1:
        return shapely.points(pts[0])
    return shapely.simplify(shapely.linestrings(pts), SIMPLIFY)


@dataclass
class _ClassArea:
    intersection: float = 0.0
    union: float = 0.0
    truth: int = 0          # region instances
    predicted: int = 0


class RegionEvaluation:
    """Region scores accumulated over pages: pixel IoU summed, COCO AP computed once over all of them."""

    def __init__(self):
        self.areas: dict[str, _ClassArea] = {}
        self._images: list[dict] = []       # pycocotools' records of the pages, regions and predictions added
        self._truth: list[dict] = []
        self._predicted: list[dict] = []

    def add(self, truth: list[Region], predicted: list[Region], width: int, height: int) -> None:
        image_id = len(self._images) + 1
        self._images.append({"id": image_id, "width": width, "height": height})
        true_rles = _encode(truth, width, height)
        pred_rles = _encode(predicted, width, height)
        for name in {r.type for r, _ in true_rles} | {r.type for r, _ in pred_rles}:
            self._add_area(name, [m for r, m in true_rles if r.type == name],
                           [m for r, m in pred_rles if r.type == name])
        for region, rle in true_rles:
            self._truth.append({"image_id": image_id, "type": region.type, "segmentation": rle})
        for region, rle in pred_rles:
            self._predicted.append({"image_id": image_id, "type": region.type, "segmentation": rle,
                                    "score": 1.0 if region.conf is None else float(region.conf)})

    def _add_area(self, name: str, truth: list[dict], predicted: list[dict]) -> None:
        area = self.areas.setdefault(name, _ClassArea())
        area.truth += len(truth)
        area.predicted += len(predicted)
        if truth and predicted:
            t, p = coco_mask.merge(truth), coco_mask.merge(predicted)
            area.intersection += float(coco_mask.area(coco_mask.merge([t, p], intersect=True)))
            area.union += float(coco_mask.area(coco_mask.merge([t, p])))
        else:
            area.union += float(coco_mask.area(coco_mask.merge(truth or predicted)))

    def result(self) -> dict:
        """{"classes": {name: {iou, ap, ap50, truth, predicted}}, "iou", "ap", "ap50", "truth"}, classes sorted by
        name; "truth": how many true regions were added (with none, the means say nothing: 1 when none was found)."""
        names = sorted(self.areas)
        ap = self._coco_ap(names)
        classes = {}
        for name in names:
            area = self.areas[name]
            iou = area.intersection / area.union if area.union else 0.0
            classes[name] = {"iou": iou, "ap": ap[name][0], "ap50": ap[name][1],
                             "truth": area.truth, "predicted": area.predicted}
        return {"classes": classes, "truth": len(self._truth),
                **{key: _mean([c[key] for c in classes.values()]) for key in ("iou", "ap", "ap50")}}

    def _coco_ap(self, names: list[str]) -> dict[str, tuple[float, float]]:
        """(AP@[.5:.95], AP50) per class name, by pycocotools over every page added."""
        ap = {name: (0.0, 0.0) for name in names}
        if not self._truth or not self._predicted:
            return ap
        ids = {name: k + 1 for k, name in enumerate(names)}
        truth = COCO()
        truth.dataset = {"images": self._images, "categories": [{"id": i, "name": n} for n, i in ids.items()],
                         "annotations": [_annotation(a, k + 1, ids) for k, a in enumerate(self._truth)]}
        with contextlib.redirect_stdout(io.StringIO()):    # pycocotools prints progress
            truth.createIndex()
            found = truth.loadRes([{**_annotation(a, k + 1, ids), "score": a["score"]}
                                   for k, a in enumerate(self._predicted)])
            run = COCOeval(truth, found, iouType="segm")
            run.params.maxDets = [1, 10, 1000]     # COCO's 100 regions a page could cut a crowded page short
            run.evaluate()
            run.accumulate()
        # precision[T iou thresholds, R recall points, K classes, A area ranges ("all" first), M maxDets];
        # it is -1 (undefined) for a class without truth, which keeps its 0
        precision = run.eval["precision"][:, :, :, 0, -1]
        names_of = {i: n for n, i in ids.items()}
        for k, cat_id in enumerate(run.params.catIds):
            name = names_of[cat_id]
            if self.areas[name].truth:
                ap[name] = (float(precision[:, :, k].mean()), float(precision[0, :, k].mean()))
        return ap


def _encode(regions: list[Region], width: int, height: int) -> list[tuple[Region, dict]]:
    """Each region with an area, and its run-length mask at page size."""
    kept = [r for r in regions if len(r.polygon) >= 3]
    if not kept:
        return []
    flat = [[float(c) for point in r.polygon for c in point] for r in kept]
    return list(zip(kept, coco_mask.frPyObjects(flat, height, width)))


def _annotation(entry: dict, ann_id: int, ids: dict[str, int]) -> dict:
    rle = entry["segmentation"]
    return {"id": ann_id, "image_id": entry["image_id"], "category_id": ids[entry["type"]], "iscrowd": 0,
            "segmentation": rle, "area": float(coco_mask.area(rle)), "bbox": coco_mask.toBbox(rle).tolist()}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 1.0


def region_scores(truth: list[Region], predicted: list[Region], width: int, height: int) -> dict:
    """One page's region scores: RegionEvaluation.result() for that page alone."""
    evaluation = RegionEvaluation()
    evaluation.add(truth, predicted, width, height)
    return evaluation.result()


def layout_summary(baselines: BaselineCounts, regions: dict) -> dict[str, float | None]:
    """A flat dict for tables and JSON: overall figures (region_truth: how many true regions the region figures
    measure; with none they are None, as they would score nothing against nothing), then region_iou:NAME,
    region_ap:NAME, region_ap50:NAME."""
    scored = regions["truth"] > 0
    summary = {"baseline_precision": baselines.precision, "baseline_recall": baselines.recall,
               "baseline_f1": baselines.f1, "region_miou": regions["iou"] if scored else None,
               "region_ap": regions["ap"] if scored else None, "region_ap50": regions["ap50"] if scored else None,
               "region_truth": regions["truth"]}
    for name, scores in regions["classes"].items():
        for key in ("iou", "ap", "ap50"):
            summary[f"region_{key}:{name}"] = scores[key]
    return summary


@dataclass
class LayoutEvaluation:
    """Baselines and regions of predicted pages against their truth, accumulated page by page."""
    tolerance: float = 10.0
    baselines: BaselineCounts = field(default_factory=BaselineCounts)
    regions: RegionEvaluation = field(default_factory=RegionEvaluation)

    def add(self, truth: Layout, predicted: Layout) -> BaselineCounts:
        """Add a page (sized as the truth says); returns its baseline counts."""
        page = baseline_counts([ln.baseline for ln in truth.lines], [ln.baseline for ln in predicted.lines],
                               self.tolerance)
        self.baselines = self.baselines + page
        self.regions.add(truth.regions, predicted.regions, truth.width, truth.height)
        return page

    def summary(self) -> dict[str, float]:
        return layout_summary(self.baselines, self.regions.result())

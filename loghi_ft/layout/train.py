"""Train or fine-tune a layout model on PAGE XML pages with the recogniser's loop (train/loop.py): the same
best_val/, last/, metrics.csv, plots, Ctrl+C safety, resume and torchrun; only the task differs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from loghi_ft.devices import worker_count
from loghi_ft.errors import UserError
from loghi_ft.evaluation.layout_metrics import LayoutEvaluation
from loghi_ft.layout.data import (Distortion, LayoutPage, PageBatch, PageSet, collate, load_pages, page_sizes,
                                  with_types)
from loghi_ft.layout.extract import extract, line_spacing
from loghi_ft.layout.net import BACKBONES, LayoutInfo, LayoutNet, load_layout_model, probabilities, save_layout_model
from loghi_ft.model.adapt import follow_batch_statistics
from loghi_ft.pages.documents import find_pages
from loghi_ft.pages.layout import Layout
from loghi_ft.settings import as_dict, setting
from loghi_ft.train.checkpoint import STATE_JSON
from loghi_ft.train.dataset import WidthBatches, quiet_worker
from loghi_ft.train.loop import Validation, fit, open_run, optimisation, tensorboard, write_run_config
from loghi_ft.train.reporting import StopRequest
from loghi_ft.train.settings import HARDWARE, MODEL, TRAINING, RunSettings

DATA = "data"
BASELINE_WEIGHT = 5.0
AUGMENTATION = "augmentation (each training page, each epoch)"


@dataclass
class SegTrainSettings(RunSettings):
    train: list[Path] = setting([], "training pages: PAGE XML or ALTO files, folders of them (with their images), or "
                                ".txt files listing them", group=DATA)
    val: list[Path] = setting([], "validation pages, as --train (they pick best_val/)", group=DATA)
    base_model: Path | None = setting(None, "layout model folder to fine-tune; empty: train a new one", group=MODEL)
    size: int = setting(1024, "a new model sees pages scaled so that their longer side is this many pixels",
                        group=MODEL)
    crop: int = setting(768, "training sees random windows of at most this many pixels a side of each scaled page "
                        "(0: whole pages); validation always sees whole pages", group=MODEL)
    backbone: str = setting("mobilenet_v3_large", "a new model's torchvision backbone", choices=tuple(BACKBONES),
                            group=MODEL)
    tolerance: float = setting(10.0, "validation: a baseline point within this many page pixels of the truth scores "
                               "fully (Transkribus scheme; falls to 0 at 3x)", group=MODEL)
    no_augment: bool = setting(False, "no zoom, turn, contrast, colour or blur changes", group=AUGMENTATION)
    aug_zoom_out: float = setting(Distortion.zoom_out, "smallest random zoom of a training page (1: none)",
                                  group=AUGMENTATION)
    aug_zoom_in: float = setting(Distortion.zoom_in, "largest random zoom of a training page (1: none)",
                                 group=AUGMENTATION)
    aug_turn: float = setting(Distortion.turn, "random turn of a training page, up to this many degrees either way",
                              group=AUGMENTATION)
    epochs: int = setting(60, "passes over the training pages", group=TRAINING)
    batch_size: int = setting(2, "pages per optimizer step", group=TRAINING)
    learning_rate: float = setting(0.002, "peak learning rate, reached after the warm-up (0.0005 suits fine-tuning "
                                   "the base model)", group=TRAINING)
    warmup_steps: int = setting(50, "linear warm-up steps (at most a tenth of the run), then cosine decay to 5% "
                                "of the peak", group=TRAINING)
    patience: int = setting(15, "stop after this many validations without a better score; 0 for never",
                            group=TRAINING)
    workers: int | None = setting(None, "processes distorting pages beside the trainer; 0: in its own process; "
                                  "empty: one per core it leaves, at most 4", group=HARDWARE)


class LayoutTask:
    """Baselines, line bodies, regions and line types: per-pixel losses; validation segments each page as
    `segment` does and scores it; the score (baseline F1, averaged with region mean IoU when the validation pages
    have regions) picks best_val/."""
    metric, higher_is_better, unit, plotted = "score", True, "pages", ("score", "baseline_f1", "region_miou")

    def __init__(self, model: LayoutNet, pages: list[LayoutPage], tolerance: float):
        self.model, self.pages, self.tolerance = model, pages, tolerance
        self.has_regions = any(p.has_regions for p in pages)    # else regions are not scored

    def losses(self, net: nn.Module, batch: PageBatch, device: torch.device, autocast) -> Tensor:
        with autocast:
            logits = net(batch.images.to(device, non_blocking=True))
        return page_losses(logits.float(), batch, len(self.model.info.region_types), device)

    @torch.no_grad()
    def validate(self, loader, device: torch.device, autocast, stop: StopRequest | None) -> dict | None:
        start, loss, pages = time.perf_counter(), 0.0, 0
        evaluation = LayoutEvaluation(self.tolerance)
        info = self.model.info
        for batch in loader:
            if stop is not None and stop.signal:
                return None
            with autocast:
                logits = self.model(batch.images.to(device))
            loss += page_losses(logits.float(), batch, len(info.region_types), device).sum().item()
            for k, i in enumerate(batch.index):
                page = self.pages[i]
                found = extract(probabilities(logits[k:k + 1], info)[0], info, page.scale,
                                gray=padded_gray(page.pixels, logits.shape[-2:]))
                # a page without region ground truth (timeus-1858's) scores its lines only
                evaluation.add(page.truth, Layout(page.truth.image_path, page.truth.width, page.truth.height,
                                                  found.regions if page.has_regions else [], found.lines))
            pages += len(batch)
        figures = evaluation.summary()
        score = (figures["baseline_f1"] + figures["region_miou"]) / 2 if self.has_regions else figures["baseline_f1"]
        return {"loss": loss / max(pages, 1), "score": score, "baseline_f1": figures["baseline_f1"],
                "baseline_precision": figures["baseline_precision"], "baseline_recall": figures["baseline_recall"],
                # None without region ground truth
                "region_miou": figures["region_miou"], "region_ap": figures["region_ap"],
                "samples_per_s": pages / max(time.perf_counter() - start, 1e-9)}

    def summary(self, result: dict) -> str:
        regions = (f"region mIoU {result['region_miou']:.3f}, AP {result['region_ap']:.3f}"
                   if self.has_regions else "no regions in the validation pages' ground truth")
        return (f"score {result['score']:.4f}, baseline F1 {result['baseline_f1']:.4f} "
                f"(P {result['baseline_precision']:.3f} R {result['baseline_recall']:.3f}), {regions}")

    def save(self, folder: Path, training: dict) -> None:
        self.model.info.training = training
        save_layout_model(self.model, folder)


def padded_gray(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A page's RGB pixels as grayscale on a white page of `shape` (its batch's padded size), as the model saw it."""
    gray = np.full(tuple(shape), 255, np.uint8)
    gray[:pixels.shape[0], :pixels.shape[1]] = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    return gray


def page_losses(logits: Tensor, batch: PageBatch, regions: int, device: torch.device) -> Tensor:
    """Per page: baselines (BCE + Dice, as thin lines are a sliver of the page), line bodies (BCE), regions (BCE,
    only on pages that give regions) and line types (cross-entropy on typed lines' pixels)."""
    maps = batch.maps.to(device).float()
    valid = batch.valid.to(device).float()
    area = valid.sum(dim=(1, 2, 3)).clamp(min=1)
    bce = F.binary_cross_entropy_with_logits(logits[:, :2 + regions], maps, reduction="none") * valid
    # a baseline pixel weighs BASELINE_WEIGHT background pixels: baselines are about 1% of a page
    bce[:, 0] *= 1 + (BASELINE_WEIGHT - 1) * maps[:, 0]
    baseline = bce[:, 0].sum(dim=(1, 2)) / area
    p = torch.sigmoid(logits[:, 0]) * valid[:, 0]
    t = maps[:, 0]
    dice = 1 - (2 * (p * t).sum(dim=(1, 2)) + 1) / (p.sum(dim=(1, 2)) + t.sum(dim=(1, 2)) + 1)
    body = bce[:, 1].sum(dim=(1, 2)) / area
    loss = baseline + dice + body
    if regions:
        has = batch.has_regions.to(device).float()
        loss = loss + has * bce[:, 2:].sum(dim=(1, 2, 3)) / (area * regions)
    if batch.types is not None:
        types = batch.types.to(device)
        ce = F.cross_entropy(logits[:, 2 + regions:], types.clamp(min=0), reduction="none") * (types >= 0)
        loss = loss + 0.5 * ce.sum(dim=(1, 2)) / (types >= 0).sum(dim=(1, 2)).clamp(min=1)
    return loss


def segtrain(s: SegTrainSettings) -> Path | None:
    """The whole run; returns best_val/ (None on ranks other than 0)."""
    check(s)
    place, run_dir, log = open_run(s)
    resume_from = run_dir / "last" if s.resume and (run_dir / "last" / STATE_JSON).exists() else None
    base = load_layout_model(resume_from or s.base_model) if resume_from or s.base_model else None
    size = base.info.size if base else s.size

    # -- the pages at the model's scale, the classes they bring, the model over those classes
    pages = load_pages(page_files(s.train), size, log)
    val = load_pages(page_files(s.val), size, log)
    if not pages or not val:
        raise UserError(f"no usable {'training' if not pages else 'validation'} pages (with images and baselines) "
                        f"in {', '.join(map(str, s.train if not pages else s.val))}")
    regions, line_types = with_types(pages + val, base.info.region_types if base else [],
                                     base.info.line_types if base else [])
    info = LayoutInfo(regions, line_types, size, base.info.backbone if base else s.backbone,
                      base.info.width if base else LayoutInfo.width, spacing=spacing_of(pages))
    model = grown(base, info) if base else LayoutNet(info)
    # torchvision's MobileNetV3 keeps BatchNorm statistics with momentum 0.01: after a few hundred steps they still
    # remember the untrained network, and the model reads nothing in eval mode while it reads well in train mode
    follow_batch_statistics(model)
    mode = "resume" if resume_from else "fine-tune" if base else "fresh"

    # -- loaders, optimiser, precision
    workers = worker_count(s.workers)
    options = dict(num_workers=workers, collate_fn=collate, worker_init_fn=quiet_worker, persistent_workers=workers > 0,
                   pin_memory=place.device.type == "cuda", generator=torch.Generator().manual_seed(s.seed))
    sampler = WidthBatches(page_sizes(pages), s.batch_size, s.seed, place.rank, place.world, pool=8)
    augment = None if s.no_augment else Distortion(s.aug_zoom_out, s.aug_zoom_in, s.aug_turn)
    train_loader = DataLoader(PageSet(pages, regions, line_types, augment, s.seed, s.crop), batch_sampler=sampler,
                              **options)
    val_loader = DataLoader(PageSet(val, regions, line_types, None, s.seed), batch_size=1, **options)
    model.to(place.device)
    step = optimisation(s, place, model, len(sampler), resume_from)
    progress = step.progress
    settings = as_dict(s)
    write_run_config(run_dir, s, place, {
        "device": str(place.device), "processes": place.world, "loader_workers": workers, "precision": step.precision,
        "start": mode, "region_types": ", ".join(regions) or "none", "line_types": ", ".join(line_types) or "none",
        "training_pages": len(pages), "validation_pages": len(val), "steps_per_epoch": len(sampler),
        "total_steps": step.total_steps})
    log(f"layout model: {info.backbone}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, pages "
        f"at {size} px; regions: {', '.join(regions) or 'none'}; line types: {', '.join(line_types) or 'none'}")
    log(f"{len(pages)} training pages, {len(val)} validation pages ({mode}); {len(sampler)} steps per epoch on "
        f"{place.device} x{place.world}")
    if info.spacing:
        # a fine-tune measures its own pages: they are what it learns to read at this scale
        log(f"baseline spacing of the training pages at {size} px: median {info.spacing[1]:.1f} (5th-95th "
            f"percentile {info.spacing[0]:.1f}-{info.spacing[2]:.1f}); `segment` enlarges pages spaced closer")
    if resume_from:
        log(f"resuming from {resume_from}: epoch {progress.epoch + 1}, step {progress.step}")
    task = LayoutTask(model, val, s.tolerance)
    checking = Validation(task, val_loader, place.device, step.autocast, run_dir, settings, log,
                          tensorboard(run_dir) if s.tensorboard and place.master else None, s.patience)
    fit(s, place, step.net, train_loader, step.optimizer, step.autocast, checking, progress, [],
        validate_first=mode == "fine-tune", total_steps=step.total_steps, warmup=step.warmup)
    if not place.master:
        return None
    print(f"best_val: {run_dir / 'best_val'} (val score {progress.best:.4f})", flush=True)
    return run_dir / "best_val"


def spacing_of(pages: list[LayoutPage]) -> list[float]:
    """The 5th percentile, median and 95th percentile of the pages' baseline spacing at the model's scale (the
    training pages' own: what the model learnt to read); [] when no page has lines above one another."""
    spacings = [line_spacing([np.asarray(x.baseline, dtype=np.float64) for x in p.layout.lines], p.pixels.shape[:2])
                for p in pages]
    spacings = [x for x in spacings if x is not None]
    return [round(float(x), 2) for x in np.percentile(spacings, [5, 50, 95])] if spacings else []


def page_files(inputs: list[Path]) -> list[Path]:
    """The PAGE/ALTO files named, found in folders, or listed one per line in .txt files (paths relative to the
    list's folder)."""
    named = []
    for item in map(Path, inputs):
        if item.suffix.lower() == ".txt" and item.is_file():
            entries = item.read_text(encoding="utf-8").splitlines()
            named += [item.parent / e.strip() for e in entries if e.strip() and not e.startswith("#")]
        else:
            named.append(item)
    return list(find_pages(named))


def check(s: SegTrainSettings) -> None:
    """UserError for settings that cannot make a run."""
    if not s.train or not s.val:
        raise UserError("give the training pages (--train DIR ...) and the validation pages (--val DIR ...)")
    if not s.output or not s.model_name:
        raise UserError("give the run a folder and a name: --output DIR --model-name NAME")
    for name in ("epochs", "batch_size", "size"):
        if getattr(s, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(s, name)}")
    if s.size < 256:
        raise UserError(f"--size {s.size} is too small to see lines (at least 256)")
    if not 0 < s.aug_zoom_out <= s.aug_zoom_in:
        raise UserError(f"--aug-zoom-out {s.aug_zoom_out} and --aug-zoom-in {s.aug_zoom_in}: give 0 < out <= in")
    if not 0 <= s.aug_turn <= 45:
        raise UserError(f"--aug-turn {s.aug_turn} must be between 0 and 45 degrees")


def grown(base: LayoutNet, info: LayoutInfo) -> LayoutNet:
    """The base model with output channels for `info`'s classes: the base's classes keep their trained rows, new
    ones start fresh (as new characters do in charset_mode=union)."""
    model = LayoutNet(info)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("head.")}
    model.load_state_dict(state, strict=False)
    old, new = base.info, info
    rows = [0, 1] + [2 + old.region_types.index(r) for r in new.region_types if r in old.region_types]
    keep = [0, 1] + [2 + new.region_types.index(r) for r in new.region_types if r in old.region_types]
    if len(old.line_types) > 1 and len(new.line_types) > 1:
        rows += [2 + len(old.region_types) + old.line_types.index(t) for t in new.line_types if t in old.line_types]
        keep += [2 + len(new.region_types) + new.line_types.index(t) for t in new.line_types if t in old.line_types]
    with torch.no_grad():
        model.head.weight[keep] = base.head.weight[rows]
        model.head.bias[keep] = base.head.bias[rows]
    return model


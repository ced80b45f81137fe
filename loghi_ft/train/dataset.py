"""Training data: the lines of list files (through their caches), batches of similar widths, the loaders."""

from __future__ import annotations

import math
import signal
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from loghi_ft.model.codec import Codec
from loghi_ft.model.folder import ModelInfo
from loghi_ft.model.pixels import preprocess
from loghi_ft.model.vgsl import VGSLModel
from loghi_ft.pages.cache import ensure_cache
from loghi_ft.train.augment import Augment, augment

BATCH_WIDTH_STEP = 32  # batch widths rounded up to this: bounded shapes, bounded kernel caches (about 1.5% padding)


@dataclass
class Lines:
    """The lines of one or more list files: their caches, and per line its (cache, index), text, width, weight."""
    caches: list
    refs: list[tuple[int, int]]
    texts: list[str]
    widths: np.ndarray
    weights: np.ndarray

    def subset(self, keep: np.ndarray) -> "Lines":
        return Lines(self.caches, [self.refs[i] for i in keep], [self.texts[i] for i in keep], self.widths[keep],
                     self.weights[keep])


def open_lines(list_files: list[Path], height: int, form: str, rank: int, world: int) -> Lines:
    """The lines of the list files, their caches built by rank 0 first, texts in Unicode form `form`."""
    if world > 1 and rank != 0:
        torch.distributed.barrier()
    caches = [ensure_cache(Path(f), height) for f in list_files]
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    refs, texts, widths, weights = [], [], [np.zeros(0, int)], [np.zeros(0, np.float32)]
    for c, cache in enumerate(caches):
        refs += [(c, j) for j in range(len(cache))]
        texts += [t if form == "none" else unicodedata.normalize(form, t) for t in cache.texts]
        widths.append(np.asarray(cache.widths))
        weights.append(np.asarray(cache.weights, np.float32))
    return Lines(caches, refs, texts, np.concatenate(widths), np.concatenate(weights))


def trainable(lines: Lines, codec: Codec, model: VGSLModel, aug: Augment, log) -> tuple[Lines, int, int]:
    """The lines a run can learn from: characters the codec knows, texts that fit the model's output for the
    narrowest their augmented strip can get; returns them and the counts of lines dropped for either reason."""
    unknown = [i for i, t in enumerate(lines.texts) if codec.unknown(t)]
    if unknown:
        missing = "".join(dict.fromkeys(c for i in unknown for c in codec.unknown(lines.texts[i])))
        log(f"dropped {len(unknown)} of {len(lines.texts)} training lines with characters the model does not know: "
            f"{missing!r}")
    usable = np.ones(len(lines.texts), dtype=bool)
    usable[unknown] = False
    needed = np.array([ctc_frames_needed(codec.encode(t)) if ok else 0 for t, ok in zip(lines.texts, usable)])
    narrowest = np.maximum(1, np.floor(lines.widths * aug.min_width_factor) - (2 * aug.crop_max if aug.crop > 0 else 0))
    frames = model.output_lengths(torch.as_tensor(narrowest, dtype=torch.long)).numpy()
    too_long = usable & (needed > frames)
    if too_long.any():
        log(f"dropped {int(too_long.sum())} training lines whose text is longer than the model's output for their width")
    return lines.subset(np.flatnonzero(usable & ~too_long)), len(unknown), int(too_long.sum())


def ctc_frames_needed(ids: list[int]) -> int:
    """CTC needs one frame per label plus a blank between equal neighbours."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


class LineSet(Dataset):
    """Items (strip, background, label ids of `targets`, ground truth, weight) of some lines."""

    def __init__(self, lines: Lines, targets: list[str], codec: Codec, aug: Augment | None, seed: int):
        self.lines, self.targets, self.codec, self.aug, self.seed = lines, targets, codec, aug, seed

    def __len__(self) -> int:
        return len(self.lines.refs)

    def __getitem__(self, key):
        # training keys are (line, epoch): each line's distortion depends only on (seed, epoch, line),
        # so it is the same whichever worker draws it and wherever a resumed run starts
        i, epoch = key if isinstance(key, tuple) else (key, None)
        c, j = self.lines.refs[i]
        strip, _ = self.lines.caches[c][j]
        background = 255
        if self.aug is not None:
            strip, background = augment(strip, self.aug, np.random.default_rng([self.seed, epoch, i]))
        return (strip, background, self.codec.encode(self.targets[i]), self.lines.texts[i],
                float(self.lines.weights[i]))


@dataclass
class Batch:
    images: Tensor      # (N, C, H, W) float
    widths: Tensor      # (N,)
    targets: Tensor     # concatenated label ids
    target_lengths: Tensor
    texts: list[str]
    weights: Tensor | None  # per-line loss weights from the list file's weight column; None when all are 1

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader on a GPU run: page-locked tensors copy to the device asynchronously."""
        self.images, self.widths = self.images.pin_memory(), self.widths.pin_memory()
        self.targets, self.target_lengths = self.targets.pin_memory(), self.target_lengths.pin_memory()
        if self.weights is not None:
            self.weights = self.weights.pin_memory()
        return self


class Collate:
    """Strips -> model input through the model's own preprocess; a negative strip is padded with its own ground."""

    def __init__(self, info: ModelInfo):
        self.info = info

    def __call__(self, items) -> Batch:
        strips, backgrounds, ids, texts, weights = zip(*items)
        images, widths = preprocess(list(strips), self.info, width_step=BATCH_WIDTH_STEP, grounds=backgrounds)
        return Batch(images, widths, torch.tensor([k for i in ids for k in i], dtype=torch.long),
                     torch.tensor([len(i) for i in ids], dtype=torch.long), list(texts),
                     None if all(w == 1.0 for w in weights) else torch.tensor(weights, dtype=torch.float32))


class WidthBatches:
    """Batches of lines of similar width in an order fixed by (seed, epoch); rank r of w takes every w-th batch."""

    def __init__(self, widths: np.ndarray, batch_size: int, seed: int, rank: int = 0, world: int = 1, pool: int = 32):
        self.widths, self.batch_size, self.seed = widths, batch_size, seed
        self.rank, self.world, self.pool = rank, world, pool
        self.epoch, self.start = 0, 0

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.widths))
        batches = []
        # sort within pools of `pool` batches: similar widths together, yet a different mix each epoch
        chunk = self.batch_size * self.pool
        for k in range(0, len(order), chunk):
            part = order[k:k + chunk]
            part = part[np.argsort(self.widths[part], kind="stable")]
            batches += [part[b:b + self.batch_size].tolist() for b in range(0, len(part), self.batch_size)]
        batches = [batches[k] for k in rng.permutation(len(batches))]
        batches += batches[:(-len(batches)) % self.world]  # every rank gets as many
        return batches[self.rank::self.world]

    def __len__(self) -> int:
        """Batches per epoch for one rank (the same every epoch)."""
        chunk = self.batch_size * self.pool
        n = len(self.widths)
        batches = n // chunk * self.pool + math.ceil(n % chunk / self.batch_size)
        return math.ceil(batches / self.world)

    def __iter__(self):
        for batch in self.epoch_batches(self.epoch)[self.start:]:
            yield [(i, self.epoch) for i in batch]


def loaders(train: Lines, val: Lines | None, codec: Codec, info: ModelInfo, aug: Augment | None, batch_size: int,
            seed: int, workers: int, rank: int, world: int, pin: bool) -> tuple[DataLoader, DataLoader | None]:
    """The training loader (its batch_sampler a WidthBatches, set to an epoch and position before each pass) and
    the validation loader (width-sorted batches of twice the size; None when `val` is)."""
    if workers:
        # OpenCV's thread pool does not survive fork (a worker touching it hangs): one thread, no pool, before forking
        cv2.setNumThreads(1)
    options = dict(num_workers=workers, collate_fn=Collate(info), pin_memory=pin, worker_init_fn=quiet_worker,
                   persistent_workers=workers > 0,
                   generator=torch.Generator().manual_seed(seed))  # keeps the global RNG untouched
    train_loader = DataLoader(LineSet(train, train.texts, codec, aug, seed),
                              batch_sampler=WidthBatches(train.widths, batch_size, seed, rank, world), **options)
    if val is None:
        return train_loader, None
    # validation scores every line (CER counts what the model cannot know); its loss sees only known characters
    targets = ["".join(c for c in t if c in codec.index) for t in val.texts]
    order = np.argsort(val.widths, kind="stable")
    batches = [order[k:k + 2 * batch_size].tolist() for k in range(0, len(order), 2 * batch_size)]
    return train_loader, DataLoader(LineSet(val, targets, codec, None, seed), batch_sampler=batches, **options)


def quiet_worker(_: int) -> None:
    # Ctrl+C reaches the whole process group, a batch system's SIGTERM every process of the job: workers
    # leave stopping to the main process, which shuts them down (they also leave if it dies)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)

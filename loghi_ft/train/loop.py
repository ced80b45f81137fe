"""Train or fine-tune a line recogniser on list files; keep the model that did best on validation.

Read `train()` from top to bottom: settings, data, model, optimiser, then the loop in the order
things happen. The pieces above it (lines, batches, checkpoints, plots) are what the loop uses.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
import unicodedata
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from loghi_ft import __version__
from loghi_ft.train.augment import AUGMENTATIONS, Augment, augment
from loghi_ft.atomic import recover_folder, replace_folder, write_atomic
from loghi_ft.pages.cache import ensure_cache
from loghi_ft.errors import UserError
from loghi_ft.evaluation.metrics import ErrorCounts, char_errors, word_errors
from loghi_ft.model.codec import Codec, build_charset
from loghi_ft.model.folder import ModelInfo, load_model, save_model
from loghi_ft.model.pixels import DEFAULT_PREPROCESS, preprocess
from loghi_ft.model.vgsl import VGSLModel, build_model

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
# new output rows start this far below the lowest trained bias, so the base's predictions stand until they learn
NEW_ROW_BIAS_MARGIN = 8.0
BATCHNORM_MOMENTUM = 0.1
BATCH_WIDTH_STEP = 32  # batch widths rounded up to this: bounded shapes, bounded kernel caches (about 1.5% padding)


# ---------------------------------------------------------------- lines and batches

class LineSet(Dataset):
    """Lines of one or more caches; items are (strip, background, label ids of `targets`, ground truth, weight)."""

    def __init__(self, caches: list, refs: list[tuple[int, int]], texts: list[str], targets: list[str],
                 codec: Codec, aug: Augment | None, seed: int, weights: np.ndarray | None = None):
        self.caches, self.refs, self.texts, self.targets = caches, refs, texts, targets
        self.codec, self.aug, self.seed = codec, aug, seed
        self.weights = weights if weights is not None else np.ones(len(refs), np.float32)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, key):
        # training keys are (line, epoch): each line's distortion depends only on (seed, epoch, line),
        # so it is the same whichever worker draws it and wherever a resumed run starts
        i, epoch = key if isinstance(key, tuple) else (key, None)
        c, j = self.refs[i]
        strip, _ = self.caches[c][j]
        background = 255
        if self.aug is not None:
            strip, background = augment(strip, self.aug, np.random.default_rng([self.seed, epoch, i]))
        return strip, background, self.codec.encode(self.targets[i]), self.texts[i], float(self.weights[i])


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


def loghi_base_converted(base: Path, run_dir: Path, master: bool, log) -> Path:
    """A Loghi model folder given as base model is converted once into RUN/imported_base/."""
    from loghi_ft.model.loghi import import_loghi, is_loghi_model

    if not is_loghi_model(base):
        return base
    target = run_dir / "imported_base"
    if master and not (target / "model.json").exists():
        log(f"{base} is a Loghi model: converting it into {target}")
        import_loghi(base, target)
    if not master:
        while not (target / "model.json").exists():
            time.sleep(1)
    return target


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


def ctc_frames_needed(ids: list[int]) -> int:
    """CTC needs one frame per label plus a blank between equal neighbours."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def normalize(text: str, form: str) -> str:
    return text if form == "none" else unicodedata.normalize(form, text)


def open_lines(list_files: list[Path], height: int, form: str, rank: int, world: int
               ) -> tuple[list, list, list, np.ndarray, np.ndarray]:
    """Caches of the list files (built by rank 0 first), and (cache, line) refs, texts, widths, weights of all lines."""
    if world > 1 and rank != 0:
        torch.distributed.barrier()
    caches = [ensure_cache(Path(f), height) for f in list_files]
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    refs, texts, widths, weights = [], [], [], []
    for c, cache in enumerate(caches):
        refs += [(c, j) for j in range(len(cache))]
        texts += [normalize(t, form) for t in cache.texts]
        widths.append(np.asarray(cache.widths))
        weights.append(np.asarray(cache.weights, np.float32))
    if not caches:
        return caches, refs, texts, np.zeros(0, int), np.zeros(0, np.float32)
    return caches, refs, texts, np.concatenate(widths), np.concatenate(weights)


# ---------------------------------------------------------------- model, charset, checkpoints

def grow_output(base: VGSLModel, charset: list[str], base_charset: list[str], keep_rows: bool) -> VGSLModel:
    """The base model with an output layer over `charset`: the trained rows kept (union) or all new (replace)."""
    model = build_model(base.spec, len(charset) + 1)
    out = model.output_layer()
    prefix = f"layers.{len(model.layers) - 1}."
    model.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith(prefix)}, strict=False)
    if keep_rows:
        old, k = base.output_layer(), len(base_charset) + 1
        with torch.no_grad():
            out.weight[:k] = old.weight
            out.bias[:k] = old.bias
            # new characters start small and unlikely, so the base's readings stand until the rows learn
            out.weight[k:] = torch.randn_like(out.weight[k:]) * 1e-3
            out.bias[k:] = old.bias.min() - NEW_ROW_BIAS_MARGIN
    return model


def freeze(model: VGSLModel, parts: str | None) -> list[nn.Module]:
    """Stop gradients to the named parts; returns their modules (kept in eval mode so batch statistics stay)."""
    frozen = []
    for part in (parts or "").replace(" ", "").split(","):
        if not part:
            continue
        if part not in ("conv", "rnn"):
            raise UserError(f"--freeze takes conv, rnn or conv,rnn, not '{part}'")
        modules = model.conv_modules() if part == "conv" else model.recurrent_modules()
        for m in modules:
            m.requires_grad_(False)
        frozen += modules
    return frozen


def write_checkpoint(run_dir: Path, model: VGSLModel, info: ModelInfo, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """last/: a model folder plus the optimiser tensors and RNG states (safetensors) and the rest (JSON), swapped in whole."""
    tmp = run_dir / f".last.build-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, info, tmp)
    opt = optimizer.state_dict()
    tensors = {f"optimizer.{p}.{name}": v.detach().cpu().contiguous()
               for p, slots in opt["state"].items() for name, v in slots.items() if torch.is_tensor(v)}
    numpy_state = np.random.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.numpy"] = torch.from_numpy(numpy_state[1].astype(np.int64))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for d, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{d}"] = s
    save_file(tensors, tmp / STATE_TENSORS)
    python_state = random.getstate()
    state = dict(state, optimizer_groups=opt["param_groups"],
                 optimizer_scalars={str(p): {n: v for n, v in slots.items() if not torch.is_tensor(v)}
                                    for p, slots in opt["state"].items()},
                 rng_numpy=[numpy_state[0], *numpy_state[2:]],
                 rng_python=[python_state[0], list(python_state[1]), python_state[2]])
    (tmp / STATE_JSON).write_text(json.dumps(state, indent=1), encoding="utf-8")
    replace_folder(tmp, run_dir / "last")


def read_checkpoint(folder: Path, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the optimiser and the RNGs from last/; returns the loop's counters."""
    try:
        state = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(folder / STATE_TENSORS)
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder}: cannot read the training state to resume ({exc})") from None
    slots: dict[int, dict] = {int(p): dict(v) for p, v in state.pop("optimizer_scalars").items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, p, name = key.split(".", 2)
            slots.setdefault(int(p), {})[name] = value
    try:
        optimizer.load_state_dict({"state": slots, "param_groups": state.pop("optimizer_groups")})
    except (ValueError, KeyError) as exc:
        raise UserError(f"{folder}: the optimiser state does not fit this run (other --optimizer or --freeze?): {exc}") from None
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
    kind, *rest = state.pop("rng_numpy")
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), *rest))
    version, internal, gauss = state.pop("rng_python")
    random.setstate((version, tuple(internal), gauss))
    return state


# ---------------------------------------------------------------- what the user sees

def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """metrics.csv, loss.png and cer.png from all validations so far, each replaced atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(run_dir / "metrics.csv", buf.getvalue().encode("utf-8"))
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    steps = [r["step"] for r in rows]
    for name, series, ylabel in (("loss.png", (("train_loss", "train"), ("val_loss", "validation")), "CTC loss per line"),
                                 ("cer.png", (("val_cer", "validation CER"),), "character error rate")):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for key, label in series:
            ax.plot(steps, [r[key] for r in rows], marker="o", markersize=3, label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        if name == "cer.png":
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png")
        plt.close(fig)
        write_atomic(run_dir / name, png.getvalue())


class Log:
    """Lines for the user: stdout and train.log (rank 0 only)."""

    def __init__(self, path: Path | None):
        self.path = path

    def __call__(self, message: str) -> None:
        if self.path is None:
            return
        print(message, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


class StopRequest:
    """Ctrl+C / SIGTERM: finish the current step, write last/, leave; a second Ctrl+C aborts at once."""

    def __init__(self, announce: bool = True):
        self.signal: str | None = None
        self.previous = {}
        self.announce = announce

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread; a caller in another thread stops us its own way
        for s in (signal.SIGINT, signal.SIGTERM):
            self.previous[s] = signal.signal(s, self.handle)

    def uninstall(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        if self.announce:
            print(f"\n{self.signal}: stopping after this step and writing last/ (Ctrl+C again to abort at once)",
                  file=sys.stderr, flush=True)


def quiet_worker(_: int) -> None:
    # Ctrl+C reaches the whole process group, a batch system's SIGTERM every process of the job: workers
    # leave stopping to the main process, which shuts them down (they also leave if it dies)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def validate(model: VGSLModel, loader: DataLoader, codec: Codec, device: torch.device, autocast,
             stop: StopRequest | None) -> dict | None:
    """Val loss, CER and WER with greedy decoding; None when `stop` was asked for meanwhile."""
    was_training = model.training
    model.eval()
    start, loss, lines = time.perf_counter(), 0.0, 0
    chars, words = ErrorCounts(), ErrorCounts()
    for batch in loader:
        if stop is not None and stop.signal:
            model.train(was_training)
            return None
        with autocast:
            logits = model(batch.images.to(device, non_blocking=True, memory_format=torch.channels_last))
        lengths = model.output_lengths(batch.widths.to(device))
        log_probs = logits.float().log_softmax(-1)
        loss += F.ctc_loss(log_probs.transpose(0, 1), batch.targets.to(device), lengths, batch.target_lengths.to(device),
                           blank=0, reduction="sum", zero_infinity=True).item()
        for (text, _), truth in zip(codec.greedy(log_probs.cpu(), lengths.cpu()), batch.texts):
            chars.add(char_errors(truth, text))
            words.add(word_errors(truth, text))
        lines += len(batch.texts)
    model.train(was_training)
    seconds = time.perf_counter() - start
    return {"loss": loss / max(lines, 1), "cer": chars.rate, "wer": words.rate, "lines_per_s": lines / max(seconds, 1e-9)}


def pick_precision(choice: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast dtype, or None for fp32."""
    if choice == "fp32":
        return None
    if choice == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    # CPUs with bf16 instructions: a `small` training step takes 0.34 instead of 0.60 CPU seconds (AVX-512-bf16
    # EPYC, one thread, batch 16) and converges alike; elsewhere bf16 is emulated, slower than fp32
    return torch.bfloat16 if cpu_has_bf16() else None


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX-512-bf16 or AMX); Linux only, else False."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_list(gpu: str) -> list[int]:
    """`-1` -> [], `0` -> [0], `0,1` -> [0, 1]; UserError when this machine lacks them."""
    try:
        ids = [int(g) for g in str(gpu).replace(" ", "").split(",") if g != ""]
    except ValueError:
        raise UserError(f"--gpu takes -1 (CPU), a device number or numbers separated by commas, not '{gpu}'") from None
    if not ids or ids == [-1]:
        return []
    if min(ids) < 0:
        raise UserError(f"--gpu: -1 means the CPU and cannot be combined with devices ('{gpu}')")
    if len(set(ids)) != len(ids):
        raise UserError(f"--gpu {gpu}: a device is named twice")
    if not torch.cuda.is_available():
        raise UserError(f"--gpu {gpu}: no CUDA device is available here; use --gpu -1 for the CPU")
    if max(ids) >= torch.cuda.device_count():
        raise UserError(f"--gpu {gpu}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return ids


# ---------------------------------------------------------------- the run

def train(args: argparse.Namespace) -> Path | None:
    """The whole run; returns best_val/ (None on ranks other than 0)."""
    # -- where we run: one process, or one of several started by torchrun
    gpus = gpu_list(args.gpu)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{gpus[local % len(gpus)]}") if gpus else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    master = rank == 0
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)

    # -- the run folder and the starting model
    if not args.train_list or not args.val_list:
        raise UserError("give the training lines (--train-list F ...) and the validation lines (--val-list F)")
    if not args.model_name:
        raise UserError("give the run a name: --model-name NAME (OUTPUT/NAME/ will hold its models)")
    if bool(args.base_model) == bool(args.spec):
        raise UserError("give either --base-model DIR (fine-tune) or --spec VGSL|PRESET (train from scratch)")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if args.learning_rate <= 0:
        raise UserError(f"--learning-rate must be above 0, not {args.learning_rate}")
    run_dir = Path(args.output) / args.model_name
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        recover_folder(run_dir / "last")
    log = Log(run_dir / "train.log" if master else None)
    resume_from = run_dir / "last" if args.resume and (run_dir / "last" / STATE_JSON).exists() else None
    if args.resume and not resume_from:
        log(f"--resume: no checkpoint in {run_dir / 'last'}; starting a new run")
    if resume_from:
        model, base_info = load_model(resume_from)
        mode = "resume"
    elif args.base_model:
        model, base_info = load_model(loghi_base_converted(Path(args.base_model), run_dir, master, log))
        mode = args.charset_mode
    else:
        model, base_info = build_model(args.spec, 2), None  # checks the spec now; the output layer comes with the charset
        mode = "fresh"
    form = base_info.normalization if base_info else args.normalize

    # -- the lines, and the charset they and the charset mode give
    caches, refs, texts, widths, weights = open_lines(args.train_list, model.height, form, rank, world)
    val_caches, val_refs, val_texts, val_widths, _ = open_lines([args.val_list], model.height, form, rank, world)
    if not refs:
        raise UserError(f"no training lines in {', '.join(map(str, args.train_list))}")
    if not val_refs:
        raise UserError(f"no validation lines in {args.val_list}")
    if mode == "fresh":
        charset = build_charset(texts + val_texts)
        model = build_model(args.spec, len(charset) + 1)
    elif mode == "replace":
        charset = build_charset(texts + val_texts)
        model = grow_output(model, charset, base_info.charset, keep_rows=False)
    elif mode == "union":
        charset = Codec(base_info.charset).extend(texts + val_texts).charset
        if len(charset) > len(base_info.charset):
            model = grow_output(model, charset, base_info.charset, keep_rows=True)
    else:  # keep, resume: the model's charset as it is
        charset = list(base_info.charset)
    codec = Codec(charset)
    aug = Augment.off() if args.no_augment else Augment(**{k: getattr(args, f"aug_{k}") for k in AUGMENTATIONS})

    # -- drop what cannot be trained on: unknown characters (keep mode), texts too long for their line's width
    unknown = [i for i, t in enumerate(texts) if codec.unknown(t)]
    if unknown:
        missing = "".join(dict.fromkeys(c for i in unknown for c in codec.unknown(texts[i])))
        log(f"dropped {len(unknown)} of {len(texts)} training lines with characters the model does not know: {missing!r}")
    usable = np.ones(len(texts), dtype=bool)
    usable[unknown] = False
    needed = np.array([ctc_frames_needed(codec.encode(t)) if ok else 0 for t, ok in zip(texts, usable)])
    narrowest = np.maximum(1, np.floor(widths * aug.min_width_factor) - (2 * aug.crop_max if aug.crop > 0 else 0))
    frames = model.output_lengths(torch.as_tensor(narrowest, dtype=torch.long)).numpy()
    too_long = usable & (needed > frames)
    if too_long.any():
        log(f"dropped {int(too_long.sum())} training lines whose text is longer than the model's output for their width")
    keep = np.flatnonzero(usable & ~too_long)
    if len(keep) == 0:
        raise UserError(f"no training lines left: {len(unknown)} have characters the model does not know "
                        f"(--charset-mode {mode}), {int(too_long.sum())} are too long for their width")
    refs, texts, widths, weights = [refs[i] for i in keep], [texts[i] for i in keep], widths[keep], weights[keep]
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            # Keras' momentum (0.99, torch 0.01) lets the running statistics trail the weights by ~100 steps,
            # which wrecks validation in short fine-tuning runs; torch's 0.1 follows within ~10
            m.momentum = BATCHNORM_MOMENTUM
    frozen = freeze(model, args.freeze)
    # channels-last (NHWC) convolutions: one training step of `small` 0.30 -> 0.20 s, of `kraken` 2.5 -> 1.8 s (2 CPU
    # threads, bf16); the weights are saved contiguous as ever
    model.to(device, memory_format=torch.channels_last)
    info = ModelInfo(spec=model.spec, height=model.height, channels=model.channels, charset=charset,
                     preprocess=dict(base_info.preprocess) if base_info else dict(DEFAULT_PREPROCESS),
                     normalization=form, training={}, version=__version__)

    # -- batches of similar widths, loaded by worker processes
    workers = min(4, os.cpu_count() or 1) if args.workers is None else args.workers
    if workers:
        # OpenCV's thread pool does not survive fork (a worker touching it hangs): one thread, no pool, before forking
        cv2.setNumThreads(1)
    sampler = WidthBatches(widths, args.batch_size, args.seed, rank, world)
    loader_options = dict(num_workers=workers, collate_fn=Collate(info), pin_memory=device.type == "cuda",
                          worker_init_fn=quiet_worker, persistent_workers=workers > 0,
                          generator=torch.Generator().manual_seed(args.seed))  # keeps the global RNG untouched
    train_loader = DataLoader(LineSet(caches, refs, texts, texts, codec, None if args.no_augment else aug, args.seed, weights),
                              batch_sampler=sampler, **loader_options)
    # validation scores every line (CER counts what the model cannot know); its loss sees only known characters
    val_targets = ["".join(c for c in t if c in codec.index) for t in val_texts]
    order = np.argsort(val_widths, kind="stable")
    val_batches = [order[k:k + 2 * args.batch_size].tolist() for k in range(0, len(order), 2 * args.batch_size)]
    val_loader = DataLoader(LineSet(val_caches, val_refs, val_texts, val_targets, codec, None, args.seed),
                            batch_sampler=val_batches, **loader_options) if master else None
    steps_per_epoch = len(sampler)
    total_steps = args.epochs * steps_per_epoch
    warmup = min(args.warmup_steps, total_steps // 10)

    # -- optimiser: weight decay on weights, not on biases and normalisation
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}]
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    else:
        optimizer = torch.optim.RMSprop(groups, lr=args.learning_rate)
    step, epoch, position, best_cer, bad_validations, rows = 0, 0, 0, None, 0, []
    if resume_from:
        counters = read_checkpoint(resume_from, optimizer)
        step, epoch, position = counters["step"], counters["epoch"], counters["position"]
        best_cer, bad_validations, rows = counters["best_cer"], counters["bad_validations"], counters["rows"]
        if rank:
            torch.manual_seed(args.seed + rank + step)
    dtype = pick_precision(args.precision, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) if world > 1 else model
    writer = None
    if args.tensorboard and master:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        writer = SummaryWriter(str(run_dir / "tensorboard"))

    # -- what the run is, for the user and for the model folders
    settings = {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v)
                for k, v in vars(args).items() if not k.startswith("_")}
    precision = str(dtype).replace("torch.", "") if dtype else "fp32"
    if master:
        # a recipe that repeats the run (`--config config.yaml`), headed by what the settings came to
        derived = {"device": str(device), "processes": world, "loader_workers": workers, "precision": precision,
                   "start": mode, "characters": len(charset), "training_lines": len(refs),
                   "validation_lines": len(val_refs), "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                   "warmup_steps": warmup}
        recipe = {k: v for k, v in settings.items() if k not in ("command", "config", "resume")}
        header = "".join(f"# {k}: {v}\n" for k, v in derived.items())
        write_atomic(run_dir / "config.yaml",
                     (header + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)).encode("utf-8"))
    log(f"{model.describe()}; {sum(p.numel() for p in trainable) / 1e6:.2f} M trainable"
        + (f", {args.freeze} frozen" if frozen else ""))
    log(f"{len(refs)} training lines, {len(val_refs)} validation lines, {len(charset)} characters ({mode}); "
        f"{steps_per_epoch} steps per epoch on {device} x{world}, {precision}, {workers} loader workers")
    if resume_from:
        log(f"resuming from {resume_from}: epoch {epoch + 1}, step {step}"
            + (f", best val CER so far {best_cer:.2%}" if best_cer is not None else ""))

    def run_validation(train_loss: float, sync: bool = True, interruptible: bool = True) -> bool:
        """Validate on rank 0 and save best_val/ when the CER improved; True when early stopping says enough."""
        nonlocal best_cer, bad_validations
        shown_epoch = epoch if position == 0 and step > 0 else epoch + 1  # at an epoch's end, the one just done
        verdict = torch.zeros(1, device=device)
        result = validate(model, val_loader, codec, device, autocast, stop if interruptible else None) if master else None
        if result is not None:
            improved = best_cer is None or result["cer"] < best_cer
            lr = optimizer.param_groups[0]["lr"]
            rows.append({"epoch": shown_epoch, "step": step, "train_loss": round(train_loss, 5),
                         "val_loss": round(result["loss"], 5), "val_cer": round(result["cer"], 6),
                         "val_wer": round(result["wer"], 6), "lr": lr, "train_lines_per_s": round(speed, 2),
                         "val_lines_per_s": round(result["lines_per_s"], 2), "seconds": round(time.perf_counter() - started, 1)})
            if improved:
                best_cer, bad_validations = result["cer"], 0
                info.training = {"val_cer": result["cer"], "val_wer": result["wer"], "epoch": shown_epoch, "step": step,
                                 "base_model": settings["base_model"], "args": settings}
                save_model(model, info, run_dir / "best_val")
            else:
                bad_validations += 1
            write_metrics(run_dir, rows)
            if writer:
                for key in ("val_loss", "val_cer", "val_wer"):
                    writer.add_scalar(key.replace("_", "/", 1), rows[-1][key], step)
            log(f"epoch {shown_epoch} step {step}: train loss {train_loss:.3f}, val loss {result['loss']:.3f}, "
                f"CER {result['cer']:.2%}, WER {result['wer']:.2%}, lr {lr:.2e}, {speed:.1f} lines/s, "
                f"{rows[-1]['seconds']:.0f}s" + ("  (best)" if improved else ""))
            verdict[0] = float(0 < args.patience <= bad_validations)
        if world > 1 and sync:
            torch.distributed.broadcast(verdict, 0)
        return bool(verdict.item())

    # -- the loop: epochs of steps; validation after each epoch (and every --val-every steps)
    from tqdm import tqdm
    stop = StopRequest(announce=master)
    stop.install()  # every rank: torchrun passes a Ctrl+C on to each
    started = time.perf_counter()
    ddp_model.train()
    for m in frozen:
        m.eval()
    validated_at = rows[-1]["step"] if rows else None
    loss_sum, loss_lines, speed = 0.0, 0, 0.0
    finished = epoch >= args.epochs or (args.max_steps is not None and step >= args.max_steps)
    stopping = False
    try:
        while not finished and not stopping:
            sampler.epoch, sampler.start = epoch, position
            bar = tqdm(total=steps_per_epoch, initial=position, desc=f"epoch {epoch + 1}/{args.epochs}", unit="step",
                       disable=None if master else True, leave=False, dynamic_ncols=True)
            seen, tick = 0, time.perf_counter()
            noted = tick  # without a terminal (a batch job's log) progress is a line a minute instead of a bar
            for batch in train_loader:
                lr = lr_at(step, total_steps, args.learning_rate, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast:
                    logits = ddp_model(batch.images.to(device, non_blocking=True, memory_format=torch.channels_last))
                lengths = model.output_lengths(batch.widths.to(device))
                log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # CTC in fp32 whatever the autocast
                losses = F.ctc_loss(log_probs, batch.targets.to(device), lengths, batch.target_lengths.to(device),
                                    blank=0, reduction="none", zero_infinity=True)
                if batch.weights is not None:  # a line of weight 2 counts as two
                    losses = losses * batch.weights.to(device)
                loss = losses.sum() / len(batch.texts)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if args.grad_clip > 0:
                    nn.utils.clip_grad_norm_(trainable, args.grad_clip)
                optimizer.step()
                step, position = step + 1, position + 1
                loss_value = loss.item()
                loss_sum += loss_value * len(batch.texts)
                loss_lines += len(batch.texts)
                seen += len(batch.texts) * world
                speed = seen / max(time.perf_counter() - tick, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lines_s=f"{speed:.1f}", refresh=False)
                if bar.disable and master and time.perf_counter() - noted > 60:
                    noted = time.perf_counter()
                    log(f"epoch {epoch + 1} step {position}/{steps_per_epoch}: loss {loss_value:.3f}, {speed:.1f} lines/s")
                if writer:
                    writer.add_scalar("train/loss", loss_value, step)
                    writer.add_scalar("train/lr", lr, step)
                # all ranks leave at the same step: the signal reaches rank 0, the decision reaches all
                flag = torch.tensor([float(stop.signal is not None)], device=device)
                if world > 1:
                    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                stopping = bool(flag.item())
                finished = args.max_steps is not None and step >= args.max_steps
                if args.val_every and step % args.val_every == 0 and not stopping:
                    pause = time.perf_counter()
                    finished = run_validation(loss_sum / loss_lines) or finished
                    validated_at, loss_sum, loss_lines = step, 0.0, 0
                    tick += time.perf_counter() - pause  # lines/s counts training only
                if stopping or finished:
                    break
            else:
                epoch, position = epoch + 1, 0
                finished = epoch >= args.epochs
            bar.close()
            if not stopping and validated_at != step and (position == 0 or finished):
                finished = run_validation(loss_sum / max(loss_lines, 1)) or finished
                validated_at, loss_sum, loss_lines = step, 0.0, 0
        # stopped before any validation: validate once, so that there is a best_val/ to use
        if master and best_cer is None and validated_at != step:
            run_validation(loss_sum / loss_lines if loss_lines else float("nan"), sync=False, interruptible=False)
        if master:
            write_checkpoint(run_dir, model, info, optimizer,
                             {"step": step, "epoch": epoch, "position": position, "best_cer": best_cer,
                              "bad_validations": bad_validations, "rows": rows, "args": settings})
    finally:
        stop.uninstall()
        if writer:
            writer.close()
        if world > 1:
            torch.distributed.destroy_process_group()
    if not master:
        return None
    if stopping:
        log(f"stopped by {stop.signal or 'a signal'} at epoch {epoch + 1}, step {step}; resume with --resume")
    elif 0 < args.patience <= bad_validations:
        log(f"early stopping: val CER did not improve in {bad_validations} validations")
    best = run_dir / "best_val"
    print(f"best_val: {best} (val CER {best_cer * 100:.2f}%)", flush=True)
    return best

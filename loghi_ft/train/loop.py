"""Train or fine-tune a line recogniser on list files; keep the model that did best on validation.

Read `train()` from top to bottom: where it runs, the starting model, the lines and the charset they give, the
model as it trains, loaders and optimiser, then the loop in the order things happen. The data (dataset.py),
the checkpoints (checkpoint.py), what the user sees (reporting.py) and what changes a model (model/adapt.py)
live beside it.
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loghi_ft import __version__
from loghi_ft.atomic import recover_folder, write_atomic
from loghi_ft.devices import autocast_dtype, gpu_list, keep_freed_memory, worker_count
from loghi_ft.errors import UserError
from loghi_ft.evaluation.metrics import ErrorCounts, char_errors, word_errors
from loghi_ft.model.adapt import fit_charset, follow_batch_statistics, freeze, parameter_groups
from loghi_ft.model.codec import Codec
from loghi_ft.model.decode import Decoder
from loghi_ft.model.folder import ModelInfo, load_model, save_model
from loghi_ft.model.pixels import DEFAULT_PREPROCESS
from loghi_ft.model.vgsl import VGSLModel, build_model
from loghi_ft.settings import as_dict, recipe_text
from loghi_ft.train.checkpoint import STATE_JSON, read_checkpoint, write_checkpoint
from loghi_ft.train.dataset import Batch, Lines, loaders, open_lines, trainable
from loghi_ft.train.reporting import Log, StopRequest, write_metrics
from loghi_ft.train.settings import TrainSettings


@dataclass
class Place:
    """Where this process trains: its device, and its rank among `world` processes started by torchrun."""
    device: torch.device
    rank: int = 0
    world: int = 1
    distributed: bool = False  # started by torchrun: in a process group (NCCL or gloo) even when alone in it

    @property
    def master(self) -> bool:
        return self.rank == 0


@dataclass
class Progress:
    """The loop's counters: what last/ saves and a resumed run starts from."""
    step: int = 0
    epoch: int = 0           # epochs done
    position: int = 0        # steps done in the current epoch
    best: float | None = None  # the best validation figure so far (the task's metric)
    bad_validations: int = 0
    rows: list[dict] = field(default_factory=list)  # one per validation, as in metrics.csv


class Task(Protocol):
    """What the loop needs of a kind of model: its loss, its validation and how to save it."""
    model: nn.Module         # the model itself (not its DistributedDataParallel wrapper)
    metric: str              # the validation figure that picks best_val/ ("cer" for lines)
    higher_is_better: bool
    unit: str                # what a sample is, for speeds ("lines", "pages")
    plotted: tuple[str, ...]  # validation figures drawn in METRIC.png

    def losses(self, net: nn.Module, batch, device: torch.device, autocast) -> Tensor:
        """The forward pass and one loss per sample of the batch (weighted as the data says)."""

    def validate(self, loader, device: torch.device, autocast, stop: StopRequest | None) -> dict | None:
        """{"loss", the metric, other figures, "samples_per_s"}; None when `stop` was asked for meanwhile."""

    def summary(self, result: dict) -> str:
        """The validation figures for the log line."""

    def save(self, folder: Path, training: dict) -> None:
        """Write the model folder; `training` goes into its JSON."""


@dataclass
class Validation:
    """What validating and keeping the best model need, fixed for the run."""
    task: Task
    loader: torch.utils.data.DataLoader | None  # None on ranks other than 0
    device: torch.device
    autocast: object
    run_dir: Path
    settings: dict
    log: Log
    writer: object | None  # a tensorboard SummaryWriter
    patience: int


def train(s: TrainSettings) -> Path | None:
    """The whole run; returns best_val/ (None on ranks other than 0)."""
    check(s)
    place, run_dir, log = open_run(s)
    model, base_info, mode, resume_from = starting_model(s, run_dir, log)
    form = base_info.normalization if base_info else s.normalize

    # -- the lines, the model over the charset they and the charset mode give, the lines it can learn from
    model, codec, lines, val = lines_and_charset(s, place, model, base_info, mode, form, log)
    charset, aug = codec.charset, s.augmentation()

    # -- the model as it trains, its loaders and its optimiser
    follow_batch_statistics(model)
    frozen = freeze(model, s.freeze)
    # channels-last (NHWC) convolutions: one training step of `small` 0.30 -> 0.20 s, of `kraken` 2.5 -> 1.8 s (2 CPU
    # threads, bf16); the weights are saved contiguous as ever
    model.to(place.device, memory_format=torch.channels_last)
    info = ModelInfo(spec=model.spec, height=model.height, channels=model.channels, charset=charset,
                     preprocess=dict(base_info.preprocess) if base_info else dict(DEFAULT_PREPROCESS),
                     normalization=form, training={}, version=__version__)
    workers = worker_count(s.workers)
    train_loader, val_loader = loaders(lines, val if place.master else None, codec, info,
                                       None if s.no_augment else aug, s.batch_size, s.seed, workers, place.rank,
                                       place.world, pin=place.device.type == "cuda")
    sampler = train_loader.batch_sampler
    step = optimisation(s, place, model, len(sampler), resume_from)
    optimizer, progress, total_steps, warmup = step.optimizer, step.progress, step.total_steps, step.warmup
    net, autocast = step.net, step.autocast
    settings = as_dict(s)
    write_run_config(run_dir, s, place, {
        "device": str(place.device), "processes": place.world, "loader_workers": workers, "precision": step.precision,
        "start": mode, "characters": len(charset), "training_lines": len(lines.refs), "validation_lines": len(val.refs),
        "steps_per_epoch": len(sampler), "total_steps": total_steps, "warmup_steps": warmup})
    trained = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    log(f"{model.describe()}; {trained / 1e6:.2f} M trainable" + (f", {s.freeze} frozen" if frozen else ""))
    log(f"{len(lines.refs)} training lines, {len(val.refs)} validation lines, {len(charset)} characters ({mode}); "
        f"{len(sampler)} steps per epoch on {place.device} x{place.world}, {step.precision}, {workers} loader workers")
    if resume_from:
        log(f"resuming from {resume_from}: epoch {progress.epoch + 1}, step {progress.step}"
            + (f", best val CER so far {progress.best:.2%}" if progress.best is not None else ""))
    task = LineTask(model, info, codec)
    checking = Validation(task, val_loader, place.device, autocast, run_dir, settings, log,
                          tensorboard(run_dir) if s.tensorboard and place.master else None, s.patience)
    fit(s, place, net, train_loader, optimizer, autocast, checking, progress, frozen,
        validate_first=mode in ("union", "keep", "replace"), total_steps=total_steps, warmup=warmup)
    if not place.master:
        return None
    best = run_dir / "best_val"
    if progress.rows and min(progress.rows, key=lambda r: r["val_cer"])["step"] == 0:
        log("fine-tuning did not beat the base model on validation: best_val is the base model")
    print(f"best_val: {best} (val CER {progress.best * 100:.2f}%)", flush=True)
    return best


@dataclass
class Optimisation:
    """What the loop steps with, the same for any model: the optimiser and its schedule, the counters (restored when
    resuming), the model as the ranks share it, and the precision."""
    optimizer: torch.optim.Optimizer
    progress: Progress
    total_steps: int
    warmup: int
    net: nn.Module           # the model, wrapped in DistributedDataParallel when torchrun started this process
    autocast: object
    precision: str           # "bfloat16" or "fp32", for the log and config.yaml


def optimisation(s, place: Place, model: nn.Module, steps_per_epoch: int, resume_from: Path | None) -> Optimisation:
    """The optimiser over the model's trainable parameters, the warm-up and cosine schedule over the run, last/'s
    optimiser state and counters when resuming, the DDP wrapper and the autocast of --precision."""
    total_steps = s.epochs * steps_per_epoch
    warmup = min(s.warmup_steps, total_steps // 10)
    groups = parameter_groups(model, s.weight_decay)
    optimizer = (torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.RMSprop)(groups, lr=s.learning_rate)
    progress = Progress()
    if resume_from:
        progress = resumed_progress(read_checkpoint(resume_from, optimizer))
        if place.rank:
            torch.manual_seed(s.seed + place.rank + progress.step)
    dtype = autocast_dtype(s.precision, place.device.type)
    autocast = torch.autocast(place.device.type, dtype=dtype) if dtype else nullcontext()
    net = nn.parallel.DistributedDataParallel(
        model, device_ids=[place.device] if place.device.type == "cuda" else None) if place.distributed else model
    return Optimisation(optimizer, progress, total_steps, warmup, net, autocast,
                        str(dtype).replace("torch.", "") if dtype else "fp32")


def write_run_config(run_dir: Path, s, place: Place, derived: dict) -> None:
    """config.yaml (rank 0): a recipe that repeats the run (`--config config.yaml`), headed by what the settings
    came to."""
    if place.master:
        header = "".join(f"# {k}: {v}\n" for k, v in derived.items())
        write_atomic(run_dir / "config.yaml", (header + recipe_text(s, leave_out=("resume",))).encode("utf-8"))


def check(s: TrainSettings) -> None:
    """UserError for settings that cannot make a run."""
    if not s.train_list or not s.val_list:
        raise UserError("give the training lines (--train-list F ...) and the validation lines (--val-list F)")
    if not s.output or not s.model_name:
        raise UserError("give the run a folder and a name: --output DIR --model-name NAME (DIR/NAME/ will hold its models)")
    if bool(s.base_model) == bool(s.spec):
        raise UserError("give either --base-model DIR (fine-tune) or --spec VGSL|PRESET (train from scratch)")
    for name in ("epochs", "batch_size"):
        if getattr(s, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(s, name)}")
    if s.learning_rate <= 0:
        raise UserError(f"--learning-rate must be above 0, not {s.learning_rate}")


def open_run(s) -> tuple[Place, Path, Log]:
    """This process placed (start_process), the run's folder OUTPUT/NAME (made, last/ recovered) and its log."""
    place = start_process(s)
    run_dir = Path(s.output) / s.model_name
    if place.master:
        run_dir.mkdir(parents=True, exist_ok=True)
        recover_folder(run_dir / "last")
    return place, run_dir, Log(run_dir / "train.log" if place.master else None)


def start_process(s: TrainSettings) -> Place:
    """This process's device, its place among torchrun's processes (joined here), its threads and seeds."""
    gpus = gpu_list(s.gpu)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{gpus[local % len(gpus)]}") if gpus else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed = "LOCAL_RANK" in os.environ
    if distributed:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    if s.threads:
        torch.set_num_threads(s.threads)
    if device.type == "cpu":
        keep_freed_memory()
    random.seed(s.seed + rank)
    np.random.seed(s.seed + rank)
    torch.manual_seed(s.seed + rank)
    return Place(device, rank, world, distributed)


def starting_model(s: TrainSettings, run_dir: Path, log: Log) -> tuple[VGSLModel, ModelInfo | None, str, Path | None]:
    """The model the run starts from, its folder's description, the charset mode, and last/ when resuming."""
    resume_from = run_dir / "last" if s.resume and (run_dir / "last" / STATE_JSON).exists() else None
    if s.resume and not resume_from:
        log(f"--resume: no checkpoint in {run_dir / 'last'}; starting a new run")
    if resume_from:
        return *load_model(resume_from), "resume", resume_from
    if s.base_model:
        return *load_model(Path(s.base_model)), s.charset_mode, None
    # the spec is checked now; the output layer comes with the charset
    return build_model(s.spec, 2), None, "fresh", None


def lines_and_charset(s: TrainSettings, place: Place, model: VGSLModel, base_info: ModelInfo | None, mode: str,
                      form: str, log: Log) -> tuple[VGSLModel, Codec, Lines, Lines]:
    """The training and validation lines, the model with an output over the charset they and the charset mode
    give, its codec, and of the training lines those the model can learn from."""
    lines = open_lines(s.train_list, model.height, form, place.rank, place.world)
    val = open_lines([s.val_list], model.height, form, place.rank, place.world)
    if not lines.refs:
        raise UserError(f"no training lines in {', '.join(map(str, s.train_list))}")
    if not val.refs:
        raise UserError(f"no validation lines in {s.val_list}")
    model, charset = fit_charset(model, base_info, mode, lines.texts + val.texts, s.spec)
    codec = Codec(charset)
    lines, unknown, too_long = trainable(lines, codec, model, s.augmentation(), log)
    if not lines.refs:
        raise UserError(f"no training lines left: {unknown} have characters the model does not know "
                        f"(--charset-mode {mode}), {too_long} are too long for their width")
    return model, codec, lines, val


def fit(s, place: Place, net: nn.Module, loader, optimizer, autocast, checking: Validation, progress: Progress,
        frozen: list[nn.Module], *, validate_first: bool, total_steps: int, warmup: int) -> bool:
    """The loop of any model: epochs of steps, validation after each epoch (and every --val-every steps), Ctrl+C
    and SIGTERM stopping cleanly, last/ at the end; True when a signal stopped it. `validate_first`: the starting
    model (a base being fine-tuned) is row 0 and best_val/ until a trained one does better, so that a fine-tune
    never leaves a model worse than the one it started from."""
    stop = StopRequest(announce=place.master)
    stop.install()  # every rank: torchrun passes a Ctrl+C on to each
    try:
        if validate_first and not progress.rows:
            validate_and_keep(checking, progress, float("nan"), 0.0, optimizer, time.perf_counter(), stop, place)
        net.train()
        for m in frozen:
            m.eval()
        stopped = run_epochs(s, place, net, loader, optimizer, autocast, checking, progress, stop, total_steps, warmup)
        if place.master:
            write_checkpoint(checking.run_dir, checking.task.save, optimizer, dict(asdict(progress), args=checking.settings))
    finally:
        stop.uninstall()
        close_loaders(loader, checking.loader)
        if checking.writer:
            checking.writer.close()
        if place.distributed:
            torch.distributed.destroy_process_group()
    if place.master:
        if stopped:
            checking.log(f"stopped by {stop.signal or 'a signal'} at epoch {progress.epoch + 1}, step {progress.step}; "
                         "resume with --resume")
        elif 0 < s.patience <= progress.bad_validations:
            checking.log(f"early stopping: val {checking.task.metric} did not improve in {progress.bad_validations} "
                         "validations")
    return stopped


def close_loaders(*loaders) -> None:
    """Ends the loaders' persistent worker processes now. Left to the interpreter's exit, multiprocessing sends them
    SIGTERM, which they ignore (dataset.quiet_worker), and then waits for them: a fine-tune with a worker whose
    loaders were still referenced at exit printed best_val and hung there."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)  # DataLoader keeps its persistent workers' iterator here
        if iterator is not None:
            iterator._shutdown_workers()
            loader._iterator = None


def run_epochs(s: TrainSettings, place: Place, net: nn.Module, loader, optimizer, autocast, checking: Validation,
               progress: Progress, stop: StopRequest, total_steps: int, warmup: int) -> bool:
    """Train until the epochs, --max-steps, early stopping or a signal end it; True when a signal did."""
    from tqdm import tqdm

    sampler, p, unit = loader.batch_sampler, progress, checking.task.unit
    started = time.perf_counter()
    validated_at = p.rows[-1]["step"] if p.rows else None
    loss_sum, loss_lines, speed = 0.0, 0, 0.0
    finished = p.epoch >= s.epochs or (s.max_steps is not None and p.step >= s.max_steps)
    stopping = False
    while not finished and not stopping:
        sampler.epoch, sampler.start = p.epoch, p.position
        bar = tqdm(total=len(sampler), initial=p.position, desc=f"epoch {p.epoch + 1}/{s.epochs}", unit="step",
                   disable=None if place.master else True, leave=False, dynamic_ncols=True)
        seen, tick = 0, time.perf_counter()
        noted = tick  # without a terminal (a batch job's log) progress is a line a minute instead of a bar
        for batch in loader:
            lr = lr_at(p.step, total_steps, s.learning_rate, warmup)
            loss, samples = train_step(net, batch, checking.task, optimizer, lr, autocast, place.device, s.grad_clip)
            p.step, p.position = p.step + 1, p.position + 1
            loss_sum, loss_lines = loss_sum + loss * samples, loss_lines + samples
            seen += samples * place.world
            speed = seen / max(time.perf_counter() - tick, 1e-9)
            bar.update(1)
            bar.set_postfix({"loss": f"{loss:.3f}", f"{unit}_s": f"{speed:.1f}"}, refresh=False)
            if bar.disable and place.master and time.perf_counter() - noted > 60:
                noted = time.perf_counter()
                checking.log(f"epoch {p.epoch + 1} step {p.position}/{len(sampler)}: loss {loss:.3f}, {speed:.1f} {unit}/s")
            if checking.writer:
                checking.writer.add_scalar("train/loss", loss, p.step)
                checking.writer.add_scalar("train/lr", lr, p.step)
            stopping = agree(stop.signal is not None, place)
            finished = s.max_steps is not None and p.step >= s.max_steps
            if s.val_every and p.step % s.val_every == 0 and not stopping:
                pause = time.perf_counter()
                finished = validate_and_keep(checking, p, loss_sum / loss_lines, speed, optimizer, started, stop,
                                             place) or finished
                validated_at, loss_sum, loss_lines = p.step, 0.0, 0
                tick += time.perf_counter() - pause  # lines/s counts training only
            if stopping or finished:
                break
        else:
            p.epoch, p.position = p.epoch + 1, 0
            finished = p.epoch >= s.epochs
        bar.close()
        if not stopping and validated_at != p.step and (p.position == 0 or finished):
            finished = validate_and_keep(checking, p, loss_sum / max(loss_lines, 1), speed, optimizer, started,
                                         stop, place) or finished
            validated_at, loss_sum, loss_lines = p.step, 0.0, 0
    # stopped before any validation: validate once, so that there is a best_val/ to use (rank 0 alone: the
    # others have left the loop, so no decision is shared)
    if place.master and p.best is None and validated_at != p.step:
        validate_and_keep(checking, p, loss_sum / loss_lines if loss_lines else float("nan"), speed, optimizer,
                          started, None, Place(place.device))
    return stopping


def train_step(net: nn.Module, batch, task: Task, optimizer: torch.optim.Optimizer, lr: float, autocast,
               device: torch.device, grad_clip: float) -> tuple[float, int]:
    """One optimizer step at learning rate `lr`; returns the batch's mean loss per sample and its samples."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    losses = task.losses(net, batch, device, autocast)
    loss = losses.sum() / len(losses)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_([q for q in net.parameters() if q.requires_grad], grad_clip)
    optimizer.step()
    return loss.item(), len(losses)


class LineTask:
    """A line recogniser: CTC loss, validation read as `infer` reads (greedy), CER picks best_val/."""
    metric, higher_is_better, unit, plotted = "cer", False, "lines", ("cer",)

    def __init__(self, model: VGSLModel, info: ModelInfo, codec: Codec):
        self.model, self.info, self.codec = model, info, codec

    def losses(self, net: nn.Module, batch: Batch, device: torch.device, autocast) -> Tensor:
        losses, _, _ = ctc_losses(net, batch, device, autocast)
        if batch.weights is not None:  # a line of weight 2 counts as two
            losses = losses * batch.weights.to(device)
        return losses

    @torch.no_grad()
    def validate(self, loader, device: torch.device, autocast, stop: StopRequest | None) -> dict | None:
        """Val loss, CER and WER; None when `stop` was asked for meanwhile."""
        start, loss, lines = time.perf_counter(), 0.0, 0
        chars, words = ErrorCounts(), ErrorCounts()
        decoder = Decoder(self.codec)
        for batch in loader:
            if stop is not None and stop.signal:
                return None
            losses, log_probs, lengths = ctc_losses(self.model, batch, device, autocast)
            loss += losses.sum().item()
            for decoded, truth in zip(decoder(log_probs.cpu(), lengths.cpu()), batch.texts):
                chars.add(char_errors(truth, decoded.text))
                words.add(word_errors(truth, decoded.text))
            lines += len(batch.texts)
        seconds = time.perf_counter() - start
        return {"loss": loss / max(lines, 1), "cer": chars.rate, "wer": words.rate,
                "samples_per_s": lines / max(seconds, 1e-9)}

    def summary(self, result: dict) -> str:
        return f"CER {result['cer']:.2%}, WER {result['wer']:.2%}"

    def save(self, folder: Path, training: dict) -> None:
        self.info.training = training
        save_model(self.model, self.info, folder)


def ctc_losses(net: nn.Module, batch: Batch, device: torch.device, autocast) -> tuple[Tensor, Tensor, Tensor]:
    """The forward pass and each line's CTC loss (in fp32 whatever the autocast); also the log-probabilities
    (N, T, K) and their valid lengths, for decoding."""
    with autocast:
        logits = net(batch.images.to(device, non_blocking=True, memory_format=torch.channels_last))
    lengths = getattr(net, "module", net).output_lengths(batch.widths.to(device))
    log_probs = logits.float().log_softmax(-1)
    losses = F.ctc_loss(log_probs.transpose(0, 1), batch.targets.to(device), lengths, batch.target_lengths.to(device),
                        blank=0, reduction="none", zero_infinity=True)
    return losses, log_probs, lengths


def validate(v: Validation, stop: StopRequest | None) -> dict | None:
    """The task's validation with its model in eval mode."""
    model = v.task.model
    was_training = model.training
    model.eval()
    try:
        return v.task.validate(v.loader, v.device, v.autocast, stop)
    finally:
        model.train(was_training)


def validate_and_keep(v: Validation, p: Progress, train_loss: float, speed: float, optimizer, started: float,
                      stop: StopRequest | None, place: Place) -> bool:
    """Validate on rank 0, record it, save best_val/ when the metric improved; True when early stopping says
    enough. `stop` lets a signal cut validation short (None: validate whatever happens)."""
    # at an epoch's end, the one just done; before the first step, epoch 0 (the starting model)
    shown_epoch = p.epoch if p.position == 0 else p.epoch + 1
    enough = False
    task, unit = v.task, v.task.unit
    result = validate(v, stop) if place.master else None
    if result is not None:
        score = result[task.metric]
        improved = p.best is None or (score > p.best if task.higher_is_better else score < p.best)
        lr = optimizer.param_groups[0]["lr"]
        # None: a figure this validation could not measure (regions on pages without region ground truth)
        figures = {f"val_{k}": None if x is None else round(x, 6) for k, x in result.items()
                   if k not in ("loss", "samples_per_s")}
        p.rows.append({"epoch": shown_epoch, "step": p.step, "train_loss": round(train_loss, 5),
                       "val_loss": round(result["loss"], 5), **figures, "lr": lr,
                       f"train_{unit}_per_s": round(speed, 2), f"val_{unit}_per_s": round(result["samples_per_s"], 2),
                       "seconds": round(time.perf_counter() - started, 1)})
        if improved:
            p.best, p.bad_validations = score, 0
            task.save(v.run_dir / "best_val", {**figures, "epoch": shown_epoch, "step": p.step,
                                               "base_model": v.settings["base_model"], "args": v.settings})
        else:
            p.bad_validations += 1
        write_metrics(v.run_dir, p.rows, task.metric, task.plotted)
        # last/ after every validation too: a run killed without warning (a lost session, a pre-empted node)
        # resumes from here rather than from nothing
        write_checkpoint(v.run_dir, task.save, optimizer, dict(asdict(p), args=v.settings))
        if v.writer:
            for key in ("val_loss", *(k for k, x in figures.items() if x is not None)):
                v.writer.add_scalar(key.replace("_", "/", 1), p.rows[-1][key], p.step)
        trained = f"train loss {train_loss:.3f}, " if p.step else "the starting model: "
        v.log(f"epoch {shown_epoch} step {p.step}: {trained}val loss {result['loss']:.3f}, {task.summary(result)}, "
              f"lr {lr:.2e}, {speed:.1f} {unit}/s, {p.rows[-1]['seconds']:.0f}s" + ("  (best)" if improved else ""))
        enough = 0 < v.patience <= p.bad_validations
    return agree(enough, place, source=0)


def resumed_progress(state: dict) -> Progress:
    """The loop's counters from last/'s state (earlier runs named the best CER best_cer)."""
    state = dict(state)
    if "best_cer" in state:
        state["best"] = state.pop("best_cer")
    return Progress(**{f.name: state[f.name] for f in fields(Progress)})


def agree(flag: bool, place: Place, source: int | None = None) -> bool:
    """The same decision on every rank: rank `source`'s flag, or (None) whether any rank raised it."""
    if place.world == 1:
        return flag
    value = torch.tensor([float(flag)], device=place.device)
    if source is None:
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    else:
        torch.distributed.broadcast(value, source)
    return bool(value.item())


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def tensorboard(run_dir: Path):
    """A SummaryWriter into RUN/tensorboard/."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(run_dir / "tensorboard"))

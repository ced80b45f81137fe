"""Train a line recogniser from scratch (--spec) or fine-tune one (--base-model); keeps the best in OUTPUT/NAME/best_val/.

Several GPUs (--gpu 0,1) run one process per GPU under torchrun, started here.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from loghi_ft.train.augment import Augment
from loghi_ft.commands.common import add_batch_size, add_config, add_gpu, add_output

DEFAULTS = Augment()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--train-list", type=Path, nargs="+", help="list file(s) of training lines (path<TAB>text)")
    data.add_argument("--val-list", type=Path, help="list file of validation lines")
    model = parser.add_argument_group("model")
    model.add_argument("--base-model", type=Path, help="model folder to fine-tune")
    model.add_argument("--spec", help="VGSL spec or preset name (small, recommended, kraken) to train from scratch")
    model.add_argument("--charset-mode", choices=["union", "keep", "replace"], default="union",
                       help="fine-tuning: union adds rows for new characters and keeps the trained ones; keep drops "
                            "lines with unknown characters; replace starts a new output layer (default: union)")
    model.add_argument("--freeze", help="keep parts of a base model fixed: conv, rnn or conv,rnn")
    model.add_argument("--normalize", choices=["NFC", "NFD", "none"], default="NFC",
                       help="Unicode normalisation of texts for a new model (a base model keeps its own; default: NFC)")
    add_output(parser, help="folder for the run: OUTPUT/NAME/ gets best_val/, last/, metrics and plots")
    parser.add_argument("--model-name", help="name of the run (folder under OUTPUT)")
    run = parser.add_argument_group("training")
    run.add_argument("--epochs", type=int, default=50, help="passes over the training lines (default: 50)")
    add_batch_size(run, 16)
    run.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate (default: 0.001)")
    run.add_argument("--optimizer", choices=["adamw", "rmsprop"], default="adamw", help="(default: adamw)")
    run.add_argument("--warmup-steps", type=int, default=200,
                     help="steps of linear warm-up before the cosine decay, at most a tenth of the run (default: 200)")
    run.add_argument("--weight-decay", type=float, default=0.01, help="decoupled weight decay on weights (default: 0.01)")
    run.add_argument("--grad-clip", type=float, default=5.0, help="largest gradient norm, 0 for none (default: 5)")
    run.add_argument("--patience", type=int, default=10,
                     help="stop after this many validations without a better CER, 0 for never (default: 10)")
    run.add_argument("--val-every", type=int, default=0, help="validate every N steps as well as after each epoch")
    run.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (the schedule still spans --epochs)")
    run.add_argument("--seed", type=int, default=1, help="seed of every random choice; CPU runs repeat exactly (default: 1)")
    run.add_argument("--resume", action="store_true", help="continue from OUTPUT/NAME/last/ where a run stopped")
    hw = parser.add_argument_group("hardware")
    add_gpu(hw)
    hw.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="auto: bf16 autocast where the GPU or CPU computes bf16 natively, else fp32 (default: auto)")
    hw.add_argument("--workers", type=int, help="data-loading processes, 0 loads in the main process (default: min(4, cores))")
    hw.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    hw.add_argument("--tensorboard", action="store_true", help="also log to OUTPUT/NAME/tensorboard/")
    aug = parser.add_argument_group("augmentation (probability per line, 0 switches one off)")
    aug.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    for name, what in (("elastic", "elastic distortion"), ("shear", "slant"), ("width", "random width scaling"),
                       ("blur", "Gaussian blur"), ("crop", "border jitter"), ("binarize", "Otsu binarisation"),
                       ("invert", "negative image")):
        default = getattr(DEFAULTS, name)
        aug.add_argument(f"--aug-{name}", type=float, default=default, metavar="P", help=f"{what} (default: {default})")
    add_config(parser)


def run(args: argparse.Namespace) -> int:
    from loghi_ft.train.loop import gpu_list, train

    gpus = gpu_list(args.gpu)
    if len(gpus) > 1 and "LOCAL_RANK" not in os.environ:
        return launch(args, len(gpus))
    train(args)
    return 0


def launch(args: argparse.Namespace, processes: int) -> int:
    """Run this same command as `processes` ranks under torchrun; returns its exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "loghi_ft", "train", *command_line(args)]
    proc = subprocess.Popen(command)

    def forward(signum, frame):
        # Ctrl+C reaches torchrun through the terminal already; a SIGTERM sent to us alone is passed on
        if signum != signal.SIGINT:
            proc.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return proc.wait()


def command_line(args: argparse.Namespace) -> list[str]:
    """The resolved options (recipe and overrides applied) as command-line words."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    words = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "config"):
            continue
        value = getattr(args, action.dest, None)
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            words += [flag] if value else []
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        elif value is not None:
            words += [flag, str(value)]
    return words

"""Train a line recogniser from scratch (--spec) or fine-tune one (--base-model); keeps the best in OUTPUT/NAME/best_val/.

Several GPUs (--gpu 0,1) run one process per GPU under torchrun, started here. A Loghi model folder given as
--base-model is converted into OUTPUT/NAME/imported_base/ first.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

from loghi_ft.train.settings import TrainSettings as Settings


def run(s: Settings) -> int:
    from loghi_ft.devices import gpu_list
    from loghi_ft.train.loop import train

    s = dataclasses.replace(s, base_model=converted_base(s))
    gpus = gpu_list(s.gpu)
    if len(gpus) > 1 and "LOCAL_RANK" not in os.environ:
        return launch(s, len(gpus))
    train(s)
    return 0


def converted_base(s: Settings) -> Path | None:
    """The base model as a loghi-ft folder: a Loghi model is converted once, here, before any rank starts."""
    from loghi_ft.model.loghi import import_loghi, is_loghi_model

    if not s.base_model or not is_loghi_model(Path(s.base_model)) or not s.output or not s.model_name:
        return s.base_model
    target = Path(s.output) / s.model_name / "imported_base"
    if not (target / "model.json").exists():
        print(f"{s.base_model} is a Loghi model: converting it into {target}", flush=True)
        import_loghi(Path(s.base_model), target)
    return target


def launch(s, processes: int, command: str = "train") -> int:
    """Run the subcommand `command` with settings `s` as `processes` ranks under torchrun; returns its exit status."""
    from loghi_ft.settings import command_words

    words = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "loghi_ft", command, *command_words(s)]
    proc = subprocess.Popen(words)

    def forward(signum, frame):
        # Ctrl+C reaches torchrun through the terminal already; a SIGTERM sent to us alone is passed on
        if signum != signal.SIGINT:
            proc.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return proc.wait()

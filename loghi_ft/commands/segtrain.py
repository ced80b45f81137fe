"""Train or fine-tune a layout model on PAGE XML pages (baselines, line polygons, typed regions); keeps the best in
OUTPUT/NAME/best_val/.

New region and line types in the pages are added to a base model's (its own are kept). Several GPUs (--gpu 0,1)
run one process per GPU under torchrun, started here.
"""

from __future__ import annotations

import os

from loghi_ft.layout.train import SegTrainSettings as Settings


def run(s: Settings) -> int:
    from loghi_ft.commands.train import launch
    from loghi_ft.devices import gpu_list
    from loghi_ft.layout.train import segtrain

    gpus = gpu_list(s.gpu)
    if len(gpus) > 1 and "LOCAL_RANK" not in os.environ:
        return launch(s, len(gpus), "segtrain")
    segtrain(s)
    return 0

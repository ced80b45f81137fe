"""A run's last/ folder: the model folder plus what resuming needs (optimiser state, RNG states, the loop's
counters), written whole and swapped in, so that an interrupted run resumes bit-exactly on the CPU."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from loghi_ft.atomic import replace_folder
from loghi_ft.errors import UserError

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


def write_checkpoint(run_dir: Path, save: Callable[[Path, dict], None], optimizer: torch.optim.Optimizer,
                     state: dict) -> None:
    """last/: the model folder that save(folder, training) writes, plus the optimiser tensors and RNG states
    (safetensors) and the rest (JSON), swapped in whole."""
    tmp = run_dir / f".last.build-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp, {"step": state.get("step"), "epoch": state.get("epoch")})
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

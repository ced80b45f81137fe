"""Where a command computes: the GPUs of --gpu, the torch device, bf16 or fp32, and how the cores are shared.

`train`, `infer` and `eval` ask here, so that `--gpu`, `--precision`, `--workers` and `--threads` mean the same
in every subcommand. Torch is imported only by the functions that need it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from loghi_ft.errors import UserError

MAX_WORKERS = 4  # more line-cutting processes than this never kept a model busier in our measurements
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameters in glibc's malloc.h


def gpu_list(gpu: str) -> list[int]:
    """`-1` -> [], `0` -> [0], `0,1` -> [0, 1]; UserError when the value is malformed or this machine lacks them."""
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
    import torch
    if not torch.cuda.is_available():
        raise UserError(f"--gpu {gpu}: no CUDA device is available here; use --gpu -1 for the CPU")
    if max(ids) >= torch.cuda.device_count():
        raise UserError(f"--gpu {gpu}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return ids


def inference_device(gpu: str) -> str:
    """The torch device that recognises: the CPU, or the first GPU of --gpu (more GPUs: one process per --shard)."""
    ids = gpu_list(gpu)
    return f"cuda:{ids[0]}" if ids else "cpu"


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX-512-bf16 or AMX); Linux only, else False."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(precision: str, device: str):
    """torch.bfloat16 for bf16 autocast, or None for fp32.

    auto is bf16 where the device computes it natively: GPUs that have it, CPUs with AVX-512-bf16 or AMX. There a
    `small` training step takes 0.34 instead of 0.60 CPU seconds (one thread, batch 16) and a forward pass 0.17
    instead of 0.28 s, at the same accuracy (the base model read the 308 timeus test lines at 7.61% CER in fp32,
    7.66% in bf16). Elsewhere bf16 is emulated and slower than fp32."""
    import torch
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise UserError(f"--precision takes auto, fp32 or bf16, not '{precision}'")
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None


def worker_count(requested: int | None) -> int:
    """Processes that read and cut lines beside the one that computes: N as asked (0: none, all in the main
    process); None: one per core the main process leaves, at most MAX_WORKERS."""
    if requested is None or requested < 0:
        return max(0, min(MAX_WORKERS, (os.cpu_count() or 1) - 1))
    return requested


def share_cores(workers: int, threads: int | None = None) -> int:
    """Torch's CPU threads: as asked, or the cores the workers leave (at least one); returns the number set.

    OpenMP threads that must share a core with a worker spin-wait: on 2 cores, 2 threads beside 1 worker took
    10x the CPU time and 5x the wall time of 1 thread."""
    import torch
    count = threads if threads else max(1, (os.cpu_count() or 1) - workers)
    torch.set_num_threads(count)
    return count


def keep_freed_memory() -> bool:
    """Lets glibc's malloc keep the memory a CPU run frees, for the next batch to reuse; returns whether it could.

    glibc hands every block above 32 MiB to its own mmap and back to the kernel on free, so each of a training
    step's large activations (16 lines of the `kraken` network: 196 MB per full-resolution layer) is faulted in
    and zeroed page by page again at every step: a ReLU over one took 164 ms instead of 27, and a step of the
    `kraken` network 3.6 s instead of 2.4 (one thread, bf16; benchmarks/README.md). Without mmap, and trimming only
    what exceeds 2 GiB, freed blocks stay in the heap for the next step: the process keeps about its peak, which a
    run reaches in its first steps.
    Elsewhere (macOS, musl) nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc's alone: musl's mallopt takes other parameters
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))

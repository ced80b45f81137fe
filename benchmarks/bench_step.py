"""Seconds per training step of one network, by memory format and precision: where training time goes.

    python benchmarks/bench_step.py [--spec small] [--width 1024] [--threads 2] [--steps 6] [--inference]
                                    [--precision fp32,bf16] [--layout contiguous,channels_last] [--memory default,kept]

One batch of 16 random lines of a fixed width (the model's own input height), forward, CTC-free loss,
backward and an AdamW step (--inference: a forward pass of 32 lines in eval mode, as `infer` runs it),
repeated --steps times after one warm-up step; prints the median for
contiguous (NCHW) and channels-last (NHWC) convolutions, in fp32 and under bf16 autocast, with glibc's malloc
near its defaults (`default`: blocks above 32 MiB mapped and unmapped at each allocation) and as the commands set it
(`kept`: devices.keep_freed_memory). The settings take turns so that a machine slowing down for a while slows
them all.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time

import torch

from loghi_ft.devices import M_MMAP_MAX, M_TRIM_THRESHOLD, keep_freed_memory
from loghi_ft.model.vgsl import build_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="small", help="preset or VGSL spec (default: small)")
    parser.add_argument("--width", type=int, default=1024, help="line width in pixels (default: 1024)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per setting (default: 6)")
    parser.add_argument("--inference", action="store_true", help="time recognition instead of training")
    parser.add_argument("--precision", default="fp32,bf16", help="precisions to time (default: fp32,bf16)")
    parser.add_argument("--layout", default="contiguous,channels_last", help="memory formats to time (default: both)")
    parser.add_argument("--memory", default="default,kept", help="malloc settings to time (default: both)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(2):
        for memory in args.memory.split(","):
            set_malloc(memory)
            for precision in args.precision.split(","):
                for layout in args.layout.split(","):
                    times.setdefault((memory, precision, layout), []).extend(steps(args, precision, layout))
    for (memory, precision, layout), seconds in times.items():
        what = "a forward pass of 32" if args.inference else "a step of 16"
        print(f"{args.spec} {precision:4} {layout:13} malloc {memory:7}: {statistics.median(seconds):.3f} s {what} x "
              f"{args.width} px")
    return 0


def set_malloc(memory: str) -> None:
    """glibc's malloc near its defaults (mmap on, trimming above 128 KiB), or as loghi-ft's commands set it. Once a
    threshold has been set, glibc stops moving its mmap threshold (it grows from 128 KiB up to 32 MiB as blocks are
    freed): after a `kept` turn, `default` keeps the threshold reached so far; blocks above 32 MiB, the large
    activations, are mapped in every case."""
    if memory == "kept":
        assert keep_freed_memory(), "glibc's malloc only"
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_MAX, 65536)
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    libc.malloc_trim(0)


def steps(args, precision: str, layout: str) -> list[float]:
    torch.manual_seed(0)
    model = build_model(args.spec, 91).train(not args.inference)
    x = torch.rand(32 if args.inference else 16, model.channels, model.height, args.width)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    seconds = []
    for i in range(args.steps + 1):
        start = time.perf_counter()
        if args.inference:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                model(x)
            if i:
                seconds.append(time.perf_counter() - start)
            continue
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            y = model(x)
        loss = y.float().log_softmax(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:
            seconds.append(time.perf_counter() - start)
    return seconds


if __name__ == "__main__":
    sys.exit(main())

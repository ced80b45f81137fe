"""Settings spelled the same in every subcommand that runs a recogniser over pages (infer, eval)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loghi_ft.errors import UserError
from loghi_ft.settings import setting


@dataclass
class RecognitionSettings:
    model: Path | None = setting(None, "model folder (or its training output folder), or a .onnx file")
    batch_size: int = setting(32, "lines per batch")
    gpu: str = setting("-1", "-1 for the CPU, 0 for the first GPU (for several, run one process per --shard)")
    precision: str = setting("auto", "auto: bf16 where the GPU or CPU computes it natively (AVX512-BF16, AMX), else "
                             "fp32; bf16 takes about 60% of the time at the same accuracy",
                             choices=("auto", "fp32", "bf16"))
    beam_width: int = setting(1, "CTC beam search with this many beams (1: greedy)")
    lm: Path | None = setting(None, "text file (one line or word per line, or a Loghi list file) whose character "
                              "6-gram biases the beam search toward its words")
    lm_weight: float = setting(0.3, "weight of the --lm log probability")
    workers: int | None = setting(None, "processes cutting lines while the model runs; 0: none, the main process "
                                  "cuts; empty: one per core the model leaves, at most 4")

    def check(self) -> None:
        """UserError for values no run can use."""
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.beam_width < 1:
            raise UserError(f"--beam-width {self.beam_width}: must be at least 1")

"""Convert a Loghi model folder (best_val/: model.keras, tokenizer.json, config.json) into a loghi-ft model folder.

The converted model reads lines as Loghi does (its pixel scaling and padding travel with it) and gives
the same outputs, checked against loghi-htr's own readings (`infer --precision fp32` computes as Loghi does on
a CPU); fine-tune it with `loghi-ft train --base-model DST`. Legacy SavedModel folders (saved_model.pb) need
TensorFlow, and with TensorFlow >= 2.16 tf_keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loghi_ft.settings import setting


@dataclass
class Settings:
    src: Path | None = setting(None, "Loghi model folder (holds model.keras or saved_model.pb)", positional=True,
                               required=True, metavar="SRC")
    dst: Path | None = setting(None, "loghi-ft model folder to write", positional=True, required=True, metavar="DST")
    overwrite: bool = setting(False, "replace DST when it already holds a model")


def run(args: Settings) -> int:
    from loghi_ft.errors import UserError
    from loghi_ft.model.loghi import import_loghi

    if args.dst.exists() and any(args.dst.iterdir()) and not args.overwrite:
        raise UserError(f"{args.dst}: exists and is not empty; give --overwrite to replace it")
    info = import_loghi(args.src, args.dst)
    print(f"imported {args.src} -> {args.dst}")
    print(f"spec: {info.spec}")
    print(f"input: {info.channels}x{info.height}xW, {len(info.charset) - 1} characters (+ Loghi's [UNK] as U+FFFD)")
    return 0

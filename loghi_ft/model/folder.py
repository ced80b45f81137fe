"""A model is a folder: model.safetensors (weights) and model.json (everything to rebuild and run it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from loghi_ft import __version__
from loghi_ft.atomic import recover_folder, replace_folder, temp_folder
from loghi_ft.errors import UserError
from loghi_ft.model.pixels import DEFAULT_PREPROCESS
from loghi_ft.model.vgsl import VGSLModel, build_model

FORMAT = "loghi-ft-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "model.json"


@dataclass
class ModelInfo:
    spec: str
    height: int
    channels: int
    charset: list[str]                  # output row i+1 is charset[i]; row 0 is blank
    preprocess: dict = field(default_factory=lambda: dict(DEFAULT_PREPROCESS))  # input = offset + scale * pixel
    normalization: str = "NFC"          # "NFC" | "NFD" | "none"
    training: dict = field(default_factory=dict)
    version: str = __version__


def save_model(model: VGSLModel, info: ModelInfo, folder: Path) -> None:
    """Write the model folder atomically: a temporary folder, then renamed over the old one."""
    folder = Path(folder)
    if model.num_classes != len(info.charset) + 1:
        raise ValueError(f"model has {model.num_classes} outputs but the charset {len(info.charset)} characters + blank")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(info)}
    record.update(spec=model.spec, height=model.height, channels=model.channels)
    (tmp / CONFIG).write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    replace_folder(tmp, folder)


def find_model_folder(path: Path) -> Path:
    """The model folder at `path`, or in it (OUTPUT/NAME -> best_val); UserError when none."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    recover_folder(path)
    if not path.is_dir():
        raise UserError(f"{path}: model folder not found")
    recover_folder(path / "best_val")
    if (path / CONFIG).exists() or (path / WEIGHTS).exists():
        return path
    found = sorted(p.parent for p in list(path.glob(f"*/{CONFIG}")) + list(path.glob(f"*/*/{CONFIG}")))
    best = [p for p in found if p.name == "best_val"]
    if len(best) == 1:
        return best[0]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"{path}: no {CONFIG} here or in its subfolders; not a loghi-ft model")
    raise UserError(f"{path}: holds several models, name one: {', '.join(str(p) for p in found[:6])}")


def read_info(folder: Path) -> ModelInfo:
    """The ModelInfo of a model folder; UserError naming model.json when it is not ours."""
    config = Path(folder) / CONFIG
    if not config.exists():
        raise UserError(f"{config}: missing; not a loghi-ft model folder")
    try:
        record = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{config}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UserError(f"{config}: not a loghi-ft model description (no \"format\": \"{FORMAT}\")")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{config}: written by a newer loghi-ft (format {record['format_version']}); upgrade to read it")
    try:
        info = ModelInfo(**{k: record[k] for k in ModelInfo.__dataclass_fields__ if k in record})
    except TypeError as exc:
        raise UserError(f"{config}: incomplete model description ({exc})") from None
    if not isinstance(info.charset, list) or not all(isinstance(c, str) for c in info.charset):
        raise UserError(f"{config}: charset must be a list of characters")
    return info


def load_model(folder_or_file: Path, device: str = "cpu") -> tuple[VGSLModel, ModelInfo]:
    """Rebuild the model from its folder and load its weights, in eval mode on `device`."""
    folder = find_model_folder(folder_or_file)
    info = read_info(folder)
    weights = folder / WEIGHTS
    if not weights.exists():
        raise UserError(f"{weights}: missing; the model folder is incomplete")
    try:
        model = build_model(info.spec, len(info.charset) + 1)
    except UserError as exc:
        raise UserError(f"{folder / CONFIG}: {exc}") from None
    if (model.height, model.channels) != (info.height, info.channels):
        raise UserError(f"{folder / CONFIG}: height/channels {info.height}/{info.channels} disagree with the spec's "
                        f"{model.height}/{model.channels}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{weights}: not readable safetensors ({exc})") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    wrong = [f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in tensors and tensors[k].shape != v.shape]
    if missing or extra or wrong:
        detail = "; ".join(filter(None, [
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(extra[:3])}" if extra else "",
            f"shape {', '.join(wrong[:3])}" if wrong else ""]))
        raise UserError(f"{weights}: weights do not fit the spec and charset in {CONFIG}: {detail}")
    model.load_state_dict(tensors)
    return model.to(device).eval(), info


def model_hash(folder: Path) -> str:
    """Short sha256 of the model's weights, to name the model in PAGE metadata."""
    digest = hashlib.sha256()
    with open(find_model_folder(folder) / WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]

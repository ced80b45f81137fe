"""The layout network and its folder: a torchvision backbone with a light U-Net decoder that predicts, per pixel,
baselines, line bodies, region classes and line types; the folder's JSON says it is a layout model, its classes
and the scale it sees pages at."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from loghi_ft import __version__
from loghi_ft.atomic import recover_folder, replace_folder, temp_folder
from loghi_ft.errors import UserError

FORMAT = "loghi-ft-layout-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "model.json"
# backbone taps: (torchvision builder, feature indices whose outputs feed the decoder, their channels)
BACKBONES = {
    "mobilenet_v3_large": ("mobilenet_v3_large", (1, 3, 6, 12, 16), (16, 24, 40, 112, 960)),
    "mobilenet_v3_small": ("mobilenet_v3_small", (0, 1, 3, 8, 12), (16, 16, 24, 48, 576)),
}
BASELINE, BODY = 0, 1  # the first two output channels; region classes follow, then line types


@dataclass
class LayoutInfo:
    region_types: list[str]             # the user's region class names, one sigmoid channel each
    line_types: list[str]               # the user's line type names ([] or one: lines are not typed)
    size: int = 1024                    # pages are scaled so that their longer side is this many pixels
    backbone: str = "mobilenet_v3_large"
    width: int = 32                     # decoder channels
    # the training pages' baseline spacing at `size` (5th percentile, median, 95th): a page spaced closer than the
    # 5th is segmented again at the size that gives it the median ([]: not known, pages are not rescaled)
    spacing: list[float] = field(default_factory=list)
    training: dict = field(default_factory=dict)
    version: str = __version__

    @property
    def channels(self) -> int:
        return 2 + len(self.region_types) + (len(self.line_types) if len(self.line_types) > 1 else 0)


class LayoutNet(nn.Module):
    """Backbone features at strides 2..32, merged top-down (upsample + 1x1 lateral), predicted at stride 2 and
    upsampled to the input's size."""

    def __init__(self, info: LayoutInfo):
        super().__init__()
        if info.backbone not in BACKBONES:
            raise UserError(f"unknown layout backbone '{info.backbone}' (known: {', '.join(BACKBONES)})")
        import torchvision
        builder, self.taps, chans = BACKBONES[info.backbone]
        # weights=None: nothing is ever downloaded; the layout model learns from the user's pages
        self.features = getattr(torchvision.models, builder)(weights=None).features[:self.taps[-1] + 1]
        self.lateral = nn.ModuleList(nn.Conv2d(c, info.width, 1) for c in chans)
        self.smooth = nn.Sequential(nn.Conv2d(info.width, info.width, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(info.width), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(info.width, info.channels, 1)
        self.info = info

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> logits (N, channels, H, W); H and W are padded to a multiple of 32 inside."""
        h, w = x.shape[-2:]
        x = F.pad((x - 0.5) / 0.25, (0, -w % 32, 0, -h % 32))
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                taps.append(x)
        y = self.lateral[-1](taps[-1])
        for tap, lateral in zip(reversed(taps[:-1]), reversed(self.lateral[:-1])):
            y = F.interpolate(y, size=tap.shape[-2:], mode="nearest") + lateral(tap)
        y = self.head(self.smooth(y))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return y[..., :h, :w]


def probabilities(logits: Tensor, info: LayoutInfo) -> np.ndarray:
    """Logits (N, channels, H, W) -> float32 probabilities: sigmoid for baselines, bodies and regions (a pixel may
    be in two regions), softmax over the line types."""
    n = 2 + len(info.region_types)
    p = torch.sigmoid(logits[:, :n].float())
    if logits.shape[1] > n:
        p = torch.cat([p, torch.softmax(logits[:, n:].float(), dim=1)], dim=1)
    return p.cpu().numpy()


def save_layout_model(model: LayoutNet, folder: Path) -> None:
    """The model folder, written to a temporary folder and swapped in."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "layout", **asdict(model.info)}
    (tmp / CONFIG).write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    replace_folder(tmp, folder)


def is_layout_model(folder: Path) -> bool:
    """Whether the folder (or its best_val/) holds a layout model."""
    for f in (Path(folder), Path(folder) / "best_val"):
        try:
            return json.loads((f / CONFIG).read_text(encoding="utf-8")).get("format") == FORMAT
        except (OSError, ValueError):
            continue
    return False


def load_layout_model(path: Path, device: str | torch.device = "cpu") -> LayoutNet:
    """The layout model in `path` (or in its best_val/); UserError when there is none or it is damaged."""
    folder = Path(path)
    recover_folder(folder)
    if not (folder / CONFIG).exists() and (folder / "best_val" / CONFIG).exists():
        folder = folder / "best_val"
        recover_folder(folder)
    try:
        record = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no layout model here ({CONFIG} not found)") from None
    except ValueError as exc:
        raise UserError(f"{folder / CONFIG}: not valid JSON ({exc})") from None
    if record.get("format") != FORMAT:
        raise UserError(f"{folder}: not a layout model (a line recogniser? its {CONFIG} says format "
                        f"'{record.get('format')}')")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{folder}: layout model format {record['format_version']} is newer than this loghi-ft reads")
    names = {f for f in LayoutInfo.__dataclass_fields__}
    info = LayoutInfo(**{k: v for k, v in record.items() if k in names})
    model = LayoutNet(info)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise UserError(f"{folder / WEIGHTS}: cannot load the weights ({exc})") from None
    return model.to(device).eval()

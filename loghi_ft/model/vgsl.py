"""CTC line recognisers built from VGSL specs, as Loghi writes them.

A spec is the input token followed by layer tokens, separated by spaces:
``None,None,64,1 Cr3,3,24 Mp2,2,2,2 Bn ... Rc3 Bl512 D50 ... O1s93``.
Loghi builds Keras models on the transposed image, a (N, W, H, C) tensor;
we build the same layers on (N, C, H, W) input and keep Loghi's meaning of
every number, so that Loghi's weights can be mapped onto ours.

Input token: ``batch,width,height,channels`` (Loghi: ``None,None,64,1``) or
``batch,height,width,channels`` (older Loghi and kraken: ``None,64,None,1``,
``1,120,0,1``); ``None`` or 0 marks the variable width, the other of the two
middle numbers is the height. The channels (1 grey, 3 colour, 4 colour and alpha) fix the input.

Layer tokens, the torch modules they become (``layers.<i>`` is the i-th token
after the input; parameter names are ``layers.<i>.<name>``):

- ``C<a><x>,<y>,<d>``: convolution, kernel x rows high and y columns wide, d
  filters, stride 1 -> ``Conv`` (an ``nn.Conv2d``: ``weight`` (d, C_in, x, y),
  ``bias`` (d,)). ``C<a><x>,<y>,<sx>,<sy>,<d>`` (Loghi) adds a stride of sx
  along the width and sy along the height. ``C<a><x>,<y>,<d>,<sy>,<sx>,<dy>,<dx>``
  (kraken's order) adds strides and dilations. Keras kernel (y, x, C_in, d) on the
  transposed image maps to ours as ``kernel.permute(3, 2, 1, 0)``.
- Activations ``<a>`` as Loghi: r relu, t tanh, e elu, l linear, m sigmoid,
  s softmax over the channels (kraken reads s as sigmoid; we follow Loghi).
- ``Mp<px>,<py>[,<sx>,<sy>]`` / ``Ap...``: max / average pooling, px and sx
  along the width, py and sy along the height (Loghi's order); the stride
  defaults to the pool size -> ``Pool`` (no parameters).
- Convolutions and pooling pad like Keras ``padding='same'``: out = ceil(in /
  stride) on both axes, so a line of width w gives ceil(ceil(w/s1)/s2)...
  frames; ``output_lengths`` computes exactly that.
- ``Bn``: batch normalisation (Keras defaults: eps 1e-3, momentum 0.99) ->
  ``nn.BatchNorm2d`` before ``Rc``, ``SeqBatchNorm`` (an ``nn.BatchNorm1d``
  over features) after it: ``weight`` = gamma, ``bias`` = beta,
  ``running_mean``, ``running_var``.
- ``D<p>``: dropout of p percent -> ``nn.Dropout``. kraken's ``Do[<rate>][,<dims>]``
  (rate a fraction, default 0.5): dims 1 -> ``nn.Dropout``; dims 2 drops whole
  channels (``ChannelDropout``, an ``nn.Dropout2d``) before ``Rc``, whole
  features for all frames (``FeatureDropout``) after it. No parameters. A
  channel dropout directly before a pooling layer is moved after it (the same
  result: a channel scaled by a mask value >= 0 pools to the scaled pool), so
  its module index and the pool's are swapped.
- ``Rc3`` (or ``Rc``): collapse the height into the features, one frame per
  column -> ``Collapse``: (N, C, H, W) -> (N, W, H*C) with feature index
  ``h * C + c`` (height outer, channels inner: exactly Keras' reshape of
  (N, W, H, C)). ``Rc2`` would also collapse the width, which a CTC
  recogniser cannot use, so it is refused.
- ``Bl<n>`` / ``Bg<n>``: bidirectional LSTM / GRU, n units each way,
  outputs concatenated (forward first) -> ``Recurrent`` holding ``rnn``, an
  ``nn.LSTM`` / ``nn.GRU`` (batch_first): ``rnn.weight_ih_l0`` (4n, F),
  ``rnn.weight_hh_l0`` (4n, n), ``rnn.bias_ih_l0``, ``rnn.bias_hh_l0`` and the
  same with ``_reverse``. LSTM gates are ordered i, f, g, o as in Keras
  (i, f, c, o): Keras ``kernel`` (F, 4n) -> ``weight_ih`` = kernel.T,
  ``recurrent_kernel`` -> ``weight_hh`` = recurrent_kernel.T, ``bias`` ->
  ``bias_ih`` with ``bias_hh`` zero. GRU (Keras reset_after=True) gates are
  z, r, h in Keras and r, z, n in torch: swap the first two blocks; Keras'
  bias (2, 3n) -> ``bias_ih`` = bias[0], ``bias_hh`` = bias[1].
  Suffixes ``,D<p>`` (dropout on the layer's input) and ``,Rd<p>`` (recurrent
  dropout: parsed but not applied, torch's fused RNNs have none) are accepted.
- ``L<dir>[s]<n>`` / ``G<dir>[s]<n>`` (Loghi): one-way LSTM / GRU, dir f
  (forward) or r (reverse, run right to left and returned in left-to-right
  order); with ``s`` it returns the sequence, without it only its last
  state (one frame). ``L<dir>x[s]<n>`` (kraken): along the width; here ``s``
  means summarise and dir may also be b (bidirectional).
- ``F<a><n>``: dense layer over the features -> ``Dense`` (an ``nn.Linear``:
  ``weight`` (n, F) = Keras kernel.T, ``bias``), after ``Rc`` only.
- ``O1<a><n>``: the output layer -> ``Dense`` with ``num_classes`` outputs
  (the count written in the spec is replaced by the charset's). A final
  ``Fs<n>`` (softmax dense, as Loghi ends its specs) is the output layer too.
  When the spec has neither, the output layer is added. The output is raw
  logits; class 0 is the CTC blank.

``forward`` has no Python control flow on tensor values, so the model
traces and scripts; lengths stay outside it (``output_lengths``).

Presets (``recommended``, ``small``, ``kraken``) are specs by name in
``loghi_ft/model/presets.yaml``, shipped in the package; ``config/models.yaml``
is a link to that one file. ``build_model`` takes a preset name or a spec.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from loghi_ft.errors import UserError

PRESETS_FILE = Path(__file__).with_name("presets.yaml")

INPUT = re.compile(r"^(None|\d+),(None|\d+),(None|\d+),(None|\d+)$")
CONV = re.compile(r"^C([srtelm])(\d+(?:,\d+)*)$")
POOL = re.compile(r"^(Mp|Ap)(\d+),(\d+)(?:,(\d+),(\d+))?$")
DROPOUT = re.compile(r"^D(\d+)$")
KRAKEN_DROPOUT = re.compile(r"^Do(\d*\.?\d+)?(?:,([12]))?$")
RESHAPE = re.compile(r"^Rc(\d?)$")
BIRNN = re.compile(r"^B([lg])(\d+)(?:,D(\d+))?(?:,Rd(\d+))?$")
RNN = re.compile(r"^([LG])([frb])([xy]?)(s?)(\d+)(?:,D(\d+))?(?:,Rd(\d+))?$")
DENSE = re.compile(r"^F([srtelm])(\d+)$")
OUTPUT = re.compile(r"^O1([a-z])(\d+)$")


def presets() -> dict[str, str]:
    """Preset name -> VGSL spec, from the presets file shipped in the package."""
    data = yaml.safe_load(PRESETS_FILE.read_text(encoding="utf-8"))
    return {str(k): " ".join(str(v).split()) for k, v in data.items()}


def build_model(spec: str, num_classes: int) -> VGSLModel:
    """A fresh model from a VGSL spec or a preset name; UserError naming the bad token."""
    known = presets()
    spec = known.get(spec.strip(), spec)
    if num_classes < 2:
        raise UserError(f"a model needs at least 2 classes (blank and one character), not {num_classes}")
    tokens = spec.strip().strip("[]").split()
    if not tokens:
        raise UserError(f"empty VGSL spec; give a spec or one of the presets: {', '.join(sorted(known))}")
    height, channels = parse_input(tokens[0])
    body = tokens[1:]
    if not body or not (OUTPUT.match(body[-1]) or re.match(r"^Fs\d+$", body[-1])):
        body.append(f"O1s{num_classes}")
    body[-1] = f"O1s{num_classes}"
    builder = _Builder(height, channels)
    for i, token in enumerate(body):
        builder.add(token, output=(i == len(body) - 1), num_classes=num_classes)
    if builder.stage != "sequence":
        raise UserError(f"VGSL spec never turns the image into a sequence: add Rc3 before the recurrent layers ({spec})")
    canonical = " ".join([tokens[0], *body])
    model = VGSLModel(canonical, height, channels, num_classes, builder.modules, builder.width_strides, builder.summarized)
    init_weights(model)
    return model


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """Keras' initialisation, which Loghi's models train from (kraken's is alike): Glorot-uniform kernels, orthogonal
    recurrent weights, zero biases, LSTM forget gates biased to 1. torch's defaults (small uniform weights) leave a
    fresh CTC model several hundred steps longer on the plateau where it predicts only blanks."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LSTM, nn.GRU)):
            gates = 4 if isinstance(m, nn.LSTM) else 3
            for name, p in m.named_parameters():
                if name.startswith("weight_ih"):  # Keras' kernel (F, gates*H), transposed
                    nn.init.xavier_uniform_(p)
                elif name.startswith("weight_hh"):  # Keras' recurrent kernel (H, gates*H), transposed
                    nn.init.orthogonal_(p)
                else:
                    nn.init.zeros_(p)
                    if gates == 4 and name.startswith("bias_ih"):
                        p.chunk(4)[1].fill_(1.0)  # torch's gate order i, f, g, o


def parse_input(token: str) -> tuple[int, int]:
    """(height, channels) from Loghi's `None,None,64,1` or kraken's `1,120,0,1`."""
    m = INPUT.match(token)
    if not m:
        raise UserError(f"VGSL spec must start with the input, e.g. None,None,64,1 (batch,width,height,channels); found '{token}'")
    sizes = [None if v == "None" or v == "0" else int(v) for v in m.groups()]
    first, second, channels = sizes[1], sizes[2], sizes[3]
    if first is None and second is not None:
        height = second
    elif second is None and first is not None:
        height = first
    else:
        raise UserError(f"input '{token}': exactly one of the two middle sizes must be the height, the other None (the width)")
    if channels not in (1, 3, 4):
        raise UserError(f"input '{token}': channels must be 1 (grey), 3 (colour) or 4 (colour and alpha)")
    if height < 8:
        raise UserError(f"input '{token}': height {height} is too small for a line image")
    return height, channels


class VGSLModel(nn.Module):
    """A CTC line recogniser: (N, C, H, W) float -> logits (N, T, num_classes)."""

    def __init__(self, spec: str, height: int, channels: int, num_classes: int,
                 modules: list[nn.Module], width_strides: list[int], summarized: bool):
        super().__init__()
        self.spec = spec
        self.height = height
        self.channels = channels
        self.num_classes = num_classes
        self.width_strides = width_strides
        self.summarized = summarized
        self.layers = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def output_lengths(self, widths: Tensor) -> Tensor:
        """Valid output frames per sample for input widths (N,)."""
        if self.summarized:
            return torch.ones_like(widths)
        for s in self.width_strides:
            widths = torch.div(widths + (s - 1), s, rounding_mode="floor")
        return widths

    def parameter_count(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def width_reduction(self) -> int:
        return math.prod(self.width_strides)

    def describe(self) -> str:
        """One line: size, input, frames per column, classes."""
        return (f"VGSL model: {self.parameter_count() / 1e6:.2f} M parameters, input {self.channels}x{self.height}xW, "
                f"{len(self.layers)} layers, one frame per {self.width_reduction()} columns, "
                f"{self.num_classes} classes (blank + {self.num_classes - 1} characters)")

    def conv_modules(self) -> list[nn.Module]:
        """The layers before Rc (convolutional part), for freezing."""
        return [m for m in self.layers if getattr(m, "stage", "") == "image"]

    def recurrent_modules(self) -> list[nn.Module]:
        return [m for m in self.layers if isinstance(m, Recurrent)]

    def output_layer(self) -> Dense:
        return self.layers[-1]


def _activation(code: str, dim: int):
    if code == "s":
        return nn.Softmax(dim=dim)
    # in place: neither a convolution's nor a linear layer's backward needs its output
    return {"r": nn.ReLU(inplace=True), "t": nn.Tanh(), "e": nn.ELU(), "l": nn.Identity(), "m": nn.Sigmoid()}[code]


MONOTONE = (nn.ReLU, nn.Tanh, nn.ELU, nn.Sigmoid)  # activations that never decrease: max pooling commutes with them


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras 'same' padding (before, after) along one axis; needs kernel >= stride."""
    total = kernel - stride + (stride - size % stride) % stride
    return total // 2, total - total // 2


class Conv(nn.Conv2d):
    """Convolution with Keras 'same' padding and an activation."""

    stage = "image"

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], stride: tuple[int, int],
                 dilation: tuple[int, int], act: str):
        super().__init__(c_in, c_out, kernel, stride=stride, dilation=dilation, padding=0)
        self.span = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
        self.static_pad = stride == (1, 1)
        # stride 1: the padding does not depend on the input size
        self.pad = ((self.span[1] - 1) // 2, self.span[1] // 2, (self.span[0] - 1) // 2, self.span[0] // 2)
        # odd spans pad as much on both sides: the convolution pads as it reads, without a padded copy of the input
        self.inner_pad = (self.pad[2], self.pad[0]) if self.static_pad and self.span[0] % 2 and self.span[1] % 2 else None
        self.act = _activation(act, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.inner_pad is not None:
            return self.act(F.conv2d(x, self.weight, self.bias, 1, self.inner_pad, self.dilation))
        if self.static_pad:
            pad = self.pad
        else:
            top, bottom = _same_pad(x.shape[2], self.span[0], self.stride[0])
            left, right = _same_pad(x.shape[3], self.span[1], self.stride[1])
            pad = (left, right, top, bottom)
        return self.act(self._conv_forward(F.pad(x, pad), self.weight, self.bias))


class Pool(nn.Module):
    """Max or average pooling with Keras 'same' padding (padding never counts in an average)."""

    stage = "image"

    def __init__(self, kind: str, kernel: tuple[int, int], stride: tuple[int, int]):
        super().__init__()
        self.kind = kind
        self.kernel = kernel
        self.stride = stride
        self.act = nn.Identity()  # the previous convolution's activation, when the builder moves it here
        # kernel == stride: 'same' pads only after the end, which ceil_mode does exactly for stride 2
        self.ceil = kernel == stride

    def forward(self, x: Tensor) -> Tensor:
        if self.ceil:
            if self.kind == "Mp":
                return self.act(F.max_pool2d(x, self.kernel, self.stride, ceil_mode=True))
            return F.avg_pool2d(x, self.kernel, self.stride, ceil_mode=True)
        top, bottom = _same_pad(x.shape[2], self.kernel[0], self.stride[0])
        left, right = _same_pad(x.shape[3], self.kernel[1], self.stride[1])
        pad = (left, right, top, bottom)
        if self.kind == "Mp":
            return self.act(F.max_pool2d(F.pad(x, pad, value=float("-inf")), self.kernel, self.stride))
        mean = F.avg_pool2d(F.pad(x, pad), self.kernel, self.stride)
        valid = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pad), self.kernel, self.stride)
        return mean / valid

    def extra_repr(self) -> str:
        return f"{self.kind}, kernel={self.kernel}, stride={self.stride}"


class ImageBatchNorm(nn.BatchNorm2d):
    stage = "image"


class ImageDropout(nn.Dropout):
    stage = "image"


class ChannelDropout(nn.Dropout2d):
    stage = "image"


class FeatureDropout(nn.Dropout1d):
    """Drops whole features of (N, T, F) for every frame at once."""

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout1d(x.transpose(1, 2), self.p, self.training).transpose(1, 2)


class SeqBatchNorm(nn.BatchNorm1d):
    """Batch normalisation over the features of (N, T, F)."""

    def forward(self, x: Tensor) -> Tensor:
        # momentum is always set, so the batch counter of nn.BatchNorm1d is not needed
        y = F.batch_norm(x.transpose(1, 2), self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)
        return y.transpose(1, 2)


class Collapse(nn.Module):
    """(N, C, H, W) -> (N, W, H*C), feature index h*C + c."""

    stage = "image"

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 2, 1).flatten(2)


class Recurrent(nn.Module):
    """LSTM/GRU over (N, T, F): one-way or both ways, whole sequence or its last state."""

    def __init__(self, kind: str, features: int, units: int, bidirectional: bool, reverse: bool,
                 summarize: bool, dropout: float):
        super().__init__()
        cls = nn.LSTM if kind == "l" else nn.GRU
        self.rnn = cls(features, units, batch_first=True, bidirectional=bidirectional)
        self.reverse = reverse
        self.summarize = summarize
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(x)
        if self.reverse:
            x = x.flip(1)
        y, _ = self.rnn(x)
        if self.summarize:
            return y[:, -1:]
        if self.reverse:
            y = y.flip(1)
        return y


class Dense(nn.Linear):
    """Linear layer over the last axis with an activation (none for the output layer)."""

    def __init__(self, features: int, units: int, act: str):
        super().__init__(features, units)
        self.act = _activation(act, -1)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(F.linear(x, self.weight, self.bias))


@dataclass
class _Builder:
    """Walks the tokens, tracking the tensor shape, and collects the modules."""

    height: int
    channels: int

    def __post_init__(self):
        self.stage = "image"
        self.features = 0
        self.modules: list[nn.Module] = []
        self.width_strides: list[int] = []
        self.summarized = False

    def add(self, token: str, output: bool, num_classes: int) -> None:
        if output:
            self._need_sequence(token)
            self.modules.append(Dense(self.features, num_classes, "l"))
            return
        for pattern, method in ((CONV, self._conv), (POOL, self._pool), (DROPOUT, self._dropout),
                                (KRAKEN_DROPOUT, self._kraken_dropout),
                                (RESHAPE, self._reshape), (BIRNN, self._birnn), (RNN, self._rnn),
                                (DENSE, self._dense)):
            m = pattern.match(token)
            if m:
                method(token, m)
                return
        if token == "Bn":
            self.modules.append(ImageBatchNorm(self.channels, eps=1e-3, momentum=0.01) if self.stage == "image"
                                else SeqBatchNorm(self.features, eps=1e-3, momentum=0.01))
            return
        raise UserError(f"VGSL token '{token}' is not known; known kinds: C<a><x>,<y>,<d> Mp/Ap<x>,<y>,<sx>,<sy> Bn D<p> "
                        f"Do<rate>,<dims> Rc3 Bl/Bg<n> Lfs/Lrs/Gfs<n> F<a><n> O1s<n>")

    def _need_image(self, token: str) -> None:
        if self.stage != "image":
            raise UserError(f"VGSL token '{token}' works on the image; it cannot come after Rc")

    def _need_sequence(self, token: str) -> None:
        if self.stage != "sequence":
            raise UserError(f"VGSL token '{token}' needs a sequence: put Rc3 before it")
        if self.summarized:
            raise UserError(f"VGSL token '{token}' follows a summarising recurrent layer (one frame): nothing to recognise")

    def _conv(self, token: str, m: re.Match) -> None:
        self._need_image(token)
        n = [int(v) for v in m.group(2).split(",")]
        if len(n) == 3:
            (kh, kw, d), (sh, sw), (dh, dw) = n, (1, 1), (1, 1)
        elif len(n) == 5:
            kh, kw, sw, sh, d = n
            dh = dw = 1
        elif len(n) == 7:
            kh, kw, d, sh, sw, dh, dw = n
        else:
            raise UserError(f"VGSL token '{token}': a convolution takes 3, 5 or 7 numbers "
                            f"(C<a><x>,<y>,<d>, C<a><x>,<y>,<sx>,<sy>,<d>, or kraken's C<a><y>,<x>,<d>,<sy>,<sx>,<dy>,<dx>)")
        if min(n) < 1:
            raise UserError(f"VGSL token '{token}': sizes must be positive")
        if dh * (kh - 1) + 1 < sh or dw * (kw - 1) + 1 < sw:
            raise UserError(f"VGSL token '{token}': a kernel smaller than its stride skips pixels; not supported")
        self.modules.append(Conv(self.channels, d, (kh, kw), (sh, sw), (dh, dw), m.group(1)))
        self.channels = d
        self._reduce(sh, sw)

    def _pool(self, token: str, m: re.Match) -> None:
        self._need_image(token)
        kw, kh = int(m.group(2)), int(m.group(3))
        sw, sh = (int(m.group(4)), int(m.group(5))) if m.group(4) else (kw, kh)
        if min(kw, kh, sw, sh) < 1:
            raise UserError(f"VGSL token '{token}': sizes must be positive")
        if kh < sh or kw < sw:
            raise UserError(f"VGSL token '{token}': a pool smaller than its stride skips pixels; not supported")
        pool = Pool(m.group(1), (kh, kw), (sh, sw))
        if self.modules and isinstance(self.modules[-1], ChannelDropout):
            # scaling a channel by a mask value >= 0 commutes with pooling it: drop after pooling, on 1/4 of the pixels
            self.modules.insert(len(self.modules) - 1, pool)
        else:
            self.modules.append(pool)
        conv = self.modules[self.modules.index(pool) - 1] if self.modules.index(pool) else None
        if pool.kind == "Mp" and isinstance(conv, Conv) and isinstance(conv.act, MONOTONE):
            # the maximum of act(v) is act(maximum of v) for an activation that never decreases: activate the
            # pooled pixels (a quarter) instead of all; no parameters move, so saved models load as before
            pool.act, conv.act = conv.act, nn.Identity()
        self._reduce(sh, sw)

    def _reduce(self, sh: int, sw: int) -> None:
        self.height = -(-self.height // sh)
        if sw > 1:
            self.width_strides.append(sw)

    def _dropout(self, token: str, m: re.Match) -> None:
        p = int(m.group(1))
        if p > 100:
            raise UserError(f"VGSL token '{token}': dropout is a percentage, 0 to 100")
        self.modules.append(ImageDropout(p / 100) if self.stage == "image" else nn.Dropout(p / 100))

    def _kraken_dropout(self, token: str, m: re.Match) -> None:
        p = float(m.group(1) or 0.5)
        if p > 1:
            raise UserError(f"VGSL token '{token}': kraken's dropout rate is a fraction, 0 to 1")
        if m.group(2) != "2":
            self.modules.append(ImageDropout(p) if self.stage == "image" else nn.Dropout(p))
        else:
            self.modules.append(ChannelDropout(p) if self.stage == "image" else FeatureDropout(p))

    def _reshape(self, token: str, m: re.Match) -> None:
        self._need_image(token)
        if m.group(1) not in ("", "3"):
            raise UserError(f"VGSL token '{token}': only Rc3 (one frame per column) makes sense for line recognition")
        self.modules.append(Collapse())
        self.stage = "sequence"
        self.features = self.height * self.channels

    def _birnn(self, token: str, m: re.Match) -> None:
        self._need_sequence(token)
        units = int(m.group(2))
        self._recurrent(token, m.group(1), units, True, False, False, m.group(3))

    def _rnn(self, token: str, m: re.Match) -> None:
        self._need_sequence(token)
        kind, direction, axis, s, units = m.group(1).lower(), m.group(2), m.group(3), m.group(4), int(m.group(5))
        if axis == "y":
            raise UserError(f"VGSL token '{token}': recurrent layers along the height are not supported; use x")
        if direction == "b" and not axis:
            raise UserError(f"VGSL token '{token}': write a bidirectional layer as B{'l' if kind == 'l' else 'g'}{units}")
        # Loghi's 's' returns sequences; kraken's (after the axis letter x) summarises
        summarize = bool(s) if axis else not s
        if summarize and direction == "b":
            raise UserError(f"VGSL token '{token}': a summarising bidirectional layer is not supported")
        self._recurrent(token, kind, units, direction == "b", direction == "r", summarize, m.group(6))

    def _recurrent(self, token: str, kind: str, units: int, bidirectional: bool, reverse: bool, summarize: bool,
                   dropout: str | None) -> None:
        if units < 1:
            raise UserError(f"VGSL token '{token}': needs at least one unit")
        p = int(dropout or 0)
        if p > 100:
            raise UserError(f"VGSL token '{token}': dropout is a percentage, 0 to 100")
        self.modules.append(Recurrent(kind, self.features, units, bidirectional, reverse, summarize, p / 100))
        self.features = units * (2 if bidirectional else 1)
        self.summarized = summarize

    def _dense(self, token: str, m: re.Match) -> None:
        self._need_sequence(token)
        units = int(m.group(2))
        if units < 1:
            raise UserError(f"VGSL token '{token}': needs at least one unit")
        self.modules.append(Dense(self.features, units, m.group(1)))
        self.features = units

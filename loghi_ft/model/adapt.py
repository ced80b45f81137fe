"""What changes a model for a training run: its output rows for a charset, frozen parts, normalisation momentum,
and the parameter groups its optimiser sees. The trainer only calls these."""

from __future__ import annotations

import torch
from torch import nn

from loghi_ft.errors import UserError
from loghi_ft.model.codec import Codec, build_charset
from loghi_ft.model.folder import ModelInfo
from loghi_ft.model.vgsl import VGSLModel, build_model

# new output rows start this far below the lowest trained bias, so the base's predictions stand until they learn
NEW_ROW_BIAS_MARGIN = 8.0
# Keras' momentum (0.99, torch 0.01) lets the running statistics trail the weights by ~100 steps, which wrecks
# validation in short fine-tuning runs; torch's 0.1 follows within ~10
BATCHNORM_MOMENTUM = 0.1


def fit_charset(model: VGSLModel, info: ModelInfo | None, mode: str, texts: list[str], spec: str | None
                ) -> tuple[VGSLModel, list[str]]:
    """The model and charset a run trains, by charset mode: fresh (a new model over the texts' characters),
    replace (a new output layer over them), union (the base's rows kept, new characters added), keep/resume."""
    if mode == "fresh":
        charset = build_charset(texts)
        return build_model(spec, len(charset) + 1), charset
    if mode == "replace":
        charset = build_charset(texts)
        return grow_output(model, charset, info.charset, keep_rows=False), charset
    if mode == "union":
        charset = Codec(info.charset).extend(texts).charset
        if len(charset) > len(info.charset):
            return grow_output(model, charset, info.charset, keep_rows=True), charset
    return model, list(info.charset)


def grow_output(base: VGSLModel, charset: list[str], base_charset: list[str], keep_rows: bool) -> VGSLModel:
    """The base model with an output layer over `charset`: the trained rows kept (union) or all new (replace)."""
    model = build_model(base.spec, len(charset) + 1)
    out = model.output_layer()
    prefix = f"layers.{len(model.layers) - 1}."
    model.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith(prefix)}, strict=False)
    if keep_rows:
        old, k = base.output_layer(), len(base_charset) + 1
        with torch.no_grad():
            out.weight[:k] = old.weight
            out.bias[:k] = old.bias
            # new characters start small and unlikely, so the base's readings stand until the rows learn
            out.weight[k:] = torch.randn_like(out.weight[k:]) * 1e-3
            out.bias[k:] = old.bias.min() - NEW_ROW_BIAS_MARGIN
    return model


def freeze(model: VGSLModel, parts: str | None) -> list[nn.Module]:
    """Stop gradients to the named parts; returns their modules (kept in eval mode so batch statistics stay)."""
    frozen = []
    for part in (parts or "").replace(" ", "").split(","):
        if not part:
            continue
        if part not in ("conv", "rnn"):
            raise UserError(f"--freeze takes conv, rnn or conv,rnn, not '{part}'")
        modules = model.conv_modules() if part == "conv" else model.recurrent_modules()
        for m in modules:
            m.requires_grad_(False)
        frozen += modules
    return frozen


def follow_batch_statistics(model: nn.Module) -> None:
    """BatchNorm running statistics that follow the weights within a few steps (see BATCHNORM_MOMENTUM)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = BATCHNORM_MOMENTUM


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters: weight decay on weights, not on biases and normalisation."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}]

"""Loghi's Keras side, re-implemented for tests: its VGSL model builder, its line preprocessing, its best_val/ folder.

Follows Loghi (knaw-huc/loghi-htr, src/model/management.py + replacing.py) and the VGSLify TensorFlow
layer factory it builds with: Keras default layer names, `padding='same'`, the transposed (N, W, H, C)
input, Rc as Reshape((-1, H*C)), Bidirectional(merge_mode='concat'), and a new model's output replaced
by Dense(len(tokenizer), name='dense_out') + Activation('softmax', name='activation'). Keras 3 runs here
on the PyTorch backend, so no TensorFlow is needed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402  (the backend must be chosen before this import)
import numpy as np  # noqa: E402

ACTIVATIONS = {"s": "softmax", "t": "tanh", "r": "relu", "e": "elu", "l": "linear", "m": "sigmoid"}

# Loghi's model library (src/model/management.py, get_model_library), the entries the tests use
LIBRARY = {
    "recommended": ("None,None,64,1 Cr3,3,24 Mp2,2,2,2 Bn Cr3,3,48 Bn Cr3,3,96 Mp2,2,2,2 Bn Cr3,3,96 Mp2,2,2,2 Bn "
                    "Rc3 Bl512 D50 Bl512 D50 Bl512 D50 Bl512 D50 Bl512 D50 Fs92"),
    "model15": ("None,None,64,1 Ce3,3,8 Bn Mp2,2,2,2 Ce3,3,12 Bn Ce3,3,20 Bn Ce3,3,32 Bn Ce3,3,48 Bn Rc3 "
                "Bg256,D50 Bg256,D50 Bg256,D50 Bg256,D50 Bg256,D50 Fs92"),
}


def build_vgsl(spec: str, name: str = "custom_model") -> keras.Model:
    """The Keras model Loghi's VGSL generator builds for `spec` (input `batch,height,width,channels` as VGSLify reads it)."""
    tokens = spec.split()
    batch, height, width, channels = (None if v == "None" else int(v) for v in tokens[0].split(","))
    inputs = keras.Input(shape=(height, width, channels), batch_size=batch)
    x = inputs
    for token in tokens[1:]:
        x = _layer(token, x)(x)
    return keras.Model(inputs=inputs, outputs=x, name=name)


def _layer(token: str, x) -> keras.layers.Layer:
    if token.startswith("C"):
        n = [int(v) for v in re.findall(r"\d+", token)]
        kx, ky, d = (n[0], n[1], n[-1])
        strides = (n[2], n[3]) if len(n) == 5 else (1, 1)
        return keras.layers.Conv2D(d, kernel_size=(ky, kx), strides=strides, padding="same",
                                   activation=ACTIVATIONS[token[1]])
    if token.startswith(("Mp", "Ap")):
        px, py, sx, sy = (int(v) for v in re.findall(r"\d+", token))
        pool = keras.layers.MaxPooling2D if token.startswith("Mp") else keras.layers.AveragePooling2D
        return pool(pool_size=(px, py), strides=(sx, sy), padding="same")
    if token == "Bn":
        return keras.layers.BatchNormalization()
    if token.startswith("Rc"):
        h, c = x.shape[-2:]
        return keras.layers.Reshape((-1, h * c))
    if token.startswith("B"):
        m = re.match(r"B([gl])(\d+)(?:,D(\d+))?(?:,Rd(\d+))?$", token)
        rnn = keras.layers.LSTM if m.group(1) == "l" else keras.layers.GRU
        return keras.layers.Bidirectional(rnn(int(m.group(2)), return_sequences=True,
                                              dropout=int(m.group(3) or 0) / 100,
                                              recurrent_dropout=int(m.group(4) or 0) / 100), merge_mode="concat")
    if token.startswith(("L", "G")):
        m = re.match(r"([LG])([fr])(s?)(\d+)$", token)
        rnn = keras.layers.LSTM if m.group(1) == "L" else keras.layers.GRU
        return rnn(int(m.group(4)), return_sequences=bool(m.group(3)), go_backwards=m.group(2) == "r")
    if token.startswith("D"):
        return keras.layers.Dropout(int(token[1:]) / 100)
    if token.startswith("F") or token.startswith("O1"):
        m = re.match(r"(?:F|O1)([a-z])(\d+)$", token)
        return keras.layers.Dense(int(m.group(2)), activation=ACTIVATIONS[m.group(1)])
    raise ValueError(f"token {token} not in this re-implementation")


def replace_final_layer(model: keras.Model, classes: int) -> keras.Model:
    """Loghi's replace_final_layer: the layers before the last dense/activation, then dense_out + softmax."""
    last = [layer.name for layer in model.layers if not layer.name.startswith(("dense", "activation"))][-1]
    x = keras.layers.Dense(classes, name="dense_out")(model.get_layer(last).output)
    out = keras.layers.Activation("softmax", name="activation")(x)
    return keras.Model(inputs=model.inputs, outputs=out, name=model.name)


def randomize(model: keras.Model, seed: int) -> None:
    """Deterministic random weights, biases and batch-norm statistics (so every kind of weight matters)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.6, 1.4, n), rng.normal(0, 0.2, n),
                               rng.normal(0, 0.3, n), rng.uniform(0.3, 2.0, n)])
            continue
        weights = []
        for w in layer.get_weights():
            if w.ndim >= 2:  # Glorot-normal over the kernel's fan-in + fan-out
                receptive = int(np.prod(w.shape[:-2])) if w.ndim > 2 else 1
                std = np.sqrt(2.0 / (receptive * (w.shape[-2] + w.shape[-1])))
                std *= 12 if layer.name == "dense_out" else 1  # confident outputs, far from uniform
            else:
                std = 0.2
            weights.append(rng.normal(0, std, w.shape).astype(np.float32))
        if weights:
            layer.set_weights(weights)


def loghi_input(strips: list[np.ndarray], channels: int = 1) -> np.ndarray:
    """Loghi's reading of uint8 line strips: /255, 25 black columns each side, 0.5 - x, transposed, batch padded -10."""
    lines = []
    for s in strips:
        x = s.astype(np.float32) / 255.0
        x = np.pad(x, ((0, 0), (25, 25)), constant_values=0.0)
        lines.append((0.5 - x).T)
    width = max(line.shape[0] for line in lines)
    batch = np.full((len(lines), width, strips[0].shape[0], channels), -10.0, dtype=np.float32)
    for i, line in enumerate(lines):
        batch[i, : line.shape[0]] = line[:, :, None]
    return batch


def save_best_val(model: keras.Model, folder: Path, chars: list[str], spec: str, legacy_charlist: bool = False) -> Path:
    """Write `folder` as Loghi writes best_val/: model.keras, tokenizer.json (or charlist.txt) and config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    if legacy_charlist:
        (folder / "charlist.txt").write_text("".join(chars), encoding="utf-8")
    else:
        tokens = ["[PAD]", "[UNK]", *chars]
        (folder / "tokenizer.json").write_text(json.dumps(dict(enumerate(tokens)), ensure_ascii=False, indent=4),
                                               encoding="utf-8")
    config = {"args": {"general": {"batch_size": 4, "gpu": "-1"}, "model": {"model": spec, "model_name": model.name}},
              "model": [f"{layer.name} ({type(layer).__name__})" for layer in model.layers],
              "model_name": model.name, "model_channels": model.input_shape[-1], "notes": "",
              "url_code": "https://github.com/knaw-huc/loghi"}
    (folder / "config.json").write_text(json.dumps(config, indent=4, sort_keys=True), encoding="utf-8")
    return folder


def make_loghi_model(folder: Path, spec: str, chars: list[str], seed: int, name: str = "loghi",
                     legacy_charlist: bool = False, replace_output: bool = True) -> keras.Model:
    """A Loghi model with random weights, saved as best_val/.

    With `replace_output`, as Loghi trains a new model: the spec's output swapped for dense_out + softmax
    over the tokenizer. Without, as Loghi's older generator built it: the spec's own last layer (Fs<n>, n =
    characters + 2) followed by Activation('linear').
    """
    keras.utils.set_random_seed(seed)
    model = build_vgsl(spec, name)
    if replace_output:
        model = replace_final_layer(model, len(chars) + 2)
    else:
        out = keras.layers.Activation("linear")(model.outputs[0])
        model = keras.Model(inputs=model.inputs, outputs=out, name=name)
    randomize(model, seed)
    save_best_val(model, folder, chars, spec, legacy_charlist)
    return model


def predict(model: keras.Model, batch: np.ndarray) -> np.ndarray:
    """The Keras model's softmax output for a Loghi input batch, as numpy."""
    return keras.ops.convert_to_numpy(model(keras.ops.convert_to_tensor(batch), training=False))


def real_strips(count: int, height: int = 64) -> tuple[list[np.ndarray], list[str], list[str]]:
    """The `count` narrowest transcribed lines of a real TIME US page (fast to run), their texts, and the page's characters."""
    from conftest import TIMEUS

    from loghi_ft.pages.lines import cut_page
    from loghi_ft.pages.documents import read_page

    page = read_page(TIMEUS / "PH 1858-10.xml")
    cut = [(strip, line.text) for line, strip, _ in cut_page(page, height) if strip is not None and line.text.strip()]
    cut.sort(key=lambda item: item[0].shape[1])
    chars = sorted(set("".join(line.text for line in page.lines)))
    return [s for s, _ in cut[:count]], [t for _, t in cut[:count]], chars

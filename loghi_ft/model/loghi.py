"""Loghi models in: a Loghi `best_val/` folder (Keras `.keras`, or a legacy SavedModel) becomes one of our model folders.

A Loghi model is a chain of Keras layers on the transposed line image, (N, W, H, C), built by vgslify
(Loghi's VGSL generator): a linear Conv2D or Dense followed by its own Activation layer, and for the output a
Dense named `dense_out` and an Activation softmax (`activation`, `activation_<n>`: Loghi's names for the layers
that replace the spec's output). Older Loghi models keep the activation inside Conv2D and Dense, and end in a
softmax Dense and a linear Activation. We read the layer graph from the `.keras` zip (config.json +
model.weights.h5, written by Keras 3 or Keras 2; with zipfile, json and h5py: no TensorFlow), translate it into
our VGSL spec, build that with `build_model` and convert every weight (tested on models that loghi-htr itself
trained, tests/data/loghi):

- Conv2D kernel (kW, kH, C_in, C_out) on (N, W, H, C) -> weight (C_out, C_in, kH, kW): permute(3, 2, 1, 0).
- BatchNormalization gamma, beta, moving mean/variance -> weight, bias, running_mean, running_var; our Bn
  uses Keras' epsilon 1e-3, another epsilon is folded into running_var (var + eps - 1e-3).
- Reshape (-1, H*C) -> Rc3: our collapse flattens in the same order (h*C + c), so no column permutation.
- LSTM (gates i, f, c, o in Keras and i, f, g, o in torch: the same order): kernel.T -> weight_ih,
  recurrent_kernel.T -> weight_hh, bias -> bias_ih, zeros -> bias_hh.
- GRU (reset_after=True; gates z, r, h in Keras, r, z, n in torch): swap the first two blocks of kernel,
  recurrent_kernel and both bias rows; bias[0] -> bias_ih, bias[1] -> bias_hh.
- Bidirectional: forward_layer -> *_l0, backward_layer -> *_l0_reverse (both align their outputs in time).
- Activation after a linear Conv2D or Dense: becomes that layer's activation in our token (Cr..., Fr...); a
  linear Activation anywhere is the identity and adds nothing.
- Dense kernel.T -> weight. The output layer's rows are reordered: Loghi's CTC blank is its last row
  (tf.nn.ctc_greedy_decoder's default) and row j is tokenizer entry j+1 (row 0 = [UNK]); ours puts the
  blank at row 0, then [UNK] (kept as U+FFFD so the softmax over the rows is unchanged), then the characters.

Loghi's reading of pixels travels in ModelInfo.preprocess: input = 0.5 - pixel/255, 25 black columns
(pixel 0) added left and right of every line (`resize_with_pad(width + 50)`), and the batch padded
with -10 beyond a line's end (`padded_batch(padding_values=-10)`). Not carried over: Loghi's loader also pads
a line narrower than 16 pixels per character of the text its list gives (`_ensure_width_for_ctc`; "to be
determined" when the list gives none), so its readings of lines narrower than 206 pixels differ from ours.
"""

from __future__ import annotations

import json
import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loghi_ft.errors import UserError

UNKNOWN = "\ufffd"
KERAS_FILE = "model.keras"
SAVED_MODEL = "saved_model.pb"
OUR_BN_EPSILON = 1e-3
LOGHI_PREPROCESS = {"scale": -1.0 / 255.0, "offset": 0.5, "pad_value": 255,
                    "margin": 25, "margin_value": 0, "pad_input": -10.0}
ACTIVATIONS = {"relu": "r", "tanh": "t", "elu": "e", "linear": "l", "sigmoid": "m", "softmax": "s"}


@dataclass
class KerasLayer:
    """One layer of the Keras graph: its class, its config and its weights in Keras' order."""

    name: str
    kind: str
    config: dict
    inputs: list[str]
    weights: list[np.ndarray] = field(default_factory=list)


def is_loghi_model(folder: str | Path) -> bool:
    """True for a folder that holds a Loghi model (a .keras file or a SavedModel) and none of ours."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / "model.json").exists():
        return False
    return (folder / SAVED_MODEL).exists() or any(folder.glob("*.keras"))


def import_loghi(src: str | Path, dst: str | Path):
    """Convert the Loghi model folder `src` into our model folder `dst`; returns its ModelInfo."""
    from loghi_ft.model.folder import ModelInfo, save_model

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise UserError(f"{src}: Loghi model folder not found")
    layers = read_layers(src)
    chars = read_charset(src)
    loghi_config = read_loghi_config(src)
    plan = translate(layers, src)
    if UNKNOWN in chars:
        raise UserError(f"{src}: the tokenizer holds U+FFFD, which we reserve for Loghi's [UNK] row")
    if plan.classes != len(chars) + 2:
        raise UserError(f"{src}: the output layer has {plan.classes} rows but the tokenizer {len(chars)} characters "
                        f"(+ [UNK] + blank = {len(chars) + 2}); the tokenizer does not belong to this model")
    model = plan.build()
    info = ModelInfo(spec=model.spec, height=plan.height, channels=plan.channels, charset=[UNKNOWN, *chars],
                     preprocess=dict(LOGHI_PREPROCESS), normalization="none",
                     training={"imported_from": str(src.resolve()),
                               "loghi_spec": _loghi_spec(loghi_config),
                               "loghi_model_name": loghi_config.get("model_name"),
                               "loghi_layers": [f"{layer.name}:{layer.kind}" for layer in layers]})
    save_model(model, info, dst)
    return info


# ---------------------------------------------------------------- reading Loghi's files

def read_layers(folder: Path) -> list[KerasLayer]:
    """The layers of the model in `folder`: from its .keras zip, or (with TensorFlow) its SavedModel."""
    keras_files = sorted(folder.glob("*.keras"))
    if (folder / KERAS_FILE).exists():
        keras_files = [folder / KERAS_FILE]
    if keras_files:
        if len(keras_files) > 1:
            raise UserError(f"{folder}: holds several .keras files ({', '.join(p.name for p in keras_files)}); "
                            f"keep one, or name it {KERAS_FILE}")
        return read_keras_file(keras_files[0])
    if (folder / SAVED_MODEL).exists():
        return read_saved_model(folder)
    raise UserError(f"{folder}: no {KERAS_FILE} and no {SAVED_MODEL}; not a Loghi model folder")


def read_keras_file(path: Path) -> list[KerasLayer]:
    """Layers and weights of a Keras 3 `.keras` file (a zip of config.json and model.weights.h5)."""
    import h5py

    try:
        with zipfile.ZipFile(path) as z:
            missing = [n for n in ("config.json", "model.weights.h5") if n not in z.namelist()]
            if missing:
                raise UserError(f"{path}: incomplete .keras file, {' and '.join(missing)} missing")
            config = json.loads(z.read("config.json"))
            weights_bytes = z.read("model.weights.h5")
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path}: not a readable .keras file ({exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: config.json inside is not valid JSON ({exc})") from None
    layer_configs = (config.get("config") or {}).get("layers")
    if not isinstance(layer_configs, list):
        raise UserError(f"{path}: config.json describes no layers (class {config.get('class_name')!r})")
    layers = [_layer_from_config(c, path) for c in layer_configs]
    try:
        with h5py.File(io.BytesIO(weights_bytes), "r") as h5:
            group = h5.get("layers")
            if group is None:
                raise UserError(f"{path}: model.weights.h5 has no 'layers' group; not a Keras 3 weights file")
            for layer, key in zip(layers, _h5_keys(layers)):
                stored = group.get(key) if key in group else group.get(layer.name)
                layer.weights = _h5_weights(stored) if stored is not None else []
    except OSError as exc:
        raise UserError(f"{path}: model.weights.h5 is not readable HDF5 ({exc})") from None
    return layers


def read_saved_model(folder: Path) -> list[KerasLayer]:
    """Layers and weights of a legacy TensorFlow SavedModel; needs TensorFlow with Keras 2."""
    try:
        import tensorflow as tf
    except ImportError:
        raise UserError(f"{folder}: a legacy SavedModel (saved_model.pb) needs TensorFlow: "
                        f"pip install 'loghi-ft[tensorflow]', or re-save it as model.keras with Loghi") from None
    try:
        import tf_keras as tfk  # Keras 2 for TensorFlow >= 2.16, where tf.keras (Keras 3) cannot read SavedModels
    except ImportError:
        if tuple(int(v) for v in tf.__version__.split(".")[:2]) >= (2, 16):
            raise UserError(f"{folder}: a legacy SavedModel needs Keras 2, and TensorFlow {tf.__version__} comes with "
                            f"Keras 3: pip install tf_keras") from None
        tfk = tf.keras
    try:
        model = tfk.models.load_model(str(folder), compile=False)
    except Exception as exc:  # TensorFlow raises many types here; all mean the same to the user
        raise UserError(f"{folder}: TensorFlow could not load the SavedModel ({type(exc).__name__}: {exc})") from None
    config = model.get_config()
    by_name = {layer.name: layer for layer in model.layers}
    layers = [_layer_from_config(c, folder) for c in config.get("layers", [])]
    for layer in layers:
        layer.weights = [np.asarray(w) for w in by_name[layer.name].get_weights()] if layer.name in by_name else []
    return layers


def read_charset(folder: Path) -> list[str]:
    """Loghi's characters in output order: tokenizer.json ({"0": "[PAD]", "1": "[UNK]", ...}) or legacy charlist.txt."""
    tokenizer = folder / "tokenizer.json"
    charlist = folder / "charlist.txt"
    if tokenizer.exists():
        try:
            data = json.loads(tokenizer.read_text(encoding="utf-8"))
            tokens = [data[str(i)] for i in range(len(data))]
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{tokenizer}: not valid JSON ({exc})") from None
        except (KeyError, TypeError):
            raise UserError(f"{tokenizer}: expected a mapping of \"0\", \"1\", ... to tokens") from None
        if tokens[:2] != ["[PAD]", "[UNK]"]:
            raise UserError(f"{tokenizer}: expected [PAD] and [UNK] as tokens 0 and 1, found {tokens[:2]}")
        chars = tokens[2:]
    elif charlist.exists():
        try:
            text = charlist.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{charlist}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        # Loghi reads the file as one string of characters, dropping the two control characters it never trains
        chars = [c for c in text if c not in ("\x1b", "\x1a")]
    else:
        raise UserError(f"{folder}: neither tokenizer.json nor charlist.txt; the model's characters are unknown")
    if not chars:
        raise UserError(f"{tokenizer if tokenizer.exists() else charlist}: no characters")
    bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
    if bad:
        raise UserError(f"{folder}: tokens must be single characters, found {bad[:5]}")
    if len(set(chars)) != len(chars):
        raise UserError(f"{folder}: the character list names a character twice")
    return chars


def read_loghi_config(folder: Path) -> dict:
    """Loghi's config.json (its arguments and model summary), or {} when absent."""
    path = folder / "config.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _loghi_spec(config: dict) -> str | None:
    """The VGSL spec or library name Loghi was given (--model), if the config records one."""
    args = config.get("args") or {}
    model = (args.get("model") or {}).get("model") if isinstance(args.get("model"), dict) else args.get("model")
    return model if isinstance(model, str) else None


def _layer_from_config(c: dict, source: Path) -> KerasLayer:
    if not isinstance(c, dict) or "class_name" not in c:
        raise UserError(f"{source}: a layer entry in config.json has no class_name")
    config = c.get("config") or {}
    name = c.get("name") or config.get("name") or "?"
    return KerasLayer(name=name, kind=c["class_name"], config=config, inputs=_inbound(c.get("inbound_nodes", [])))


def _inbound(nodes) -> list[str]:
    """Names of the layers feeding this one, from Keras 3 (keras_history) or Keras 2 ([[name, 0, 0, {}]]) nodes."""
    names: list[str] = []

    def walk(x):
        if isinstance(x, dict):
            history = (x.get("config") or {}).get("keras_history") if x.get("class_name") == "__keras_tensor__" else None
            if history:
                names.append(history[0])
                return
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            if len(x) >= 3 and isinstance(x[0], str) and isinstance(x[1], int):
                names.append(x[0])
                return
            for v in x:
                walk(v)

    walk(nodes)
    return names


def _snake(name: str) -> str:
    """Keras' to_snake_case: the key a layer's weights get in model.weights.h5."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _h5_keys(layers: list[KerasLayer]) -> list[str]:
    """Keras 3 stores weights by class name, numbered in layer order (conv2d, conv2d_1, ...), not by layer name."""
    used: dict[str, int] = {}
    keys = []
    for layer in layers:
        key = _snake(layer.kind)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        keys.append(key)
    return keys


def _h5_weights(group) -> list[np.ndarray]:
    """A layer's arrays in Keras' order: its own vars, then forward_layer, backward_layer, cell... recursively."""
    out = []
    own = group.get("vars")
    if own is not None:
        out += [np.asarray(own[k]) for k in sorted(own, key=int)]
    for key in ("forward_layer", "backward_layer", "cell"):
        if key in group:
            out += _h5_weights(group[key])
    return out


# ---------------------------------------------------------------- translating the graph

@dataclass
class Plan:
    """Our spec for the Keras chain and, per token, the tensors it takes (Keras layout already converted)."""

    height: int
    channels: int
    tokens: list[str] = field(default_factory=list)
    tensors: list[dict[str, np.ndarray]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    classes: int = 0

    @property
    def spec(self) -> str:
        return " ".join([f"None,None,{self.height},{self.channels}", *self.tokens])

    def add(self, token: str, tensors: dict[str, np.ndarray], source: str) -> None:
        self.tokens.append(token)
        self.tensors.append(tensors)
        self.sources.append(source)

    def build(self):
        """Our model with every converted weight in place; UserError naming a layer whose shapes disagree."""
        import torch

        from loghi_ft.model.vgsl import build_model

        model = build_model(self.spec, self.classes)
        state = model.state_dict()
        for i, (tensors, source) in enumerate(zip(self.tensors, self.sources)):
            for name, value in tensors.items():
                key = f"layers.{i}.{name}"
                if key not in state or tuple(state[key].shape) != value.shape:
                    want = tuple(state[key].shape) if key in state else "no such parameter"
                    raise UserError(f"Keras layer '{source}': converted weight {name} {value.shape} does not fit "
                                    f"our layer ({want})")
                state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        model.load_state_dict(state)
        return model.eval()


def translate(layers: list[KerasLayer], source: Path) -> Plan:
    """Our VGSL spec and converted weights for a chain of Keras layers; UserError naming what we cannot map."""
    if not layers or layers[0].kind != "InputLayer":
        raise UserError(f"{source}: the model does not start with an input layer")
    shape = layers[0].config.get("batch_shape") or layers[0].config.get("batch_input_shape")
    if not shape or len(shape) != 4 or not isinstance(shape[2], int) or not isinstance(shape[3], int):
        raise UserError(f"{source}: input shape {shape} is not Loghi's (batch, width, height, channels)")
    plan = Plan(height=shape[2], channels=shape[3])
    _check_chain(layers, source)
    body = layers[1:]
    out = max((i for i, layer in enumerate(body) if layer.kind == "Dense"), default=None)
    if out is None:
        raise UserError(f"{source}: no Dense output layer")
    _check_output_activation(body[out:], source)
    state = {"image": True, "height": plan.height, "channels": plan.channels, "features": 0, "bare": None}
    for layer in body[:out]:
        _translate_layer(layer, plan, state, source)
    if state["image"]:
        raise UserError(f"{source}: the output layer '{body[out].name}' works on the image: no reshape to a sequence")
    dense = body[out]
    kernel, bias = _dense_weights(dense, state["features"], source)
    rows = kernel.shape[1]
    order = [rows - 1, *range(rows - 1)]  # Loghi's blank is its last row; ours is row 0
    plan.classes = rows
    plan.add(f"O1s{rows}", {"weight": kernel.T[order], "bias": bias[order]}, dense.name)
    return plan


def _check_chain(layers: list[KerasLayer], source: Path) -> None:
    for prev, layer in zip(layers, layers[1:]):
        if layer.inputs and layer.inputs != [prev.name]:
            raise UserError(f"{source}: layer '{layer.name}' takes its input from {layer.inputs}, not from the layer "
                            f"before it ('{prev.name}'); only a single chain of layers can be imported")


def _check_output_activation(tail: list[KerasLayer], source: Path) -> None:
    """The output Dense and the Activation layers after it must apply exactly one softmax."""
    acts = [tail[0].config.get("activation", "linear")]
    for layer in tail[1:]:
        if layer.kind != "Activation":
            raise UserError(f"{source}: layer '{layer.name}' ({layer.kind}) after the output layer is not supported")
        acts.append(layer.config.get("activation", "linear"))
    if sorted(acts) != sorted(["softmax"] + ["linear"] * (len(acts) - 1)):
        raise UserError(f"{source}: the output ends in activations {acts}; expected exactly one softmax")


def _translate_layer(layer: KerasLayer, plan: Plan, state: dict, source: Path) -> None:
    kind, c, name = layer.kind, layer.config, layer.name
    where = f"{source}: layer '{name}' ({kind})"
    if kind == "Activation":
        _fold_activation(layer, plan, state, where)
        return
    state["bare"] = None  # an Activation joins only the layer right before it
    if kind == "Conv2D":
        _translate_conv(layer, plan, state, where)
    elif kind in ("MaxPooling2D", "AveragePooling2D"):
        _need(state["image"], where, "comes after the reshape to a sequence")
        _need(c.get("padding") == "same", where, f"padding {c.get('padding')!r}; Loghi uses 'same'")
        pw, ph = c["pool_size"]
        sw, sh = c.get("strides") or (pw, ph)
        plan.add(f"{'Mp' if kind == 'MaxPooling2D' else 'Ap'}{pw},{ph},{sw},{sh}", {}, name)
        state["height"] = -(-state["height"] // sh)
    elif kind == "BatchNormalization":
        _translate_batchnorm(layer, plan, state, where)
    elif kind == "Dropout":
        plan.add(f"D{round(float(c.get('rate', 0)) * 100)}", {}, name)
    elif kind == "Reshape":
        _need(state["image"], where, "a second reshape")
        target = list(c.get("target_shape", []))
        features = state["height"] * state["channels"]
        _need(len(target) == 2 and target[0] in (-1, None) and target[1] == features, where,
              f"target shape {target}; Loghi's collapse is (-1, height*channels) = (-1, {features})")
        plan.add("Rc3", {}, name)
        state.update(image=False, features=features)
    elif kind == "Bidirectional":
        _need(not state["image"], where, "comes before the reshape to a sequence")
        _need(c.get("merge_mode", "concat") == "concat", where, f"merge mode {c.get('merge_mode')!r}; only concat")
        inner = c.get("layer") or {}
        cell, units, suffix = _rnn_config(inner, where)
        _need(inner.get("config", {}).get("return_sequences", False), where, "does not return sequences")
        _need(len(layer.weights) == 6, where, f"{len(layer.weights)} weight arrays, expected 6 (3 per direction)")
        fwd = _rnn_tensors(cell, layer.weights[:3], state["features"], units, where, "")
        bwd = _rnn_tensors(cell, layer.weights[3:], state["features"], units, where, "_reverse")
        plan.add(f"B{cell}{units}{suffix}", {**fwd, **bwd}, name)
        state["features"] = 2 * units
    elif kind in ("LSTM", "GRU"):
        _need(not state["image"], where, "comes before the reshape to a sequence")
        cell, units, suffix = _rnn_config({"class_name": kind, "config": c}, where)
        _need(c.get("return_sequences", False), where, "returns only its last state, which CTC cannot read")
        _need(not c.get("go_backwards", False), where,
              "runs backwards and returns its outputs right to left; only forward one-way layers are supported")
        tensors = _rnn_tensors(cell, layer.weights, state["features"], units, where, "")
        plan.add(f"{cell.upper()}fs{units}{suffix}", tensors, name)
        state["features"] = units
    elif kind == "Dense":
        _need(not state["image"], where, "comes before the reshape to a sequence")
        act = _activation(c, where)
        kernel, bias = _dense_weights(layer, state["features"], where)
        plan.add(f"F{act}{kernel.shape[1]}", {"weight": kernel.T, "bias": bias}, name)
        state["bare"] = len(plan.tokens) - 1 if act == "l" else None
        state["features"] = kernel.shape[1]
    else:
        raise UserError(f"{where}: this kind of layer is not supported; Loghi models are made of Conv2D, "
                        f"Activation, MaxPooling2D/AveragePooling2D, BatchNormalization, Dropout, Reshape, "
                        f"Bidirectional LSTM/GRU, LSTM/GRU and Dense layers")


def _translate_conv(layer: KerasLayer, plan: Plan, state: dict, where: str) -> None:
    """A Keras Conv2D as a VGSL C token with torch's weight layout."""
    c, name = layer.config, layer.name
    _need(state["image"], where, "comes after the reshape to a sequence")
    _need(c.get("padding") == "same", where, f"padding {c.get('padding')!r}; Loghi uses 'same'")
    _need(tuple(c.get("dilation_rate", (1, 1))) == (1, 1), where, "dilation is not supported")
    _need(c.get("groups", 1) == 1 and c.get("data_format", "channels_last") == "channels_last", where,
          "grouped or channels-first convolutions are not supported")
    act = _activation(c, where)
    kw, kh = c["kernel_size"]
    sw, sh = c.get("strides", (1, 1))
    filters = c["filters"]
    kernel = _weight(layer, 0, (kw, kh, state["channels"], filters), where)
    bias = _weight(layer, 1, (filters,), where) if c.get("use_bias", True) else np.zeros(filters, np.float32)
    token = f"C{act}{kh},{kw},{filters}" if (sw, sh) == (1, 1) else f"C{act}{kh},{kw},{sw},{sh},{filters}"
    plan.add(token, {"weight": kernel.transpose(3, 2, 1, 0), "bias": bias}, name)
    state["bare"] = len(plan.tokens) - 1 if act == "l" else None
    state["channels"] = filters
    state["height"] = -(-state["height"] // sh)


def _translate_batchnorm(layer: KerasLayer, plan: Plan, state: dict, where: str) -> None:
    """A Keras BatchNormalization as a Bn token, its epsilon folded into the running variance."""
    c, name = layer.config, layer.name
    axis = c.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    _need(axis in (-1, 3 if state["image"] else 2), where, f"normalises axis {axis}, not the channels")
    n = state["channels"] if state["image"] else state["features"]
    arrays = iter(layer.weights)
    gamma = _next(arrays, (n,), where) if c.get("scale", True) else np.ones(n, np.float32)
    beta = _next(arrays, (n,), where) if c.get("center", True) else np.zeros(n, np.float32)
    mean, var = _next(arrays, (n,), where), _next(arrays, (n,), where)
    var = var + float(c.get("epsilon", OUR_BN_EPSILON)) - OUR_BN_EPSILON
    _need(bool((var > 0).all()), where, f"epsilon {c.get('epsilon')} with variances this small cannot be "
          f"represented with our epsilon {OUR_BN_EPSILON}")
    plan.add("Bn", {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var}, name)


def _fold_activation(layer: KerasLayer, plan: Plan, state: dict, where: str) -> None:
    """vgslify's Activation layer after a linear Conv2D or Dense becomes that token's activation letter."""
    act = _activation(layer.config, where)
    if act == "l":
        return
    bare = state.get("bare")
    _need(bare is not None, where, f"applies {layer.config['activation']!r} to a layer that is not a Conv2D or "
          f"Dense without activation of its own; our layers cannot express an activation there")
    token = plan.tokens[bare]
    plan.tokens[bare] = token[0] + act + token[2:]
    state["bare"] = None


def _rnn_config(inner: dict, where: str) -> tuple[str, int, str]:
    """('l' or 'g', units, ',D<p>,Rd<p>' suffix) of an LSTM/GRU config; refuses what torch's cells compute differently."""
    kind, c = inner.get("class_name"), inner.get("config") or {}
    _need(kind in ("LSTM", "GRU"), where, f"wraps a {kind}; only LSTM and GRU are supported")
    _need(c.get("activation", "tanh") == "tanh" and c.get("recurrent_activation", "sigmoid") == "sigmoid", where,
          f"activations {c.get('activation')}/{c.get('recurrent_activation')}; torch's cells use tanh/sigmoid")
    if kind == "GRU":
        _need(c.get("reset_after", True), where, "GRU with reset_after=False computes differently from torch's GRU")
    suffix = ""
    if c.get("dropout"):
        suffix += f",D{round(c['dropout'] * 100)}"
    if c.get("recurrent_dropout"):
        suffix += f",Rd{round(c['recurrent_dropout'] * 100)}"
    return ("l" if kind == "LSTM" else "g"), int(c["units"]), suffix


def _rnn_tensors(cell: str, arrays: list[np.ndarray], features: int, units: int, where: str,
                 suffix: str) -> dict[str, np.ndarray]:
    """Keras (kernel, recurrent_kernel, bias) of one direction -> torch's weight_ih/hh, bias_ih/hh."""
    gates = 4 if cell == "l" else 3
    it = iter(arrays)
    kernel = _next(it, (features, gates * units), where)
    recurrent = _next(it, (units, gates * units), where)
    if cell == "l":
        bias = _next(it, (gates * units,), where)
        b_ih, b_hh = bias, np.zeros_like(bias)
    else:
        bias = _next(it, (2, gates * units), where)
        # Keras orders the GRU gates z, r, h; torch r, z, n
        order = np.r_[units:2 * units, 0:units, 2 * units:3 * units]
        kernel, recurrent, bias = kernel[:, order], recurrent[:, order], bias[:, order]
        b_ih, b_hh = bias[0], bias[1]
    return {f"rnn.weight_ih_l0{suffix}": kernel.T, f"rnn.weight_hh_l0{suffix}": recurrent.T,
            f"rnn.bias_ih_l0{suffix}": b_ih, f"rnn.bias_hh_l0{suffix}": b_hh}


def _dense_weights(layer: KerasLayer, features: int, where) -> tuple[np.ndarray, np.ndarray]:
    units = int(layer.config["units"])
    kernel = _weight(layer, 0, (features, units), where)
    bias = _weight(layer, 1, (units,), where) if layer.config.get("use_bias", True) else np.zeros(units, np.float32)
    return kernel, bias


def _activation(c: dict, where: str) -> str:
    act = c.get("activation", "linear")
    _need(isinstance(act, str) and act in ACTIVATIONS, where,
          f"activation {act!r} is not supported (only {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[act]


def _weight(layer: KerasLayer, i: int, shape: tuple, where: str) -> np.ndarray:
    _need(i < len(layer.weights), where, f"weight {i} is missing from the weights file")
    return _check_shape(layer.weights[i], shape, where)


def _next(arrays, shape: tuple, where: str) -> np.ndarray:
    value = next(arrays, None)
    _need(value is not None, where, "has fewer weight arrays than its configuration needs")
    return _check_shape(value, shape, where)


def _check_shape(value: np.ndarray, shape: tuple, where: str) -> np.ndarray:
    _need(tuple(value.shape) == tuple(shape), where, f"weight of shape {tuple(value.shape)}, expected {tuple(shape)}")
    return value.astype(np.float32)


def _need(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise UserError(f"{where}: {problem}")

"""VGSL models: every token kind, exact output lengths, Loghi's layouts (checked against Keras), export-friendliness."""

import copy
import math
import os

import numpy as np
import pytest
import torch

from conftest import TIMEUS
from loghi_ft.errors import UserError
from loghi_ft.pages.lines import cut_page
from loghi_ft.model.folder import ModelInfo
from loghi_ft.model.pixels import preprocess
from loghi_ft.model.vgsl import build_model, presets
from loghi_ft.pages.documents import read_page

RECOMMENDED = ("None,None,64,1 Cr3,3,24 Mp2,2,2,2 Bn Cr3,3,48 Bn Cr3,3,96 Mp2,2,2,2 Bn Cr3,3,96 Mp2,2,2,2 Bn "
               "Rc3 Bl512 D50 Bl512 D50 Bl512 D50 Bl512 D50 Bl512 D50")
# one of every token kind, with strides, dilation and padding that differ between odd and even widths
EVERY_KIND = ("None,None,48,1 Cr3,3,8 Ap3,3,2,2 Ce3,5,2,2,12 Mp2,2 Cl3,3,12,1,1,2,2 Ct1,1,6 Cm1,3,6 Cs3,1,6 Bn D10 "
              "Do0.1,2 Rc3 Bn D20 Do Do0.2,2 Do0.3,1 Lfs16,D10 Lrs16 Gfs8 Grs8 Bl8 Bg8,D10,Rd10 Lfx8 Lrx8 Lbx8 Ft10 Fr10 Fm10 Fe10 Fl10 Fs10 O1s7")


@pytest.fixture(scope="module")
def strip(data_dir):
    """A real 64-high line strip cut from a timeus page."""
    page = read_page(TIMEUS / "PH 1858-1.xml")
    return next(s for _, s, _ in cut_page(page, 64) if s is not None and s.shape[1] > 600)


def test_every_token_kind_builds_and_output_lengths_match_the_frames():
    model = build_model(EVERY_KIND, 7).eval()
    assert model.height == 48 and model.channels == 1 and model.num_classes == 7
    assert model.width_strides == [2, 2, 2]
    with torch.no_grad():
        for width in [1, 2, 3, 7, 8, 9, 15, 16, 17, 40, 63]:
            y = model(torch.rand(2, 1, 48, width))
            assert y.shape == (2, math.ceil(width / 8), 7)
            assert model.output_lengths(torch.tensor([width]))[0] == y.shape[1]
        # in a padded batch each line keeps its own frame count
        lengths = model.output_lengths(torch.tensor([63, 17, 1]))
        assert lengths.tolist() == [8, 3, 1]


def test_recommended_spec_reads_a_real_line(strip):
    model = build_model(RECOMMENDED, 93).eval()
    assert model.height == 64 and model.channels == 1
    assert 30.5e6 < model.parameter_count() < 30.9e6
    info = ModelInfo(model.spec, 64, 1, [chr(65 + i) for i in range(92)])
    x, widths = preprocess([strip], info)
    with torch.no_grad():
        y = model(x)
    frames = math.ceil(math.ceil(math.ceil(strip.shape[1] / 2) / 2) / 2)
    assert y.shape == (1, frames, 93)
    assert model.output_lengths(widths).tolist() == [frames]
    assert torch.isfinite(y).all()
    assert "30.68 M parameters" in model.describe() and "93 classes" in model.describe()


def test_presets_resolve_by_name_and_kraken_has_its_size():
    names = presets()
    assert {"recommended", "small", "kraken"} <= set(names)
    assert names["recommended"] == RECOMMENDED
    kraken = build_model("kraken", 100)
    assert kraken.height == 120 and kraken.spec == build_model(names["kraken"], 100).spec
    assert 3.95e6 < kraken.parameter_count() < 4.1e6
    assert build_model("small", 100).parameter_count() < 3e6


def test_output_layer_is_added_or_resized_to_the_charset():
    added = build_model("None,None,64,1 Cr3,3,8 Mp2,2,2,2 Rc3 Bl8", 11)
    assert added.spec.endswith("Bl8 O1s11") and added.layers[-1].out_features == 11
    # Loghi ends its specs with Fs92 or O1s92: the output layer, resized to the charset
    loghi = build_model("None,None,64,1 Cr3,3,8 Mp2,2,2,2 Rc3 Bl8 Fs92", 11)
    assert loghi.spec.endswith("Bl8 O1s11") and len(loghi.layers) == len(added.layers)
    assert build_model(loghi.spec, 20).layers[-1].out_features == 20


def test_rc3_puts_height_outer_and_channels_inner():
    model = build_model("None,None,8,1 Cl1,1,3 Rc3 Fl4", 3)
    collapse = model.layers[1]
    x = torch.arange(2 * 3 * 8 * 5, dtype=torch.float32).reshape(2, 3, 8, 5)
    y = collapse(x)
    assert y.shape == (2, 5, 24)
    for n, c, h, w in [(0, 0, 0, 0), (1, 2, 7, 4), (0, 1, 3, 2)]:
        assert y[n, w, h * 3 + c] == x[n, c, h, w]


def test_loghi_input_orders_and_heights():
    assert build_model("None,None,96,3 Cr3,3,8 Rc3 Bl8", 5).height == 96
    old = build_model("None,64,None,1 Cr3,3,8 Rc3 Bl8", 5)
    assert (old.height, old.channels) == (64, 1)
    assert build_model("[1,120,0,1 Cr3,3,8 Rc3 Bl8]", 5).height == 120


@pytest.mark.parametrize("spec, named", [
    ("None,None,64,1 Cr3,3,8 Xyz12 Rc3 Bl8", "Xyz12"),
    ("None,None,64,1 Cr3,3,8 Rc2 Bl8", "Rc2"),
    ("None,None,64,1 Cr3,3,8 Bl8", "Bl8"),
    ("None,None,64,1 Cr3,3,8 Rc3 Bl8 Cr3,3,8", "Cr3,3,8"),
    ("None,None,64,1 Cr3,3,8 Rc3 Lf8", "O1s5"),
    ("None,None,64,1 Cr3,3,1,2,8,1", "Cr3,3,1,2,8,1"),
    ("None,None,64,1 Mp1,1,2,2 Rc3 Bl8", "Mp1,1,2,2"),
    ("None,None,64,1 Cr3,3,8 D150 Rc3", "D150"),
    ("None,None,64,1 Cr3,3,8 Do1.5 Rc3", "Do1.5"),
    ("None,None,64,2 Cr3,3,8 Rc3 Bl8", "None,None,64,2"),
    ("None,64,64,1 Cr3,3,8 Rc3 Bl8", "None,64,64,1"),
    ("Cr3,3,8 Rc3 Bl8", "Cr3,3,8"),
    ("None,None,64,1 Cr3,3,8", "Rc3"),
])
def test_bad_specs_are_user_errors_naming_the_token(spec, named):
    with pytest.raises(UserError, match=named.replace("[", r"\[")):
        build_model(spec, 5)


def test_reverse_and_summarising_recurrent_layers():
    forward = build_model("None,None,8,1 Rc3 Lfs4", 3).eval()
    reverse = build_model("None,None,8,1 Rc3 Lrs4", 3).eval()
    reverse.load_state_dict(forward.state_dict())
    x = torch.rand(1, 1, 8, 12)
    with torch.no_grad():
        rnn_f, rnn_r = forward.layers[1], reverse.layers[1]
        seq = x.permute(0, 3, 2, 1).flatten(2)
        # a reverse layer reads right to left: its output equals the forward one on the flipped line, flipped back
        assert torch.allclose(rnn_r(seq), rnn_f(seq.flip(1)).flip(1), atol=1e-6)
    assert reverse.output_lengths(torch.tensor([12])).tolist() == [12]


@pytest.mark.slow
def test_model_scripts_and_exports_to_onnx_with_any_width(tmp_path):
    import onnxruntime

    model = build_model("None,None,32,1 Cr3,3,4 Ap3,3,2,2 Ce3,3,2,2,4 Mp2,2,2,2 Bn Rc3 Bl8 Gfs8", 6).eval()
    x = torch.rand(2, 1, 32, 37)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(model)(x), model(x), atol=1e-6)
        torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n", 3: "w"}, "y": {0: "n", 1: "t"}}, dynamo=False)
        session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
        for width in (37, 64, 101):
            x = torch.rand(3, 1, 32, width)
            assert np.allclose(session.run(None, {"x": x.numpy()})[0], model(x).numpy(), atol=1e-5)


@pytest.mark.slow
def test_weights_map_from_keras_as_documented():
    """Loghi's Keras layers on the transposed image, given our weights by the documented mapping, agree with us."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras runs on another backend in this process")
    L = keras.layers
    spec = "None,None,16,1 Cr3,5,4 Mp2,2,2,2 Bn Ce3,3,2,1,6 Ap2,2,2,2 Rc3 Bl5 Bg4 Fr7"
    model = build_model(spec, 9).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.5, 0.5)
        bn = model.layers[2]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    inputs = keras.Input((None, 16, 1))
    layers = [L.Conv2D(4, (5, 3), padding="same", activation="relu"),
              L.MaxPooling2D((2, 2), (2, 2), padding="same"),
              L.BatchNormalization(),
              L.Conv2D(6, (3, 3), strides=(2, 1), padding="same", activation="elu"),
              L.AveragePooling2D((2, 2), (2, 2), padding="same"),
              L.Reshape((-1, 4 * 6)),
              L.Bidirectional(L.LSTM(5, return_sequences=True)),
              L.Bidirectional(L.GRU(4, return_sequences=True)),
              L.Dense(7, activation="relu"),
              L.Dense(9)]
    y = inputs
    for layer in layers:
        y = layer(y)
    keras_model = keras.Model(inputs, y)

    def np_(t):
        return t.detach().numpy()

    def lstm(rnn, suffix):
        return [np_(getattr(rnn, f"weight_ih_l0{suffix}")).T, np_(getattr(rnn, f"weight_hh_l0{suffix}")).T,
                np_(getattr(rnn, f"bias_ih_l0{suffix}") + getattr(rnn, f"bias_hh_l0{suffix}"))]

    def gru(rnn, suffix):
        def swap(w):  # torch r, z, n -> Keras z, r, h
            n = w.shape[0] // 3
            return np.concatenate([w[n:2 * n], w[:n], w[2 * n:]])
        return [swap(np_(getattr(rnn, f"weight_ih_l0{suffix}"))).T, swap(np_(getattr(rnn, f"weight_hh_l0{suffix}"))).T,
                np.stack([swap(np_(getattr(rnn, f"bias_ih_l0{suffix}"))), swap(np_(getattr(rnn, f"bias_hh_l0{suffix}")))])]

    m = model.layers
    layers[0].set_weights([np_(m[0].weight).transpose(3, 2, 1, 0), np_(m[0].bias)])
    layers[2].set_weights([np_(bn.weight), np_(bn.bias), np_(bn.running_mean), np_(bn.running_var)])
    layers[3].set_weights([np_(m[3].weight).transpose(3, 2, 1, 0), np_(m[3].bias)])
    layers[6].set_weights(lstm(m[6].rnn, "") + lstm(m[6].rnn, "_reverse"))
    layers[7].set_weights(gru(m[7].rnn, "") + gru(m[7].rnn, "_reverse"))
    layers[8].set_weights([np_(m[8].weight).T, np_(m[8].bias)])
    layers[9].set_weights([np_(m[9].weight).T, np_(m[9].bias)])
    for width in (20, 23):
        x = torch.rand(2, 1, 16, width)
        with torch.no_grad():
            ours = model(x).numpy()
        theirs = keras.ops.convert_to_numpy(keras_model(x.permute(0, 3, 2, 1).numpy(), training=False))
        assert ours.shape == theirs.shape
        assert np.allclose(ours, theirs, atol=1e-4), np.abs(ours - theirs).max()


def test_channel_dropout_before_pooling_is_moved_after_it_with_the_same_result():
    model = build_model("None,None,16,1 Cr3,3,4 Do0.5,2 Mp2,2 Rc3 Bl4", 5).train()
    conv, pool, drop = model.layers[0], model.layers[1], model.layers[2]
    assert type(pool).__name__ == "Pool" and type(drop).__name__ == "ChannelDropout"
    x = torch.rand(3, 1, 16, 20)
    with torch.no_grad():
        torch.manual_seed(5)
        moved = drop(pool(conv(x)))
        torch.manual_seed(5)
        as_written = pool(torch.nn.functional.dropout2d(conv(x), 0.5, True))
    assert torch.allclose(moved, as_written) and (moved == 0).any()



@pytest.mark.parametrize("spec", ["None,None,16,1 Cr3,13,4 Mp2,2 Ct3,4,4 Mp3,3,2,2 Rc3 Bl4",
                                  "None,None,15,1 Cm2,5,4 Do0.1,2 Mp2,2 Ce3,3,4 Ap2,2 Cs3,3,4 Mp2,2 Rc3 Bl4"])
def test_convolutions_and_pooling_compute_the_spec_as_written(spec):
    """The builder moves a convolution's activation behind the max pooling that follows it, and odd kernels pad
    inside the convolution: outputs and gradients stay those of pad, convolve, activate, pool, as written."""
    torch.manual_seed(0)
    model = build_model(spec, 5).eval()
    written = copy.deepcopy(model)
    layers = list(written.layers)
    moved = 0
    for i, layer in enumerate(layers):
        if type(layer).__name__ == "Conv":
            layer.inner_pad = None
        if type(layer).__name__ == "Pool" and not isinstance(layer.act, torch.nn.Identity):
            conv = layers[i - 1]
            conv.act, layer.act = layer.act, torch.nn.Identity()
            moved += 1
    assert moved == (2 if "Cr3,13" in spec else 1)  # not softmax (Cs), which does not commute with pooling
    assert sum(type(m).__name__ == "Conv" and m.inner_pad is not None for m in model.layers) == (1 if "Cr3,13" in spec else 2)
    x = torch.rand(2, 1, model.height, 23, requires_grad=True)
    ours, theirs = model(x), written(x)
    assert torch.allclose(ours, theirs, atol=1e-6)
    grad_ours, = torch.autograd.grad(ours.sum(), x)
    grad_theirs, = torch.autograd.grad(theirs.sum(), x)
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-6)

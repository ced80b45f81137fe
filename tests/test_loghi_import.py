"""Loghi models built with Keras as Loghi builds them, imported, give the same outputs on real lines; fine-tuning runs."""

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loghi_keras import LIBRARY, loghi_input, make_loghi_model, predict, real_strips
from loghi_ft.cli import main
from loghi_ft.errors import UserError
from loghi_ft.model.loghi import UNKNOWN, import_loghi, is_loghi_model
from loghi_ft.model.folder import load_model
from loghi_ft.model.pixels import preprocess

torch.set_num_threads(2)
# Keras 3 on numpy 2 warns on every weight it converts; nothing we can act on
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

# (Loghi spec, channels); outputs are replaced for the tokenizer as Loghi does, so the spec's Fs92 is dropped
SPECS = {
    "recommended": LIBRARY["recommended"],
    # GRU, average pooling, elu, height 48
    "gru_avgpool_h48": "None,None,48,1 Ce3,3,12 Bn Ap2,2,2,2 Ce3,3,24 Bn Ap2,2,2,2 Rc3 Bg48,D20 D20 Bg32 Fs92",
    # colour input, a strided convolution, a one-way LSTM, height 96
    "rgb_strided_lstm_h96": "None,None,96,3 Cr3,3,16 Mp2,2,2,2 Bn Ct3,3,2,2,24 Bn Mp2,2,2,2 Rc3 Bl40 D30 Lfs32 Fs92",
    # four channels (colour and alpha), as Loghi's model10 family reads
    "rgba_h64": "None,None,64,4 Cr3,3,8 Bn Mp2,2,2,2 Cr3,3,16 Bn Mp2,2,2,2 Rc3 Bl32 D20 Fs92",
}


def softmax_in_loghi_order(logits: torch.Tensor) -> np.ndarray:
    """Our softmax with rows put back in Loghi's order: [UNK], characters, blank last."""
    k = logits.shape[-1]
    return logits.softmax(-1).numpy()[..., [*range(1, k), 0]]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "recommended" else n for n in SPECS])
def test_imported_model_gives_keras_outputs_on_real_lines(tmp_path, data_dir, name):
    spec = SPECS[name]
    height, channels = int(spec.split()[0].split(",")[2]), int(spec.split()[0].split(",")[3])
    strips, _, chars = real_strips(2 if name == "recommended" else 3, height)
    keras_model = make_loghi_model(tmp_path / "best_val", spec, chars, seed=7)
    info = import_loghi(tmp_path / "best_val", tmp_path / "ours")
    model, loaded = load_model(tmp_path / "ours")
    assert loaded.charset == [UNKNOWN, *chars] and loaded.height == height and loaded.channels == channels
    assert loaded.spec == info.spec
    # lines of different widths in one batch: Loghi's -10 padding beyond each line's end included
    batch = loghi_input(strips, channels)
    theirs = predict(keras_model, batch)
    with torch.no_grad():
        ours = softmax_in_loghi_order(model(torch.from_numpy(batch).permute(0, 3, 2, 1)))
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-4
    assert theirs.max(-1).mean() > 0.1  # the outputs are far from uniform, so a wrong weight shows
    widths = torch.tensor([s.shape[1] + 50 for s in strips])
    assert model.output_lengths(widths).max().item() == ours.shape[1]


def test_loghi_reading_of_pixels_travels_with_the_model(tmp_path, data_dir):
    """ModelInfo.preprocess turns strips into exactly the input Loghi's data loader makes (transposed)."""
    spec = SPECS["gru_avgpool_h48"]
    strips, _, chars = real_strips(3, 48)
    make_loghi_model(tmp_path / "best_val", spec, chars, seed=3)
    info = import_loghi(tmp_path / "best_val", tmp_path / "ours")
    x, widths = preprocess(strips, info)
    expected = torch.from_numpy(loghi_input(strips)).permute(0, 3, 2, 1)
    assert widths.tolist() == [s.shape[1] + 50 for s in strips]
    assert x.shape == expected.shape
    assert torch.allclose(x, expected, atol=1e-6)


def test_legacy_charlist_and_softmax_output_layer(tmp_path, data_dir):
    """Older Loghi models: charlist.txt, and the spec's own softmax output followed by a linear activation."""
    strips, _, chars = real_strips(2)
    spec = f"None,None,64,1 Cr3,3,8 Bn Mp2,2,2,2 Cr3,3,16 Bn Mp2,2,2,2 Rc3 Bl24 D20 Fs{len(chars) + 2}"
    keras_model = make_loghi_model(tmp_path / "best_val", spec, chars, seed=5, legacy_charlist=True,
                                   replace_output=False)
    assert not (tmp_path / "best_val" / "tokenizer.json").exists()
    assert is_loghi_model(tmp_path / "best_val")
    import_loghi(tmp_path / "best_val", tmp_path / "ours")
    model, info = load_model(tmp_path / "ours")
    assert info.charset == [UNKNOWN, *chars]
    batch = loghi_input(strips)
    with torch.no_grad():
        ours = softmax_in_loghi_order(model(torch.from_numpy(batch).permute(0, 3, 2, 1)))
    assert np.abs(ours - predict(keras_model, batch)).max() < 1e-4


def test_unsupported_layers_and_mismatches_are_refused_by_name(tmp_path, data_dir):
    import keras

    _, _, chars = real_strips(1)
    inputs = keras.Input((None, 64, 1), name="image")
    x = keras.layers.Conv2D(4, (3, 3), padding="same", activation="relu")(inputs)
    x = keras.layers.Reshape((-1, 64 * 4))(x)
    x = keras.layers.LayerNormalization(name="odd_norm")(x)
    x = keras.layers.Dense(len(chars) + 2, activation="softmax")(x)
    folder = tmp_path / "odd"
    folder.mkdir()
    keras.Model(inputs, x).save(folder / "model.keras")
    (folder / "tokenizer.json").write_text(json.dumps(dict(enumerate(["[PAD]", "[UNK]", *chars]))), encoding="utf-8")
    with pytest.raises(UserError, match=r"layer 'odd_norm' \(LayerNormalization\).*not supported"):
        import_loghi(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    make_loghi_model(tmp_path / "short", SPECS["gru_avgpool_h48"], chars[:-3], seed=1)
    (tmp_path / "short" / "tokenizer.json").write_text(
        json.dumps(dict(enumerate(["[PAD]", "[UNK]", *chars]))), encoding="utf-8")
    with pytest.raises(UserError, match="tokenizer does not belong to this model"):
        import_loghi(tmp_path / "short", tmp_path / "out")

    with zipfile.ZipFile(tmp_path / "short" / "model.keras", "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(UserError, match="incomplete .keras file, model.weights.h5"):
        import_loghi(tmp_path / "short", tmp_path / "out")
    with pytest.raises(UserError, match="no model.keras and no saved_model.pb"):
        import_loghi(tmp_path, tmp_path / "out")


def test_saved_model_without_tensorflow_says_what_to_install(tmp_path):
    try:
        import tensorflow  # noqa: F401
        pytest.skip("TensorFlow is installed here")
    except ImportError:
        pass
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    (tmp_path / "charlist.txt").write_text("abc", encoding="utf-8")
    with pytest.raises(UserError, match=r"needs TensorFlow: pip install 'loghi-ft\[tensorflow\]'"):
        import_loghi(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_import_command_then_fine_tune_runs(tmp_path, data_dir, capsys):
    """`loghi-ft import-loghi` then `loghi-ft train --base-model` for a few steps on real lines."""
    strips, texts, chars = real_strips(4)
    make_loghi_model(tmp_path / "best_val", SPECS["gru_avgpool_h48"].replace(",48,", ",64,"), chars, seed=2)
    assert main(["import-loghi", str(tmp_path / "best_val"), str(tmp_path / "ours")]) == 0
    assert "spec: None,None,64,1 Ce3,3,12 Bn Ap2,2,2,2" in capsys.readouterr().out
    assert main(["import-loghi", str(tmp_path / "best_val"), str(tmp_path / "ours")]) == 1
    assert "give --overwrite" in capsys.readouterr().err

    write_list_of_strips(tmp_path, strips, texts)
    code = fine_tune_briefly(tmp_path / "ours", tmp_path, steps=3)
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    assert out.out.strip().splitlines()[-1].startswith("best_val: ")
    tuned, info = load_model(tmp_path / "runs" / "ft" / "best_val")
    assert info.charset[0] == UNKNOWN and info.preprocess["offset"] == 0.5
    assert tuned.spec.startswith("None,None,64,1 Ce3,3,12 Bn Ap2,2,2,2") and tuned.num_classes == len(info.charset) + 1


@pytest.mark.slow
def test_a_loghi_folder_is_accepted_as_base_model_directly(tmp_path, data_dir, capsys):
    """`loghi-ft train --base-model LOGHI_DIR` converts it into the run folder and fine-tunes it."""
    strips, texts, chars = real_strips(4)
    make_loghi_model(tmp_path / "best_val", SPECS["gru_avgpool_h48"].replace(",48,", ",64,"), chars, seed=2)
    write_list_of_strips(tmp_path, strips, texts)
    code = fine_tune_briefly(tmp_path / "best_val", tmp_path, steps=2)
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    _, imported = load_model(tmp_path / "runs" / "ft" / "imported_base")
    _, tuned = load_model(tmp_path / "runs" / "ft" / "best_val")
    assert imported.preprocess["margin"] == 25 and tuned.preprocess == imported.preprocess


def write_list_of_strips(folder, strips, texts) -> None:
    """folder/list.txt naming PNGs of the strips in folder/lines/."""
    (folder / "lines").mkdir()
    entries = []
    for i, (strip, text) in enumerate(zip(strips, texts)):
        cv2.imwrite(str(folder / "lines" / f"l{i}.png"), strip)
        entries.append(f"lines/l{i}.png\t{text}")
    (folder / "list.txt").write_text("\n".join(entries) + "\n", encoding="utf-8")


def fine_tune_briefly(base: Path, tmp_path: Path, steps: int) -> int:
    """`loghi-ft train --base-model BASE` for a few steps on the lines of tmp_path/list.txt, into tmp_path/runs/ft."""
    return main(["train", "--base-model", str(base), "--train-list", str(tmp_path / "list.txt"),
                 "--val-list", str(tmp_path / "list.txt"), "--output", str(tmp_path / "runs"), "--model-name", "ft",
                 "--max-steps", str(steps), "--batch-size", "2", "--epochs", "1", "--no-augment", "--workers", "0",
                 "--threads", "2"])

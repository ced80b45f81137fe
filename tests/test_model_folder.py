"""Model folders: save/load round trips, found inside output folders, bad folders named; preprocessing of strips."""

import json
import os

import cv2
import numpy as np
import pytest
import torch

from conftest import TIMEUS
from loghi_ft.errors import UserError
from loghi_ft.pages.lines import cut_page
from loghi_ft.model.codec import Codec, build_charset
from loghi_ft.model.decode import Decoder
from loghi_ft.model.folder import ModelInfo, load_model, model_hash, save_model
from loghi_ft.model.pixels import preprocess
from loghi_ft.model.vgsl import build_model
from loghi_ft.pages.documents import read_page

SPEC = "None,None,64,1 Cr3,3,8 Mp2,2,2,2 Bn Cr3,3,16 Mp2,2,2,2 Bn Rc3 Bl32 D20 Bl32"


@pytest.fixture(scope="module")
def lines(data_dir):
    """(strip, text) of real timeus lines."""
    page = read_page(TIMEUS / "PH 1858-10.xml")
    return [(s, line.text) for line, s, _ in cut_page(page, 64) if s is not None and line.text.strip()][:6]


@pytest.fixture
def saved(tmp_path, lines):
    codec = Codec(build_charset(t for _, t in lines))
    model = build_model(SPEC, codec.num_classes)
    with torch.no_grad():  # non-default statistics, so that the round trip must carry them
        model.layers[2].running_mean.uniform_(-1, 1)
    info = ModelInfo(model.spec, model.height, model.channels, codec.charset, training={"val_cer": 0.25, "epoch": 3})
    folder = tmp_path / "out" / "mymodel" / "best_val"
    save_model(model, info, folder)
    return model.eval(), info, folder


def test_round_trip_gives_identical_outputs_on_real_lines(saved, lines):
    model, info, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    umask = os.umask(0)
    os.umask(umask)  # readable like any new file, not 0600 as safetensors creates it
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o666 & ~umask}
    record = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert record["format"] == "loghi-ft-model" and record["format_version"] == 1
    assert record["charset"] == info.charset and record["training"]["val_cer"] == 0.25
    assert record["height"] == 64 and record["channels"] == 1 and record["normalization"] == "NFC"
    loaded, loaded_info = load_model(folder)
    assert loaded_info == ModelInfo(**{k: record[k] for k in ModelInfo.__dataclass_fields__})
    assert not loaded.training
    x, widths = preprocess([s for s, _ in lines], loaded_info)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
        read = Decoder(Codec(loaded_info.charset))(loaded(x), loaded.output_lengths(widths))
        expected = Decoder(Codec(info.charset))(model(x), model.output_lengths(widths))
    assert [(d.text, d.conf) for d in read] == [(d.text, d.conf) for d in expected]
    assert len(read) == len(lines) and any(d.text for d in read)


def test_any_folder_holding_a_model_is_accepted(saved):
    model, _, folder = saved
    x = torch.rand(1, 1, 64, 99)
    for where in (folder, folder / "model.json", folder.parent, folder.parent.parent):
        loaded, _ = load_model(where)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


def test_saving_again_replaces_the_folder_whole(saved):
    model, info, folder = saved
    before = model_hash(folder)
    assert len(before) == 16 and model_hash(folder) == before
    with torch.no_grad():
        model.layers[0].weight.add_(1.0)
    save_model(model, info, folder)
    assert model_hash(folder) != before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["best_val"]  # no temporary folders left
    loaded, _ = load_model(folder)
    assert torch.equal(loaded.layers[0].weight, model.layers[0].weight)


def test_a_kill_between_the_renames_keeps_the_old_model(saved):
    model, _, folder = saved
    aside = folder.with_name(".best_val.old-12345")
    os.replace(folder, aside)  # as replace_folder leaves it when killed between its two renames
    loaded, _ = load_model(folder.parent)
    assert folder.is_dir() and not aside.exists()
    with torch.no_grad():
        x = torch.rand(1, 1, 64, 40)
        assert torch.equal(loaded(x), model(x))


def test_missing_files_are_named(saved, tmp_path):
    _, _, folder = saved
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="model.safetensors: missing"):
        load_model(folder)
    (folder / "model.json").unlink()
    with pytest.raises(UserError, match="no model.json"):
        load_model(folder.parent)
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "nowhere")


def test_foreign_or_broken_files_are_named(saved):
    model, info, folder = saved
    config = folder / "model.json"
    config.write_text(json.dumps({"model": "something else"}), encoding="utf-8")
    with pytest.raises(UserError, match="model.json: not a loghi-ft model"):
        load_model(folder)
    config.write_text("{ not json", encoding="utf-8")
    with pytest.raises(UserError, match="model.json: not valid JSON"):
        load_model(folder)
    save_model(model, info, folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 50)
    with pytest.raises(UserError, match="model.safetensors: not readable"):
        load_model(folder)


def test_weights_that_disagree_with_spec_or_charset_are_named(saved):
    model, info, folder = saved
    record = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    record["charset"] = record["charset"] + ["ж"]
    (folder / "model.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(UserError, match=r"model.safetensors: weights do not fit .*layers\.\d+\.weight"):
        load_model(folder)
    record["charset"] = info.charset
    record["spec"] = SPEC.replace("Bl32 D20 Bl32", "Bl32 D20 Bl16")
    (folder / "model.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(UserError, match="model.safetensors: weights do not fit"):
        load_model(folder)
    record["spec"] = SPEC + " Xq9"
    (folder / "model.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(UserError, match="model.json: VGSL token 'Xq9'"):
        load_model(folder)


def test_preprocess_makes_ink_high_and_padding_zero(lines):
    info = ModelInfo(SPEC, 64, 1, ["a"])
    strips = [lines[0][0], lines[1][0], cv2.resize(lines[2][0], (lines[2][0].shape[1] * 2, 128))]
    x, widths = preprocess(strips, info)
    assert x.dtype == torch.float32 and x.shape == (3, 1, 64, int(widths.max()))
    assert widths.tolist()[:2] == [lines[0][0].shape[1], lines[1][0].shape[1]]
    assert abs(int(widths[2]) - lines[2][0].shape[1]) <= 1  # a 128-high strip is brought to 64, same aspect
    assert torch.allclose(x[0, 0, :, : widths[0]], torch.from_numpy(1.0 - lines[0][0] / 255.0).float(), atol=1e-6)
    for i in range(3):
        assert (x[i, :, :, int(widths[i]):] == 0).all()
    assert x.min() >= 0 and x.max() <= 1
    colour = ModelInfo(SPEC, 64, 3, ["a"])
    xc, _ = preprocess([lines[0][0], np.dstack([lines[1][0]] * 3)], colour)
    assert xc.shape[1] == 3 and torch.equal(xc[0, 0], xc[0, 2])
    assert torch.equal(xc[0, 0, :, : widths[0]], x[0, 0, :, : widths[0]])

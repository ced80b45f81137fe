"""Models that loghi-htr itself trained import, and read real lines as Loghi read them; fine-tuning one runs.

The fixtures in tests/data/loghi (see its README.md) were written by loghi-htr's own src/main.py: its model
folders, 20 held-out TIME US lines, and its greedy readings of them at batch size 1 and 8.
"""

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from loghi_ft.cli import main
from loghi_ft.errors import UserError
from loghi_ft.evaluation.metrics import cer
from loghi_ft.model.folder import load_model
from loghi_ft.model.loghi import UNKNOWN, import_loghi, is_loghi_model, read_charset
from loghi_ft.model.pixels import preprocess
from loghi_ft.pages.lines import load_image
from loghi_ft.pages.listfile import read_list

torch.set_num_threads(2)

LOGHI = ROOT / "tests" / "data" / "loghi"
LINES = LOGHI / "lines.txt"
CONV = "Cr3,3,16 Mp2,2,2,2 Bn Cr3,3,24 Bn Cr3,3,32 Mp2,2,2,2 Bn Cr3,3,32 Mp2,2,2,2 Bn Rc3"
# per model: our spec (the output layer's size, the tokenizer's, added below), the Activation layers in Loghi's
# graph, its last two layers
MODELS = {
    # Loghi's recommended spec, smaller: relu convolutions as Conv2D + Activation, then dense_out + softmax
    "lstm": (f"None,None,64,1 {CONV} Bl48 D50 Bl48 D50", 5, ["dense_out:Dense", "activation_5:Activation"]),
    "gru": (f"None,None,64,1 {CONV} Bg48,D20 Lfs48 D20", 5, ["dense_out:Dense", "activation_5:Activation"]),
    # four channels; vgslify builds Ce as a linear Conv2D, Cl as one with a linear Activation: both read as Cl
    "rgba": ("None,None,64,4 Cr3,3,16 Ap2,2,2,2 Bn Ct3,3,24 Bn Cr3,3,2,2,32 Bn Cr3,3,32 Mp2,2,2,2 Bn Cm1,1,32 "
             "Mp2,2,1,2 Cl1,1,32 Cl1,1,32 Rc3 Bl48 D50 Bl48 D50", 7, ["dense_out:Dense", "activation_7:Activation"]),
    # the lstm model as Loghi wrote models until 2023 (activations inside Conv2D, a softmax Dense and a linear
    # Activation), converted by Loghi's convert-v2-to-v3: a Keras 2 model.keras without optimizer state
    "legacy": (f"None,None,64,1 {CONV} Bl48 D50 Bl48 D50", 1, ["dense:Dense", "activation:Activation"]),
}
LOGHI_EPSILON = 1e-7  # tf.keras.backend.epsilon(), added to the probabilities before Loghi's log


def loghi_folder(name: str) -> Path:
    return LOGHI / name / "best_val"


def loghi_results(name: str, batch_size: int) -> dict[str, tuple[float, str]]:
    """Loghi's results file (`path<TAB>confidence<TAB>text`) as file name -> (confidence, text)."""
    path = LOGHI / name / f"results_batch{batch_size}.txt"
    rows = [line.split("\t", 2) for line in path.read_text(encoding="utf-8").splitlines()]
    # Loghi writes its [UNK] token as "[UNK]"; our import reads it as U+FFFD
    return {Path(p).name: (float(conf), text.replace("[UNK]", UNKNOWN)) for p, conf, text in rows}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """name -> the fixture model through `loghi-ft import-loghi` (once per model)."""
    root = tmp_path_factory.mktemp("imported")

    def folder(name: str) -> Path:
        if not (root / name).exists():
            assert main(["import-loghi", str(loghi_folder(name)), str(root / name)]) == 0
        return root / name
    return folder


def loghi_readings(folder: Path, batch_size: int) -> dict[str, tuple[float, str]]:
    """Our model's outputs read as loghi-htr reads them (src/utils/decoding.py): batches in list order, padded
    with -10; the best path over every frame of the padded batch; confidence exp(sum over the frames of
    log(max p + 1e-7) / number of labels read), clipped to [0, 1]; the text stripped."""
    model, info = load_model(folder)
    samples = read_list(LINES)
    out = {}
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        x, _ = preprocess([load_image(s.path) for s in batch], info)
        with torch.no_grad():
            probs = model(x).softmax(-1).numpy()
        for sample, p in zip(batch, probs):
            logp = np.log(p + LOGHI_EPSILON)
            best = logp.argmax(-1)
            labels = [k for i, k in enumerate(best) if k != 0 and (i == 0 or k != best[i - 1])]
            conf = float(np.clip(np.exp(logp.max(-1).sum() / max(len(labels), 1)), 0, 1))
            out[sample.path.name] = (conf, "".join(info.charset[k - 1] for k in labels).strip())
    return out


@pytest.mark.parametrize("name", MODELS)
def test_loghi_models_import_with_every_layer_loghi_wrote(imported, name):
    spec, activations, tail = MODELS[name]
    _, info = load_model(imported(name))
    chars = read_charset(loghi_folder(name))
    assert info.spec == f"{spec} O1s{len(chars) + 2}"
    assert info.charset == [UNKNOWN, *chars] and info.preprocess["margin"] == 25
    layers = info.training["loghi_layers"]
    assert sum(layer.endswith(":Activation") for layer in layers) == activations and layers[-2:] == tail
    assert is_loghi_model(loghi_folder(name)) and not is_loghi_model(imported(name))


@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("name", MODELS)
def test_imported_model_reads_the_lines_as_loghi_did(imported, name, batch_size, tmp_path):
    """`loghi-ft infer` on the list file reads the lines as Loghi did; our outputs, batched as Loghi batches,
    give Loghi's texts and confidences."""
    theirs = loghi_results(name, batch_size)
    # Loghi computes in float32 on a CPU; our default on CPUs with native bf16 is bf16
    assert main(["infer", "--model", str(imported(name)), "--batch-size", str(batch_size), "--precision", "fp32",
                 "--output", str(tmp_path), str(LINES)]) == 0
    rows = [line.split("\t", 2) for line in (tmp_path / "lines.results.txt").read_text("utf-8").splitlines()]
    ours = {Path(p).name: text for p, _, text in rows}
    assert ours.keys() == theirs.keys() and len(ours) == 20
    assert sum(len(text) >= 10 for text in ours.values()) >= 10  # the lines are read, not left empty
    if batch_size == 1:
        same = [f for f in ours if ours[f] == theirs[f][1]]
        assert len(same) >= 19, {f: (ours[f], theirs[f][1]) for f in ours if f not in same}
    else:
        # In a batch, Loghi and we pad every line with -10 to the batch's widest, and the backward recurrent
        # layers read that padding before each frame of the line: its reading changes, most near its end (for
        # Loghi itself, on 4 to 16 of these 20 lines). Loghi batches in list order, we by width, so the same
        # line may read differently; batched as Loghi batches, our outputs read exactly as Loghi's (below).
        # Here: as accurate as Loghi at this batch size.
        samples = read_list(LINES)
        truth = [s.text for s in samples]
        ours_cer = cer(truth, [ours[s.path.name] for s in samples])
        assert abs(ours_cer - cer(truth, [theirs[s.path.name][1] for s in samples])) < 0.01

    recomputed = loghi_readings(imported(name), batch_size)
    assert [recomputed[f][1] for f in theirs] == [text for _, text in theirs.values()]
    differences = [abs(recomputed[f][0] - conf) for f, (conf, _) in theirs.items()]
    assert np.mean(differences) < 0.02
    assert max(differences) < 1e-4  # the same computation up to float rounding: a wrong weight shows here


def edited_copy(name: str, dst: Path, edit) -> Path:
    """A copy of a fixture model folder whose model.keras config.json went through `edit` (its layer list)."""
    shutil.copytree(loghi_folder(name), dst)
    with zipfile.ZipFile(loghi_folder(name) / "model.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    edit(config["config"]["layers"])
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(dst / "model.keras", "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return dst


def layer(layers: list[dict], name: str) -> dict:
    return next(c for c in layers if c["name"] == name)


@pytest.mark.parametrize("edit, message", [
    (lambda ls: layer(ls, "batch_normalization").update(class_name="LayerNormalization"),
     r"layer 'batch_normalization' \(LayerNormalization\): this kind of layer is not supported"),
    (lambda ls: layer(ls, "activation_1")["config"].update(activation="gelu"),
     r"layer 'activation_1' \(Activation\): activation 'gelu' is not supported"),
    (lambda ls: layer(ls, "conv2d_1")["config"].update(activation="relu"),
     r"layer 'activation_1' \(Activation\): applies 'relu' to a layer that is not a Conv2D or Dense without"),
    (lambda ls: layer(ls, "dense_out")["config"].update(activation="softmax"),
     r"the output ends in activations \['softmax', 'softmax'\]; expected exactly one softmax"),
])
def test_layers_we_cannot_read_as_loghi_does_are_refused_by_name(tmp_path, edit, message):
    folder = edited_copy("lstm", tmp_path / "edited", edit)
    with pytest.raises(UserError, match=message):
        import_loghi(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mismatched_or_incomplete_folders_are_refused(tmp_path):
    short = tmp_path / "short"
    shutil.copytree(loghi_folder("lstm"), short)
    tokens = json.loads((short / "tokenizer.json").read_text(encoding="utf-8"))
    del tokens[str(len(tokens) - 1)]
    (short / "tokenizer.json").write_text(json.dumps(tokens), encoding="utf-8")
    with pytest.raises(UserError, match="tokenizer does not belong to this model"):
        import_loghi(short, tmp_path / "out")

    with zipfile.ZipFile(short / "model.keras", "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(UserError, match="incomplete .keras file, model.weights.h5"):
        import_loghi(short, tmp_path / "out")
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


def test_import_command_refuses_to_overwrite(imported, capsys):
    assert main(["import-loghi", str(loghi_folder("lstm")), str(imported("lstm"))]) == 1
    assert "give --overwrite" in capsys.readouterr().err
    assert main(["import-loghi", str(loghi_folder("lstm")), str(imported("lstm")), "--overwrite"]) == 0
    assert "spec: None,None,64,1 Cr3,3,16 Mp2,2,2,2" in capsys.readouterr().out


@pytest.mark.slow
def test_finetune_sh_fine_tunes_a_loghi_folder(tmp_path):
    """finetune.sh HTRBASEMODEL=<Loghi's best_val>: converted, validated first as Loghi read it, then trained."""
    from test_scripts import script

    lines = tmp_path / "lines"
    lines.mkdir()
    rows = [f"{s.path}\t{s.text}" for s in read_list(LINES)]
    (lines / "train.txt").write_text("\n".join(rows[:14]) + "\n", encoding="utf-8")
    (lines / "val.txt").write_text("\n".join(rows[14:]) + "\n", encoding="utf-8")
    proc = script("finetune.sh", f"HTRBASEMODEL={loghi_folder('lstm')}", "trainpages=", "valpages=", "testpages=",
                  f"listdir={lines}", f"trainlist={lines / 'train.txt'}", f"validationlist={lines / 'val.txt'}",
                  "epochs=1", "batch_size=4", "augment=off", "model_name=tuned", f"outputdir={tmp_path}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "tuned"
    with open(run / "metrics.csv", newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]  # the base model, then one epoch
    _, imported = load_model(run / "imported_base")
    _, tuned = load_model(run / "best_val")
    assert imported.preprocess["margin"] == 25 and tuned.preprocess == imported.preprocess
    assert tuned.spec.startswith("None,None,64,1 Cr3,3,16 Mp2,2,2,2")
    # the base model's validation CER (row 0) is the CER of Loghi's own readings of the validation lines
    theirs = loghi_results("lstm", 1)
    val = read_list(lines / "val.txt")
    loghi_cer = cer([s.text for s in val], [theirs[s.path.name][1] for s in val])
    base = proc.stdout.splitlines()[-3].split()
    assert base[:2] == ["base", "model"] and abs(float(base[2].rstrip("%")) / 100 - loghi_cer) < 0.01

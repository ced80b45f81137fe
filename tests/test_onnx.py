"""Exported ONNX models give the PyTorch model's logits and text on real lines, with any batch size and width."""

import json

import numpy as np
import onnx
import pytest
import torch

from loghi_ft.cli import main
from loghi_ft.errors import UserError
from loghi_ft.model.codec import Codec
from loghi_ft.model.decode import Decoder
from loghi_ft.model.folder import load_model
from loghi_ft.model.pixels import preprocess
from loghi_ft.model.onnx import CHARSET_KEY, export
from loghi_ft.model.recognizers import OnnxRecognizer

torch.set_num_threads(2)
pytestmark = pytest.mark.slow  # the export traces every layer kind: seconds per test

# batch norm, GRU and LSTM layers both ways, a one-way LSTM, average pooling, a strided convolution (Loghi's spelling)
SPEC = "None,None,64,1 Cr3,3,12 Bn Ap2,2,2,2 Ct3,3,2,2,16 Bn Mp2,2,2,2 Rc3 Bg32,D20 Bl24 Lfs24 Fs92"


def real_strips(count: int, height: int = 64) -> tuple[list[np.ndarray], list[str]]:
    """The `count` narrowest transcribed lines of a real TIME US page (fast to run), and the page's characters."""
    from conftest import TIMEUS

    from loghi_ft.pages.documents import read_page
    from loghi_ft.pages.lines import cut_page

    page = read_page(TIMEUS / "PH 1858-10.xml")
    cut = [strip for line, strip, _ in cut_page(page, height) if strip is not None and line.text.strip()]
    cut.sort(key=lambda strip: strip.shape[1])
    return cut[:count], sorted(set("".join(line.text for line in page.lines)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir):
    from loghi_ft.model.folder import ModelInfo, save_model
    from loghi_ft.model.vgsl import build_model

    root = tmp_path_factory.mktemp("onnx")
    strips, chars = real_strips(5)
    torch.manual_seed(11)
    net = build_model(SPEC, len(chars) + 1)
    save_model(net, ModelInfo(spec=net.spec, height=net.height, channels=net.channels, charset=chars), root / "model")
    assert main(["export", "--model", str(root / "model"), "--onnx", str(root / "model.onnx")]) == 0
    return root, strips


def test_onnx_logits_match_pytorch_for_any_batch_and_width(exported):
    root, strips = exported
    model, info = load_model(root / "model")
    runner = OnnxRecognizer(root / "model.onnx")
    for lines in (strips[:1], strips[1:4], strips):
        x, widths = preprocess(lines, info)
        with torch.no_grad():
            ours = model(x).numpy()
        theirs, lengths = runner(x, widths)
        assert theirs.shape == ours.shape
        assert np.abs(theirs.numpy() - ours).max() < 1e-4
        assert lengths.tolist() == model.output_lengths(widths).tolist()


def test_onnx_reads_the_same_text_as_pytorch(exported):
    root, strips = exported
    model, info = load_model(root / "model")
    runner = OnnxRecognizer(root / "model.onnx")
    decoder = Decoder(Codec(runner.info.charset))
    x, widths = preprocess(strips, runner.info)
    with torch.no_grad():
        expected = decoder(model(x), model.output_lengths(widths))
    got = decoder(*runner(x, widths))
    assert [d.text for d in got] == [d.text for d in expected]
    assert any(d.text for d in got)
    assert np.allclose([d.conf for d in got], [d.conf for d in expected], atol=1e-4)


def test_onnx_metadata_rebuilds_the_model_description(exported):
    root, _ = exported
    _, info = load_model(root / "model")
    runner = OnnxRecognizer(root / "model.onnx")
    assert runner.info == info
    graph = onnx.load(str(root / "model.onnx"))
    assert graph.opset_import[0].version >= 17
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta[CHARSET_KEY]) == info.charset
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", info.channels, info.height, "width"]


def test_export_and_runner_refuse_bad_paths(exported, tmp_path):
    root, _ = exported
    with pytest.raises(UserError, match="is a folder"):
        export(root / "model", tmp_path)
    with pytest.raises(UserError, match="model folder not found"):
        export(tmp_path / "none", tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())
    with pytest.raises(UserError, match="ONNX model not found"):
        OnnxRecognizer(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        OnnxRecognizer(tmp_path / "junk.onnx")
    plain = onnx.load(str(root / "model.onnx"))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(UserError, match="not exported by loghi-ft"):
        OnnxRecognizer(tmp_path / "plain.onnx")


def test_infer_with_the_onnx_file_writes_the_same_text_as_with_the_folder(exported, tmp_path, capsys):
    from conftest import FIXTURES

    from loghi_ft.pages.documents import read_page

    root, _ = exported
    pages = tmp_path / "pages"
    pages.mkdir()
    for name in ("170025120000003,0074-lite.xml", "170025120000003,0074.jpg"):
        (pages / name).write_bytes((FIXTURES / name).read_bytes())
    for model, out in ((root / "model", "torch"), (root / "model.onnx", "onnx")):
        # fp32 both (onnxruntime computes in fp32): an untrained model's near-ties would tip under bf16
        assert main(["infer", "--model", str(model), str(pages), "--output", str(tmp_path / out),
                     "--precision", "fp32"]) == 0
    capsys.readouterr()
    torch_page = read_page(tmp_path / "torch" / "170025120000003,0074-lite.xml")
    onnx_page = read_page(tmp_path / "onnx" / "170025120000003,0074-lite.xml")
    texts = [line.text for line in torch_page.lines]
    assert len(texts) == 5 and any(texts)
    assert texts != [line.text for line in read_page(pages / "170025120000003,0074-lite.xml").lines]  # recognised, not copied
    assert [line.text for line in onnx_page.lines] == texts

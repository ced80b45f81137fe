"""Models out as ONNX: one file, dynamic batch and width, the charset and ModelInfo in its metadata.

The ONNX graph maps `image` (N, C, H, W) float32, exactly what `model.pixels.preprocess` makes, to
`logits` (N, T, K): raw scores, softmax not applied, row 0 the CTC blank, as `VGSLModel.forward`. It
carries no lengths: a line of width w (its width inside the padded batch) has `output_lengths(w)` valid
frames, computed from the spec in the metadata as the PyTorch model does. Metadata keys:
`loghi_ft.model_info` (ModelInfo as JSON: spec, height, channels, charset, preprocess, ...) and
`loghi_ft.charset` (the charset alone, JSON), for tools that know nothing of loghi-ft.
model/recognizers.py runs such a file (`OnnxRecognizer`).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict
from pathlib import Path

from loghi_ft.errors import UserError
from loghi_ft.atomic import write_atomic

OPSET = 17
INFO_KEY = "loghi_ft.model_info"
CHARSET_KEY = "loghi_ft.charset"


def export(model_folder: str | Path, onnx_path: str | Path) -> Path:
    """Write the model of `model_folder` as ONNX to `onnx_path` (atomically); returns the path."""
    import onnx
    import torch

    from loghi_ft.model.folder import load_model

    model, info = load_model(Path(model_folder))
    onnx_path = Path(onnx_path)
    if onnx_path.is_dir():
        raise UserError(f"{onnx_path}: is a folder; give the .onnx file to write")
    # a real line's size: the recurrent layers are traced once and work for any width
    example = torch.zeros(2, info.channels, info.height, 4 * info.height)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the exporter warns that LSTMs may tie the graph to the example's batch size; they do not here (no
        # initial state is passed), and the tests run other batch sizes and widths than the example's
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False: the TorchScript exporter, which handles LSTMs
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch", 3: "width"}, "logits": {0: "batch", 1: "frames"}})
    graph = onnx.load_from_string(buffer.getvalue())
    for key, value in ((INFO_KEY, json.dumps(asdict(info), ensure_ascii=False)),
                       (CHARSET_KEY, json.dumps(info.charset, ensure_ascii=False))):
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.doc_string = f"loghi-ft line recogniser: {info.spec}"
    onnx.checker.check_model(graph)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(onnx_path, graph.SerializeToString())
    return onnx_path

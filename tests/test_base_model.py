"""The shipped base model still reads real held-out lines as well as when it was measured (MODEL.md)."""

import pytest
import torch
from conftest import ROOT, TIMEUS

from loghi_ft.pages.lines import cut_page
from loghi_ft.evaluation.metrics import cer
from loghi_ft.model.codec import Codec
from loghi_ft.model.decode import Decoder
from loghi_ft.model.folder import load_model
from loghi_ft.model.pixels import preprocess
from loghi_ft.pages.documents import read_page

BASE = ROOT / "models" / "timeus-1858-small"
# measured on these 32 lines when the model was shipped, plus a margin for the CPU's arithmetic
MEASURED_CER = 0.098
THRESHOLD = MEASURED_CER + 0.03


@pytest.mark.slow
def test_base_model_reads_held_out_test_lines(data_dir):
    model, info = load_model(BASE)
    page = read_page(TIMEUS / "PH 1858-15.xml")  # a test page of splits.tsv: never trained on
    cut = [(strip, line.text) for line, strip, _ in cut_page(page, info.height) if strip is not None and line.text.strip()]
    assert len(cut) == 32
    strips, texts = zip(*cut)
    texts = [" ".join(t.split()) for t in texts]  # whitespace cleaned as prepare cleans it
    x, widths = preprocess(list(strips), info)
    with torch.inference_mode():
        logits = model.eval()(x)
    readings = [d.text for d in Decoder(Codec(info.charset))(logits, model.output_lengths(widths))]
    assert cer(list(texts), readings) < THRESHOLD

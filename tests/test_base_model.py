"""The shipped base models still read real held-out lines as well as when they were measured (their MODEL.md)."""

import pytest
import torch
from conftest import DATA, ROOT, TIMEUS

from loghi_ft.evaluation.metrics import cer
from loghi_ft.model.codec import Codec
from loghi_ft.model.decode import Decoder
from loghi_ft.model.folder import load_model
from loghi_ft.model.pixels import preprocess
from loghi_ft.pages.documents import read_page
from loghi_ft.pages.lines import cut_page

# test pages of the fixed splits (neither model trained on them): a TIME US register page, and a page of one of
# htromance-fr's test manuscripts (hands the many-hands model never saw)
TIMEUS_PAGE = TIMEUS / "PH 1858-15.xml"
HTROMANCE_PAGE = DATA / "htromance-fr" / "data" / "fr" / "bnf-4-s-3789-(-2)" / "4-S-3789 (2)_f14.xml"
# (model, page, its lines with text, CER measured when the model was shipped); the test allows the CPU's
# arithmetic a margin of 3 points
MEASURED = [
    ("timeus-1858-small", TIMEUS_PAGE, 32, 0.098),
    ("many-hands-small", TIMEUS_PAGE, 32, 0.105),
    ("many-hands-small", HTROMANCE_PAGE, 25, 0.102),
]


def page_cer(model_name: str, page_path, lines: int) -> float:
    model, info = load_model(ROOT / "models" / model_name)
    page = read_page(page_path)
    cut = [(strip, line.text) for line, strip, _ in cut_page(page, info.height) if strip is not None and line.text.strip()]
    assert len(cut) == lines
    strips, texts = zip(*cut)
    texts = [" ".join(t.split()) for t in texts]  # whitespace cleaned as prepare cleans it
    x, widths = preprocess(list(strips), info)
    with torch.inference_mode():
        logits = model.eval()(x)
    readings = [d.text for d in Decoder(Codec(info.charset))(logits, model.output_lengths(widths))]
    return cer(list(texts), readings)


@pytest.mark.slow
@pytest.mark.parametrize("model_name, page, lines, measured", MEASURED, ids=lambda v: getattr(v, "stem", v))
def test_base_model_reads_held_out_test_lines(data_dir, model_name, page, lines, measured):
    assert page_cer(model_name, page, lines) < measured + 0.03

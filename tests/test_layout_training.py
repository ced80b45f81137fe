"""segtrain on real pages: a short run learns, and a fine-tune adds the user's new region class to the base's."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from lxml import etree

from loghi_ft.cli import main
from loghi_ft.layout.net import load_layout_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "htromance-fr"
TINY = ["--size", "512", "--crop", "0", "--batch-size", "2", "--learning-rate", "0.003", "--warmup-steps", "10",
        "--threads", "1", "--workers", "0", "--backbone", "mobilenet_v3_small"]


def copy_pages(split: str, count: int, folder: Path, retype: dict[str, str] | None = None) -> Path:
    """The first `count` pages of a split with their images (file names have spaces), region types renamed."""
    folder.mkdir(parents=True)
    rows = [r for r in csv.DictReader(open(DATA / "splits.tsv", encoding="utf-8"), delimiter="\t")
            if r["split"] == split][:count]
    for row in rows:
        xml = DATA / row["xml"]
        tree = etree.parse(str(xml))
        image = tree.find(".//{*}Page").get("imageFilename")
        shutil.copy(xml.parent / image, folder / image)
        for old, new in (retype or {}).items():
            for region in tree.iter("{*}TextRegion"):
                region.set("custom", (region.get("custom") or "").replace(f"type:{old};", f"type:{new};"))
        tree.write(str(folder / xml.name), encoding="utf-8", xml_declaration=True)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("segtrain")
    train, val = copy_pages("train", 12, root / "train"), copy_pages("val", 3, root / "val")
    status = main(["segtrain", "--train", str(train), "--val", str(val), "--output", str(root / "runs"),
                   "--model-name", "short", "--epochs", "8", *TINY])
    assert status == 0
    return root


def rows(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "metrics.csv", encoding="utf-8")))


@pytest.mark.slow
def test_a_short_run_on_a_few_pages_lowers_the_loss_and_finds_lines_on_held_out_pages(trained):
    run = trained / "runs" / "short"
    table = rows(run)
    assert len(table) == 8
    first, best = table[0], max(table, key=lambda r: float(r["val_score"]))
    # 12 pages, 48 steps, from nothing: it finds no line after one epoch, a third of them a few epochs later
    assert float(first["val_baseline_f1"]) < 0.05
    assert float(best["val_baseline_f1"]) >= 0.2
    assert float(table[-1]["val_loss"]) < float(first["val_loss"])
    assert float(best["val_region_miou"]) > float(first["val_region_miou"])
    model = load_layout_model(run)
    assert model.info.training["epoch"] == int(best["epoch"])
    for name in ("loss.png", "score.png", "config.yaml"):
        assert (run / name).stat().st_size > 0


@pytest.mark.slow
def test_fine_tuning_adds_a_new_region_class_and_keeps_the_old_ones(trained, tmp_path):
    base = load_layout_model(trained / "runs" / "short")
    assert "Folio" not in base.info.region_types
    pages = copy_pages("train", 6, tmp_path / "train", retype={"NumberingZone": "Folio"})
    status = main(["segtrain", "--base-model", str(trained / "runs" / "short"), "--train", str(pages),
                   "--val", str(trained / "val"), "--output", str(tmp_path / "runs"), "--model-name", "tuned",
                   "--epochs", "2", *TINY])
    assert status == 0
    tuned = load_layout_model(tmp_path / "runs" / "tuned" / "last")
    assert tuned.info.region_types == base.info.region_types + ["Folio"]
    assert tuned.info.line_types[:len(base.info.line_types)] == base.info.line_types
    table = rows(tmp_path / "runs" / "tuned")
    # row 0 is the base itself, validated before any step: the fine-tune is kept only if it does better
    assert table[0]["step"] == "0" and len(table) == 3
    config = (tmp_path / "runs" / "tuned" / "config.yaml").read_text()
    assert "Folio" in config and "start: fine-tune" in config
    record = json.loads((tmp_path / "runs" / "tuned" / "best_val" / "model.json").read_text())
    assert record["kind"] == "layout"

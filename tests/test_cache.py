"""The packed line cache: same pixels and texts as the PNGs, rebuilt when its sources change, bad images skipped."""

import os
import shutil

import cv2
import numpy as np
import pytest

from conftest import FIXTURES, TIMEUS
from loghi_ft.pages.cache import cache_folder, ensure_cache
from loghi_ft.errors import UserError
from loghi_ft.pages.lines import cut_page
from loghi_ft.pages.listfile import Sample, read_list, write_list
from loghi_ft.pages.documents import read_page


@pytest.fixture(scope="module")
def line_list(tmp_path_factory, data_dir):
    """Real line strips of a timeus page as PNGs (some 64 high, some 80) and their list file."""
    folder = tmp_path_factory.mktemp("lines")
    page = read_page(TIMEUS / "PH 1858-1.xml")
    samples = []
    for i, (line, strip, _) in enumerate(cut_page(page, 64)):
        if strip is None or not line.text.strip() or i >= 12:
            continue
        if i % 3 == 0:
            strip = cv2.resize(strip, (strip.shape[1] * 80 // 64, 80))
        path = folder / f"{line.id}.png"
        cv2.imwrite(str(path), strip)
        samples.append(Sample(path, line.text, 2.0 if i == 1 else 1.0))
    write_list(folder / "train.txt", samples)
    return folder / "train.txt"


def test_cache_gives_back_the_pixels_and_texts_of_the_list(line_list):
    cache = ensure_cache(line_list, 64)
    samples = read_list(line_list)
    assert len(cache) == len(samples) >= 8
    assert cache.texts == [s.text for s in samples]
    for i, s in enumerate(samples):
        strip, text = cache[i]
        png = cv2.imread(str(s.path), cv2.IMREAD_GRAYSCALE)
        assert text == s.text
        assert strip.dtype == np.uint8 and strip.shape[0] == 64 and cache.widths[i] == strip.shape[1]
        if png.shape[0] == 64:
            assert np.array_equal(strip, png)
        else:  # an 80-high strip is resized to 64, keeping its aspect ratio
            assert strip.shape[1] == round(png.shape[1] * 64 / 80)
            assert abs(float(strip.mean()) - float(png.mean())) < 3
    assert list(cache.weights) == [s.weight for s in samples]
    assert cache_folder(line_list, 64).is_dir()


def test_cache_is_reused_until_its_sources_change(line_list, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(line_list.parent, folder, ignore=shutil.ignore_patterns("*.cache"))
    list_file = folder / line_list.name
    first = ensure_cache(list_file, 64)
    built = (cache_folder(list_file, 64) / "pixels.u8").stat().st_mtime_ns
    ensure_cache(list_file, 64)
    assert (cache_folder(list_file, 64) / "pixels.u8").stat().st_mtime_ns == built

    # a changed text in the list file rebuilds
    samples = read_list(list_file)
    samples[0].text = "changed text"
    write_list(list_file, samples)
    assert ensure_cache(list_file, 64).texts[0] == "changed text"

    # a changed image rebuilds, with the new pixels
    path = samples[1].path
    cv2.imwrite(str(path), np.full((64, 50), 7, np.uint8))
    os.utime(path, ns=(0, 10**18))
    strip, _ = ensure_cache(list_file, 64)[1]
    assert strip.shape == (64, 50) and (strip == 7).all()

    # another height is another cache, beside the first
    tall = ensure_cache(list_file, 96)
    assert tall[0][0].shape[0] == 96 and cache_folder(list_file, 64).is_dir()
    assert len(first) == len(tall)


def test_unreadable_images_are_skipped_and_named(line_list, tmp_path):
    samples = read_list(line_list)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    samples[2:2] = [Sample(broken, "broken"), Sample(tmp_path / "missing.png", "missing")]
    list_file = tmp_path / "with_bad.txt"
    write_list(list_file, samples)
    cache = ensure_cache(list_file, 64)
    assert len(cache) == len(samples) - 2
    assert "broken" not in cache.texts and "missing" not in cache.texts
    assert len(cache.problems) == 2
    assert "broken.png" in cache.problems[0] and "missing.png" in cache.problems[1]


def test_a_list_of_only_bad_images_is_a_user_error(tmp_path):
    list_file = tmp_path / "bad.txt"
    write_list(list_file, [Sample(FIXTURES / "page" / "nothing-here.png", "x")])
    with pytest.raises(UserError, match="nothing-here.png"):
        ensure_cache(list_file, 64)
    assert not cache_folder(list_file, 64).exists()


def test_cache_survives_pickling_for_worker_processes(line_list):
    import pickle

    cache = ensure_cache(line_list, 64)
    cache[0]
    clone = pickle.loads(pickle.dumps(cache))
    assert len(pickle.dumps(cache)) < 100_000
    assert np.array_equal(clone[3][0], cache[3][0]) and clone[3][1] == cache[3][1]


def test_list_file_weights_are_read_and_bad_ones_named(tmp_path):
    listed = tmp_path / "lines.txt"
    listed.write_text("a.png\t2\tDu dit jour\nb.png\tLe 8 janvier\nc.png\t0\t12\tfrancs\n", encoding="utf-8")
    samples = read_list(listed)
    assert [(s.path.name, s.weight, s.text) for s in samples] == \
        [("a.png", 2.0, "Du dit jour"), ("b.png", 1.0, "Le 8 janvier"), ("c.png", 0.0, "12\tfrancs")]
    for bad in ("-1", "nan", "inf"):
        listed.write_text(f"a.png\tDu dit jour\nb.png\t{bad}\tLe 8 janvier\n", encoding="utf-8")
        with pytest.raises(UserError, match=r"lines.txt:2: weight .* must be a finite number of at least 0"):
            read_list(listed)

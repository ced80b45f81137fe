import dataclasses

import numpy as np
import pytest

from conftest import TIMEUS
from loghi_ft.train.augment import AUGMENTATIONS, Augment, augment


@pytest.fixture(scope="module")
def strips() -> list[np.ndarray]:
    from loghi_ft.pages.lines import cut_page
    from loghi_ft.pages.documents import read_page

    page = read_page(TIMEUS / "PH 1858-10.xml")
    return [strip for _, strip, _ in cut_page(page, height=64) if strip is not None][:8]


def only(name: str, **extra) -> Augment:
    return dataclasses.replace(Augment.off(), **{name: 1.0}, **extra)


def ink(strip: np.ndarray) -> float:
    return float((strip < 128).mean())


@pytest.mark.parametrize("name", [n for n in AUGMENTATIONS if n != "invert"])
def test_each_distortion_keeps_height_and_most_ink(strips, name):
    rng = np.random.default_rng(0)
    for strip in strips:
        out, background = augment(strip, only(name), rng)
        assert out.dtype == np.uint8 and out.ndim == 2
        assert out.shape[0] == strip.shape[0]
        assert background == 255
        assert not np.array_equal(out, strip) or name == "binarize"
        # the writing is moved, not erased: the amount of ink stays within a factor of two
        assert 0.5 * ink(strip) < ink(out) * out.shape[1] / strip.shape[1] < 2.0 * ink(strip)


def test_off_returns_the_strip_unchanged(strips):
    out, background = augment(strips[0], Augment.off(), np.random.default_rng(3))
    assert np.array_equal(out, strips[0]) and background == 255


def test_same_seed_same_result_other_seed_other_result(strips):
    aug = Augment(elastic=1.0, shear=1.0, width=1.0, crop=1.0)
    a, _ = augment(strips[1], aug, np.random.default_rng([7, 0, 1]))
    b, _ = augment(strips[1], aug, np.random.default_rng([7, 0, 1]))
    c, _ = augment(strips[1], aug, np.random.default_rng([7, 1, 1]))
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_width_scaling_stays_in_its_range(strips):
    rng = np.random.default_rng(1)
    for strip in strips:
        out, _ = augment(strip, only("width", width_range=(0.8, 1.2)), rng)
        assert 0.8 * strip.shape[1] - 1 <= out.shape[1] <= 1.2 * strip.shape[1] + 1


def test_shear_widens_the_canvas_and_keeps_every_ink_column(strips):
    strip = strips[2]
    out, _ = augment(strip, only("shear", shear_max=0.3), np.random.default_rng(5))
    assert out.shape[1] > strip.shape[1]
    assert ink(out) * out.shape[1] == pytest.approx(ink(strip) * strip.shape[1], rel=0.25)


def test_binarize_leaves_two_values(strips):
    out, _ = augment(strips[3], only("binarize"), np.random.default_rng(0))
    assert set(np.unique(out)) <= {0, 255}


def test_inversion_reports_its_dark_ground_and_collate_pads_with_it(strips):
    from loghi_ft.model.folder import ModelInfo
    from loghi_ft.train.dataset import Collate

    strip = strips[4]
    out, background = augment(strip, only("invert"), np.random.default_rng(0))
    assert background == 0
    assert np.array_equal(out, 255 - strip)
    info = ModelInfo(spec="", height=64, channels=1, charset=["a"])
    wide = np.full((64, strip.shape[1] + 50), 255, np.uint8)
    batch = Collate(info)([(out, background, [1], "a", 1.0), (wide, 255, [1], "a", 1.0)])
    # the negative's padding continues its dark ground, in the model's own input convention, up to the batch
    # width (the widest line rounded up to a multiple of 32 px)
    ground = info.preprocess["offset"] + info.preprocess["scale"] * 0
    white = info.preprocess["offset"] + info.preprocess["scale"] * 255
    assert batch.images.shape[-1] == -(-wide.shape[1] // 32) * 32 > wide.shape[1]
    assert np.allclose(batch.images[0, 0, :, strip.shape[1]:].numpy(), ground)
    assert np.allclose(batch.images[1, 0, :, wide.shape[1]:].numpy(), white)
    assert batch.weights is None
    assert batch.widths.tolist() == [strip.shape[1], wide.shape[1]]

"""Procedural training images, random-resized crops and the image cache of image sources."""

import numpy as np
import pytest
import torch

from videovae.data import sources
from videovae.data.procedural import KINDS, procedural_image, training_photos
from videovae.data.sources import ClipSource, SourceConfig
from videovae.data.synthetic import HELD_OUT_PHOTOS
from videovae.data.transforms import resize_crop


def test_procedural_images_are_seeded_and_varied():
    a, b = procedural_image(3, 64), procedural_image(3, 64)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, procedural_image(4, 64))
    for kind in KINDS:  # every kind draws something that is not flat
        assert procedural_image(0, (48, 80), kind).reshape(-1, 3).std(axis=0).max() > 5, kind
    # colours spread over the cube: mean colours of 60 images span most of each channel
    means = np.stack([procedural_image(s, 32).reshape(-1, 3).mean(axis=0) for s in range(60)])
    assert (means.max(axis=0) - means.min(axis=0)).min() > 150


def test_training_photos_leave_the_held_out_ones_out():
    names = training_photos()
    assert not set(names) & set(HELD_OUT_PHOTOS) and len(names) >= 10


def test_random_resized_crop_shows_the_asked_fraction():
    # x coordinate ramp: the crop's value range tells the fraction of the width it covers
    ramp = torch.linspace(-1, 1, 256).expand(1, 3, 256, 256).contiguous()
    rng = np.random.default_rng(0)
    for scale in (0.25, 0.5):
        out = resize_crop(ramp, (32, 32), rng, True, False, crop_scale=scale)
        assert out.shape == (1, 3, 32, 32)
        span = (out[0, 0, 0, -1] - out[0, 0, 0, 0]).item() / 2  # fraction of the full ramp
        assert abs(span - scale * (31 / 32)) < 0.03, (scale, span)
    centre = resize_crop(ramp, (32, 32), rng, False, False, crop_scale=0.5)
    assert abs(centre[0, 0, 0, :].mean().item()) < 0.02  # centred on the ramp's middle
    plain = resize_crop(ramp, (32, 32), rng, False, False)  # crop_scale 1: the whole width
    assert (plain[0, 0, 0, -1] - plain[0, 0, 0, 0]).item() / 2 > 0.9
    with pytest.raises(ValueError, match="crop_scale"):
        resize_crop(ramp, (32, 32), rng, True, False, crop_scale=[0.5, 1.5])


def test_image_source_keeps_decoded_images_within_its_budget(tmp_path, monkeypatch):
    import imageio.v3 as iio

    path = tmp_path / "a.png"
    iio.imwrite(path, procedural_image(0, 48))
    cfg = SourceConfig(type="image", path=str(tmp_path), resolution=32, num_frames=1)
    src = ClipSource(cfg)
    first, _ = src.sample(np.random.default_rng(0))
    path.unlink()  # cached: still readable, and the same pixels
    again, skipped = src.sample(np.random.default_rng(0))
    assert skipped == 0 and torch.equal(first, again)

    iio.imwrite(path, procedural_image(0, 48))
    monkeypatch.setattr(sources, "IMAGE_CACHE_BYTES", 100)  # too small for one image
    src = ClipSource(cfg)
    src.sample(np.random.default_rng(0))
    path.unlink()
    with pytest.raises(ValueError, match="unreadable"):
        src.sample(np.random.default_rng(0))

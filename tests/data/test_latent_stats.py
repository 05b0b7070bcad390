"""Latent statistics over a data set, for video VAEs and image VAEs alike."""

import pytest
import torch
from PIL import Image

from videovae.convert import inflate_from_model
from videovae.data.latent_stats import measure_latent_stats
from videovae.data.synthetic import load_photo, pan_zoom_clip

from helpers import tiny_image_vae


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        Image.fromarray(pan_zoom_clip(load_photo(name), 1, (48, 48), speed=0)[0]).save(
            d / f"{i}.png")
    return d


@torch.no_grad()
def test_an_image_vae_measures_like_its_exact_inflation(photos):
    """An inflated `cv` model encodes one image exactly as its image VAE does, so the statistics
    measured on the image VAE itself equal those of its inflation."""
    image_vae = tiny_image_vae(seed=3)
    kw = dict(num_clips=3, resolution=32, kind="image", progress=False)
    direct = measure_latent_stats(image_vae, photos, **kw)
    inflated = measure_latent_stats(inflate_from_model(image_vae, "cv").eval(), photos, **kw)
    assert direct["clips"] == inflated["clips"] == 3
    for key in ("mean", "std", "scaling_factor"):
        assert direct[key] == pytest.approx(inflated[key], rel=1e-4), key
    assert direct["latents_std"] == pytest.approx(inflated["latents_std"], rel=1e-4)
    assert direct["scaling_factor"] == pytest.approx(1 / direct["std"])

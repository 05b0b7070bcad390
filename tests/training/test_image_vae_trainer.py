"""The small image VAE trainer (`training/image_vae.py`): training from scratch and continuing."""

import pytest
import torch

from videovae.data.sources import SourceConfig
from videovae.training.image_vae import train_image_vae

CONFIG = dict(block_out_channels=[8, 16], layers_per_block=1, latent_channels=4,
              norm_num_groups=4)
SOURCES = [SourceConfig(type="synthetic", num_frames=1, resolution=16)]


def test_continuing_starts_from_the_given_weights(tmp_path):
    vae, losses = train_image_vae(CONFIG, 3, batch=2, resolution=16, sources=SOURCES,
                                  lowpass_weight=1.0)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    vae.save_pretrained(tmp_path / "first")
    # at lr 0 the continued model is the saved one, weight for weight
    same, _ = train_image_vae(CONFIG, 1, batch=2, resolution=16, sources=SOURCES, lr=0.0,
                              init=tmp_path / "first")
    for (name, a), b in zip(vae.state_dict().items(), same.state_dict().values(),
                              strict=True):
        assert torch.equal(a, b), name
    moved, _ = train_image_vae(CONFIG, 2, batch=2, resolution=16, sources=SOURCES,
                               init=tmp_path / "first")
    assert not torch.equal(moved.decoder.conv_out.weight, vae.decoder.conv_out.weight)
    with pytest.raises(ValueError, match="another config"):
        train_image_vae({**CONFIG, "latent_channels": 8}, 1, batch=2, resolution=16,
                        sources=SOURCES, init=tmp_path / "first")


def test_continuing_needs_a_model_and_leaves_the_callers_object_alone(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image VAE to continue from"):
        train_image_vae(CONFIG, 1, batch=2, resolution=16, sources=SOURCES,
                        init=tmp_path / "missing")
    vae, _ = train_image_vae(CONFIG, 1, batch=2, resolution=16, sources=SOURCES)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    moved, _ = train_image_vae(CONFIG, 2, batch=2, resolution=16, sources=SOURCES, init=vae)
    assert all(torch.equal(v, before[k]) for k, v in vae.state_dict().items())
    assert not torch.equal(moved.decoder.conv_out.weight, before["decoder.conv_out.weight"])

"""Shared fixtures: tiny seeded models and image VAEs with the real SD layouts (random weights)."""

import pytest
import torch
from diffusers import AutoencoderKL

from videovae import VideoVAE

torch.set_flush_denormal(True)

TINY = dict(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
            latent_channels=4)

# The real SD 1.x/2.x VAE config, and SD3's 16-channel one (diffusers config.json of each).
SD_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                 block_out_channels=[128, 256, 512, 512], norm_num_groups=32, sample_size=512,
                 down_block_types=["DownEncoderBlock2D"] * 4,
                 up_block_types=["UpDecoderBlock2D"] * 4, scaling_factor=0.18215)
SD3_CONFIG = dict(SD_CONFIG, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609,
                  use_quant_conv=False, use_post_quant_conv=False, sample_size=1024)


def tiny_vae(seed=0, **kw) -> VideoVAE:
    torch.manual_seed(seed)
    return VideoVAE(**{**TINY, **kw}).eval()


def random_video(b=1, t=9, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


@pytest.fixture(scope="session")
def sd_vae():
    torch.manual_seed(1234)
    return AutoencoderKL(**SD_CONFIG).eval()


@pytest.fixture(scope="session")
def sd3_vae():
    torch.manual_seed(4321)
    return AutoencoderKL(**SD3_CONFIG).eval()

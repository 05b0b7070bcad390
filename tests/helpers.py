"""Test helpers: tiny seeded models, image VAEs with the real SD layouts (random weights), clips.

Imported by test modules as `helpers` (tests/ is on sys.path through conftest.py).
"""

from pathlib import Path

import torch
from diffusers import AutoencoderKL

from videovae.convert import sd_vae_config
from videovae.data.synthetic import load_photo, pan_zoom_clip
from videovae.io.video import frames_to_tensor, write_video
from videovae.models.registry import family_class
from videovae.training.budget import reset_accelerate_state  # noqa: F401 - for the tests

TOL = 1e-5  # exact-math tolerance in fp32 (streaming, chunking)
INFLATE_TOL = 1e-4  # inflated model vs image VAE

TINY = dict(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
            latent_channels=4)

# The real SD 1.x/2.x VAE config, and SD3's 16-channel one (diffusers config.json of each).
SD_CONFIG = sd_vae_config(sample_size=512, scaling_factor=0.18215)
SD3_CONFIG = sd_vae_config(latent_channels=16, sample_size=1024, scaling_factor=1.5305,
                           shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)


def tiny_vae(seed=0, arch="cv", **kw):
    torch.manual_seed(seed)
    return family_class(arch)(**{**TINY, **kw}).eval()


def tiny_image_vae(seed=0, widths=(8, 16, 16, 16), groups=4, **kw) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(**sd_vae_config(widths, 1, norm_num_groups=groups, **kw)).eval()


def random_video(b=1, t=9, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def photo_clip(t=9, size=(64, 96), photo="chelsea", speed=2.0):
    """A real-photo pan clip as a (1, 3, t, H, W) tensor in [-1, 1]."""
    return frames_to_tensor(pan_zoom_clip(load_photo(photo), t, size, speed=speed))


def chunked(x, sizes, dim=2):
    """Consecutive slices of x along `dim` with the given lengths (stops at the end of x)."""
    out, i = [], 0
    for s in sizes:
        if i >= x.shape[dim]:
            break
        out.append(x.narrow(dim, i, min(s, x.shape[dim] - i)))
        i += s
    return out


def write_media(root: Path, n_videos=2, n_images=2, corrupt=True):
    """Photo pan videos and images under root/videos and root/images (and a corrupt mp4)."""
    from PIL import Image

    (root / "videos").mkdir(parents=True)
    (root / "images").mkdir(parents=True)
    for i in range(n_videos):
        write_video(root / "videos" / f"v{i}.mp4",
                    pan_zoom_clip(load_photo("astronaut"), 12, (40, 48), speed=1 + i))
    if corrupt:
        (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + b"x" * 200)
    for i in range(n_images):
        Image.fromarray(pan_zoom_clip(load_photo("coffee"), 1, (48, 40), speed=0)[0]).save(
            root / "images" / f"i{i}.png")


def normalization(kind: str, latent_channels: int) -> dict:
    """Latent normalization configs with scaling_factor != 1: "scale" (SD style), "shift"
    (SD3/FLUX style) and "per_channel" (latent-stats --per-channel, here with a scale as well)."""
    if kind == "scale":
        return dict(scaling_factor=0.7)
    if kind == "shift":
        return dict(scaling_factor=0.7, shift_factor=0.3)
    g = torch.Generator().manual_seed(latent_channels)
    return dict(scaling_factor=0.8,
                latents_mean=(torch.randn(latent_channels, generator=g) * 0.5).tolist(),
                latents_std=(torch.rand(latent_channels, generator=g) + 0.5).tolist())

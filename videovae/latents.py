"""Latent normalization, in one place: the constants of known image VAEs, applying and undoing
them, and measuring them over a data set.

Diffusion models want latents of roughly unit variance. Two conventions are supported:
- scalar (SD, SD3, FLUX): `scaling_factor = 1 / std` over all latent values, and
  `shift_factor = mean` when `with_shift` (SD3/FLUX style; SD 1.x uses no shift):
  `z_norm = (z - shift_factor) * scaling_factor`;
- per channel (Wan, Mochi): `latents_mean`, `latents_std` per channel, `scaling_factor = 1`:
  `z_norm = (z - mean) / std * scaling_factor`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

# The latent normalization of the known image VAEs (the diffusers config of each release).
KNOWN_IMAGE_VAES = {
    "sd": {"scaling_factor": 0.18215, "shift_factor": None},
    "sdxl": {"scaling_factor": 0.13025, "shift_factor": None},
    "sd3": {"scaling_factor": 1.5305, "shift_factor": 0.0609},
    "flux": {"scaling_factor": 0.3611, "shift_factor": 0.1159},
}


def offset_and_gain(config, z: torch.Tensor):
    """Both conventions as `z_norm = (z - offset) * gain`, broadcast over (B, Z, ...)."""
    config = dict(config)
    scale = config.get("scaling_factor") or 1.0
    if config.get("latents_mean") is not None and config.get("latents_std") is not None:
        shape = (1, -1) + (1,) * (z.ndim - 2)
        mean = torch.tensor(config["latents_mean"], dtype=z.dtype, device=z.device).view(shape)
        std = torch.tensor(config["latents_std"], dtype=z.dtype, device=z.device).view(shape)
        return mean, scale / std
    return config.get("shift_factor") or 0.0, scale


def normalize_latents(z: torch.Tensor, config) -> torch.Tensor:
    """Raw (B, Z, ...) latents -> what a diffusion model is trained on."""
    offset, gain = offset_and_gain(config, z)
    return (z - offset) * gain


def denormalize_latents(z: torch.Tensor, config) -> torch.Tensor:
    """Inverse of `normalize_latents`."""
    offset, gain = offset_and_gain(config, z)
    return z / gain + offset


@torch.no_grad()
def measure_latent_stats(vae, data_path, *, num_clips: int = 64, num_frames: int = 17,
                         resolution: int = 256, kind: str = "video", sample: bool = False,
                         seed: int = 0, progress: bool = True) -> dict:
    """Encode `num_clips` center-cropped clips from `data_path` and return channel statistics."""
    from .data.sources import ClipSource, SourceConfig

    src = ClipSource(SourceConfig(type=kind, path=str(data_path), resolution=resolution,
                                  num_frames=1 if kind == "image" else num_frames,
                                  random_crop=False), vae.temporal_compression_ratio)
    rng = np.random.default_rng(seed)
    param = next(vae.parameters())
    zc = vae.config.latent_channels
    s1 = torch.zeros(zc, dtype=torch.float64)
    s2 = torch.zeros(zc, dtype=torch.float64)
    count = 0
    skipped = 0
    for _ in tqdm(range(num_clips), desc="latent stats", disable=not progress):
        clip, k = src.sample(rng)
        skipped += k
        post = vae.encode(clip[None].to(param.device, param.dtype)).latent_dist
        z = (post.sample() if sample else post.mode()).double().cpu()
        s1 += z.sum(dim=(0, 2, 3, 4))
        s2 += z.pow(2).sum(dim=(0, 2, 3, 4))
        count += z[:, 0].numel()
    mean = s1 / count
    std = (s2 / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    overall_mean = s1.sum() / (count * zc)
    overall_std = (s2.sum() / (count * zc) - overall_mean.pow(2)).clamp_min(1e-12).sqrt()
    return {"latents_mean": mean.tolist(), "latents_std": std.tolist(),
            "mean": overall_mean.item(), "std": overall_std.item(),
            "scaling_factor": 1.0 / overall_std.item(), "clips": num_clips,
            "skipped_files": skipped}


def config_updates(stats: dict, per_channel: bool = False, with_shift: bool = False) -> dict:
    """The config entries to write for one of the two conventions."""
    if per_channel:
        return {"latents_mean": stats["latents_mean"], "latents_std": stats["latents_std"],
                "scaling_factor": 1.0, "shift_factor": None}
    return {"scaling_factor": stats["scaling_factor"],
            "shift_factor": stats["mean"] if with_shift else None,
            "latents_mean": None, "latents_std": None}

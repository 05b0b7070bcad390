"""Latent normalization, in one place: the constants of known image VAEs, applying and undoing
them, and measuring them over a data set.

Diffusion models want latents of roughly unit variance. Two conventions are supported:
- scalar (SD, SD3, FLUX): `scaling_factor = 1 / std` over all latent values, and
  `shift_factor = mean` when `with_shift` (SD3/FLUX style; SD 1.x uses no shift):
  `z_norm = (z - shift_factor) * scaling_factor`;
- per channel (Wan, Mochi): `latents_mean`, `latents_std` per channel, `scaling_factor = 1`:
  `z_norm = (z - mean) / std * scaling_factor`.

How diffusers pipelines apply these (each its own way) is `videovae.integrations.diffusers`;
a model prepared there for a pipeline that only divides by `scaling_factor` may absorb the rest
of the affine into `encode`/`decode` (`ABSORB_KEY`); the functions below account for it.
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


# Config key set by `videovae.integrations.diffusers.for_pipeline` for pipelines that only divide
# by `scaling_factor`: `encode` then returns `normalize_latents(z) / scaling_factor` and `decode`
# inverts it, so those pipelines see the toolkit's normalized latents (the constants stay as
# measured; this one flag says which space the model's own latents are in).
ABSORB_KEY = "absorb_normalization"


def stored_offset_and_gain(config, z: torch.Tensor):
    """The stored constants as `z_norm = (z - offset) * gain` for the network's latents z,
    broadcast over (B, Z, ...)."""
    config = dict(config)
    scale = config.get("scaling_factor") or 1.0
    if config.get("latents_mean") is not None and config.get("latents_std") is not None:
        shape = (1, -1) + (1,) * (z.ndim - 2)
        mean = torch.tensor(config["latents_mean"], dtype=z.dtype, device=z.device).view(shape)
        std = torch.tensor(config["latents_std"], dtype=z.dtype, device=z.device).view(shape)
        return mean, scale / std
    return config.get("shift_factor") or 0.0, scale


def offset_and_gain(config, z: torch.Tensor):
    """`z_norm = (z - offset) * gain` for the latents `encode` returns (what every toolkit
    function reads and writes): the stored constants, or only `scaling_factor` when the model
    absorbs the rest (`ABSORB_KEY`)."""
    if dict(config).get(ABSORB_KEY):
        return 0.0, dict(config).get("scaling_factor") or 1.0
    return stored_offset_and_gain(config, z)


def absorbed_affine(config, z: torch.Tensor):
    """(offset, gain) with `encode output = (z - offset) * gain` for the network's latents z:
    (0, 1) unless the model absorbs the normalization."""
    if not dict(config).get(ABSORB_KEY):
        return 0.0, 1.0
    offset, gain = stored_offset_and_gain(config, z)
    return offset, gain / (dict(config).get("scaling_factor") or 1.0)


def network_latents(z: torch.Tensor, config) -> torch.Tensor:
    """Latents from `encode` -> what the decoder network takes (the same unless the model
    absorbs the normalization)."""
    if not dict(config).get(ABSORB_KEY):
        return z
    offset, gain = absorbed_affine(config, z)
    return z / gain + offset


def normalize_latents(z: torch.Tensor, config) -> torch.Tensor:
    """Latents from `encode` -> what a diffusion model is trained on."""
    offset, gain = offset_and_gain(config, z)
    return (z - offset) * gain


def denormalize_latents(z: torch.Tensor, config) -> torch.Tensor:
    """Inverse of `normalize_latents`: what `decode` takes."""
    offset, gain = offset_and_gain(config, z)
    return z / gain + offset


@torch.no_grad()
def measure_latent_stats(vae, data_path, *, num_clips: int = 64, num_frames: int = 17,
                         resolution: int = 256, kind: str = "video", sample: bool = False,
                         seed: int = 0, progress: bool = True) -> dict:
    """Encode `num_clips` center-cropped clips from `data_path` and return channel statistics."""
    from .data.sources import ClipSource, SourceConfig

    if vae.config.get(ABSORB_KEY):
        raise ValueError("measure latent statistics on the model as trained, not on one prepared "
                         "for a pipeline (its config has absorb_normalization set)")
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

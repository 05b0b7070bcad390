"""Latent normalization, in one place: the constants of known image VAEs, applying and undoing
them (measuring them over a data set is a data-set job: `videovae.data.latent_stats`).

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

import torch

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


def config_updates(stats: dict, per_channel: bool = False, with_shift: bool = False) -> dict:
    """The config entries to write for one of the two conventions."""
    if per_channel:
        return {"latents_mean": stats["latents_mean"], "latents_std": stats["latents_std"],
                "scaling_factor": 1.0, "shift_factor": None}
    return {"scaling_factor": stats["scaling_factor"],
            "shift_factor": stats["mean"] if with_shift else None,
            "latents_mean": None, "latents_std": None}

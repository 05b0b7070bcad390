"""Inflating an image VAE into a video VAE family.

`cv`: each 2D kernel goes into the temporal tap that sees the current frame (the last tap of a
causal conv, the middle tap of a non-causal one) with zeros elsewhere, so a one-frame video and
every frame of a still clip give exactly the image VAE's latents and reconstructions; the latent
channels are the image VAE's.
`ktc`: the image VAE goes into both channel halves (`inflate_ktc.py` states the rule), so the
latent has twice the image VAE's channels, keyframe half first; per-channel `latents_mean` /
`latents_std` are repeated for both halves.
`INFLATERS` is the convert side's family table (arch -> in-memory inflater); a family without
an entry cannot be built from an image VAE (its test file says so with a skip reason).
"""

from __future__ import annotations

import logging

import torch
from diffusers import AutoencoderKL

from ..errors import ImageVAEError
from ..models import DEFAULT_ARCH, AutoencoderCV, AutoencoderKTC
from ..models.autoencoder_cv import default_temporal_downsample
from .checkpoints import load_image_vae
from .inflate_ktc import inflate_ktc_weights

logger = logging.getLogger(__name__)

# Config keys the video VAE takes over from the image VAE; overrides must agree with them.
ARCH_KEYS = ("in_channels", "out_channels", "block_out_channels", "layers_per_block",
             "latent_channels", "norm_num_groups", "mid_block_add_attention", "use_quant_conv",
             "use_post_quant_conv")
LATENT_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast")


def video_config_from_image(image_config) -> dict:
    """The video VAE config keys that must equal the image VAE's."""
    cfg = {k: image_config[k] for k in ARCH_KEYS}
    cfg["block_out_channels"] = list(cfg["block_out_channels"])
    for k in LATENT_KEYS:
        if image_config.get(k) is not None:
            cfg[k] = image_config[k]
    return cfg


def inflate_state_dict(video_vae, image_state: dict) -> None:
    """Copy 2D weights into the video VAE: kernels into the current-frame tap, zeros elsewhere."""
    own = video_vae.state_dict()
    missing = [k for k in own if k not in image_state]
    if missing:
        raise ImageVAEError(f"the image VAE lacks {len(missing)} weights the video VAE needs: "
                            f"{', '.join(missing[:4])}")
    new = {}
    for name, param in own.items():
        src = image_state[name].to(param.dtype)
        if param.ndim == 5 and src.ndim == 4:
            conv = video_vae.get_submodule(name.rsplit(".", 1)[0])
            kt = param.shape[2]
            tap = kt - 1 if conv.causal else kt // 2
            w = torch.zeros_like(param)
            w[:, :, tap] = src
            new[name] = w
        elif tuple(param.shape) == tuple(src.shape):
            new[name] = src.clone()
        else:
            raise ImageVAEError(f"{name}: image VAE shape {tuple(src.shape)} does not fit the "
                                f"video VAE's {tuple(param.shape)}")
    video_vae.load_state_dict(new)


def _family_config(image_vae, where: str, overrides: dict, derived: dict | None = None,
                   stats_copies: int = 1, downsample=default_temporal_downsample) -> dict:
    """The image VAE's config keys, then the family's `derived` architecture keys (overrides of
    either must agree with them; other overrides are taken as given). Without a given
    `temporal_downsample`, the family's `downsample(levels)` rule gives it (4x in time wherever
    there are two or more downsampling levels). Per-channel latent statistics are repeated
    `stats_copies` times."""
    cfg = video_config_from_image(image_vae.config)
    cfg.update(derived or {})
    if "temporal_downsample" not in overrides:  # follows from the number of levels
        levels = len(cfg["block_out_channels"])
        cfg["temporal_downsample"] = list(downsample(levels))
        logger.info("%d-level image VAE: temporal_downsample=%s (%dx in time)", levels,
                    cfg["temporal_downsample"], 2 ** sum(cfg["temporal_downsample"]))
    for k in ("latents_mean", "latents_std"):
        if cfg.get(k) is not None:
            cfg[k] = list(cfg[k]) * stats_copies
    fixed = (*ARCH_KEYS, *(derived or {}))
    for key, value in overrides.items():
        if key in fixed:
            have = cfg[key]
            if (list(value) if isinstance(value, (list, tuple)) else value) != have:
                raise ImageVAEError(f"{key}={value} disagrees with {where}, which gives "
                                    f"{key}={have}")
        cfg[key] = value
    return cfg


def inflate_cv(image_vae: AutoencoderKL, where: str = "the image VAE",
               **overrides) -> AutoencoderCV:
    """A `cv` video VAE from an in-memory diffusers `AutoencoderKL`."""
    video = AutoencoderCV(**_family_config(image_vae, where, overrides))
    inflate_state_dict(video, image_vae.state_dict())
    return video


def _ktc_downsample(levels: int) -> tuple[bool, ...]:
    """IV-VAE's rule: the last two downsampling levels halve time ((False, True, True) for the
    SD layout's four levels)."""
    n = max(levels - 1, 0)
    return tuple(i >= n - 2 for i in range(n))


def inflate_ktc(image_vae: AutoencoderKL, where: str = "the image VAE",
                **overrides) -> AutoencoderKTC:
    """A `ktc` video VAE (twice the latent channels) from an in-memory `AutoencoderKL`."""
    derived = {"latent_channels": 2 * image_vae.config.latent_channels, "norm_type": "group"}
    video = AutoencoderKTC(**_family_config(image_vae, where, overrides, derived, 2,
                                            _ktc_downsample))
    inflate_ktc_weights(video, image_vae.state_dict())
    return video


INFLATERS = {"cv": inflate_cv, "ktc": inflate_ktc}  # arch -> in-memory inflater


def inflate_from_model(image_vae: AutoencoderKL, arch: str = DEFAULT_ARCH,
                       where: str = "the image VAE", **overrides):
    """A video VAE of family `arch` from an in-memory diffusers `AutoencoderKL`."""
    if arch not in INFLATERS:
        raise ImageVAEError(f"arch {arch!r} cannot be inflated from an image VAE; the families "
                            f"that can: {', '.join(sorted(INFLATERS))}")
    return INFLATERS[arch](image_vae, where, **overrides)


def inflate_image_vae(path, arch: str = DEFAULT_ARCH, image_vae_type: str | None = None,
                      **overrides):
    """A video VAE of family `arch` from an image VAE checkpoint; see the module docstring."""
    image_vae, family = load_image_vae(path, image_vae_type, overrides.get("norm_num_groups"))
    video = inflate_from_model(image_vae, arch, f"the image VAE at {path}", **overrides)
    logger.info("inflated a %s image VAE (%s, %d latent channels) into arch %s", family, path,
                video.config.latent_channels, arch)
    return video

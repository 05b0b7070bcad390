"""Measuring a model's latent statistics over a data set (`videovae latent-stats`): the
per-channel and overall mean and standard deviation of the latents of center-cropped clips,
from which `videovae.latents.config_updates` gives the normalization constants to store. Works
for a video VAE and for an image VAE (diffusers `AutoencoderKL`: every frame on its own)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..latents import ABSORB_KEY
from .sources import ClipSource, SourceConfig


@torch.no_grad()
def measure_latent_stats(vae, data_path, *, num_clips: int = 64, num_frames: int = 17,
                         resolution: int = 256, kind: str = "video", sample: bool = False,
                         seed: int = 0, progress: bool = True) -> dict:
    """Encode `num_clips` center-cropped clips from `data_path` and return channel statistics."""
    if vae.config.get(ABSORB_KEY):
        raise ValueError("measure latent statistics on the model as trained, not on one prepared "
                         "for a pipeline (its config has absorb_normalization set)")
    is_video_vae = hasattr(vae, "temporal_compression_ratio")
    src = ClipSource(SourceConfig(type=kind, path=str(data_path), resolution=resolution,
                                  num_frames=1 if kind == "image" else num_frames,
                                  random_crop=False),
                     vae.temporal_compression_ratio if is_video_vae else 1)
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
        clip = clip.to(param.device, param.dtype)
        if is_video_vae:
            post = vae.encode(clip[None]).latent_dist
        else:  # an image VAE encodes the frames (T, C, H, W) one by one
            post = vae.encode(clip.transpose(0, 1)).latent_dist
        z = (post.sample() if sample else post.mode()).double().cpu()
        if not is_video_vae:
            z = z.transpose(0, 1)[None]  # (1, Z, T, h, w) like a video VAE's
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

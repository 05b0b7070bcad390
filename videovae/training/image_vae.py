"""Training a small image VAE (diffusers `AutoencoderKL`, SD layout) from scratch: the starting
point that the demo and the default models inflate into video VAEs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..convert.checkpoints import sd_vae_config
from ..data.sources import ClipSource, SourceConfig
from ..models.base import init_posterior_logvar
from .losses import lowpass_distance
from .optim import warmup_cosine


def _plain(value):
    """Config values compared as JSON sees them (a tuple equals the list it is saved as)."""
    return list(value) if isinstance(value, tuple) else value


def train_image_vae(config: dict, steps: int, batch: int = 16, resolution: int = 64,
                    lr: float = 1e-3, seed: int = 0, sources: list[SourceConfig] | None = None,
                    on_step=None, lowpass_weight: float = 0.0, init=None):
    """An SD-layout `AutoencoderKL` (`config`: `sd_vae_config` keyword arguments) trained with
    L1 (+ `lowpass_weight` x the block-mean colour term, `losses.lowpass_distance`) + KL on
    one-frame crops of `sources` (each sample from one, drawn by `weight`; default: the bundled
    photos, the synthetic source). `init`: an `AutoencoderKL` (or its folder) to continue from
    instead of a fresh one (a copy is trained); its config must be `config`'s.
    `on_step(step, l1)` is called after each step. Returns (vae, L1 per step)."""
    from diffusers import AutoencoderKL

    config = sd_vae_config(**config)
    torch.manual_seed(seed)
    if init is None:
        vae = AutoencoderKL(**config)
        init_posterior_logvar(vae.quant_conv, config["latent_channels"])
    else:
        if isinstance(init, AutoencoderKL):
            vae = copy.deepcopy(init)  # the caller's model stays as it was
        elif (Path(init) / "config.json").is_file():
            vae = AutoencoderKL.from_pretrained(init)
        else:
            raise FileNotFoundError(f"no image VAE to continue from at {init} (no config.json)")
        differ = {k: (vae.config.get(k), v) for k, v in config.items()
                  if _plain(vae.config.get(k)) != _plain(v)}
        if differ:
            raise ValueError(f"the image VAE to continue from has another config: {differ}")
        vae.train().requires_grad_(True)
    srcs = [ClipSource(c) for c in sources or [
        SourceConfig(type="synthetic", num_frames=1, resolution=resolution)]]
    if any(s.cfg.num_frames != 1 for s in srcs):
        raise ValueError("an image VAE trains on one-frame sources (num_frames: 1)")
    weights = np.array([s.cfg.weight for s in srcs], dtype=float)
    weights /= weights.sum()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(20, steps, 0.05))
    rng = np.random.default_rng(seed)
    losses = []
    for step in tqdm(range(steps), desc="image VAE", leave=False):
        x = torch.stack([srcs[rng.choice(len(srcs), p=weights)].sample(rng)[0][:, 0]
                         for _ in range(batch)])
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        l1 = (rec - x).abs().mean()
        loss = l1 + 1e-6 * post.kl().sum() / x.numel()
        if lowpass_weight > 0:
            loss = loss + lowpass_weight * lowpass_distance(x, rec)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(l1.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return vae.eval().requires_grad_(False), losses

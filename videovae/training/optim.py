"""Optimizers, learning-rate schedules and the EMA of the trained weights."""

from __future__ import annotations

import math

import torch


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """LR multiplier: linear warmup to 1, then cosine decay to `min_ratio` at `total`."""
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def adamw_with_schedule(params, lr: float, optim_cfg, total_steps: int):
    """AdamW with the config's betas, eps and weight decay, and its warmup + cosine schedule."""
    o = optim_cfg
    opt = torch.optim.AdamW(params, lr=lr, betas=tuple(o.betas), eps=o.eps,
                            weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(o.warmup_steps, total_steps, o.min_lr_ratio))
    return opt, sched


def build_ema(vae, decay: float, device):
    """diffusers' EMAModel over the video VAE's weights (None when decay is 0)."""
    if decay <= 0:
        return None
    from diffusers.training_utils import EMAModel

    ema = EMAModel(vae.parameters(), decay=decay, model_cls=type(vae), model_config=vae.config)
    ema.to(device)
    return ema


def with_ema(ema, vae, fn):
    """Run fn with the EMA weights swapped into vae (plain fn() without EMA)."""
    if ema is None:
        return fn()
    ema.store(vae.parameters())
    ema.copy_to(vae.parameters())
    try:
        return fn()
    finally:
        ema.restore(vae.parameters())

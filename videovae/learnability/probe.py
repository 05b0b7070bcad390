"""The learnability probe: how easily a small diffusion model learns a VAE's latents.

Given standardized training and validation latents of one VAE, train a small flow-matching
transformer (rectified flow: x_t = (1 - t) x0 + t noise, target noise - x0) for a fixed number
of steps, with logit-normal timesteps shifted for the latent size, the same seed and budget for
every VAE, and measure:
- the validation flow-matching loss at fixed steps (fixed noise and timesteps), and its area
  (the mean of the curve: lower = learned faster);
- the final validation loss per timestep bucket;
- the PSNR of decoded one-step predictions x0_hat = x_t - t * v at a few noise levels (how
  usable the model's predictions are in pixel space), next to the VAE's own reconstruction PSNR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..metrics import psnr_per_frame

REFERENCE_DIM = 4096  # latent values at which the time shift is 1 (a 64x64x1 latent)


@dataclass
class ProbeConfig:
    steps: int = 300  # training steps (the budget; the same for every VAE)
    batch_size: int = 8
    lr: float = 1e-3
    width: int = 96  # transformer width
    depth: int = 3
    heads: int = 4
    patch: int = 2  # spatial patch size in latent pixels (time is never patched)
    eval_every: int = 25  # validation loss curve resolution, in steps
    time_buckets: int = 5  # the final loss is reported per bucket of t in [0, 1]
    noise_levels: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    seed: int = 0


def time_shift(latent_dim: int) -> float:
    """SD3's resolution-dependent shift: sqrt(values per latent / REFERENCE_DIM), at least 1."""
    return max(1.0, math.sqrt(latent_dim / REFERENCE_DIM))


def shift_t(t: torch.Tensor, shift: float) -> torch.Tensor:
    """More noise for larger latents: t -> shift * t / (1 + (shift - 1) * t)."""
    return shift * t / (1 + (shift - 1) * t)


def standardize(train: torch.Tensor, *others: torch.Tensor):
    """Per-channel mean/std of (N, Z, T, h, w) training latents, applied to all."""
    mean = train.mean(dim=(0, 2, 3, 4), keepdim=True)
    std = train.std(dim=(0, 2, 3, 4), keepdim=True).clamp_min(1e-6)
    return ((train - mean) / std, *((o - mean) / std for o in others)), (mean, std)


class FlowTransformer(nn.Module):
    """A small DiT: (1, p, p) patches of (Z, T, h, w) latents, learned positions, timestep
    added through adaptive layer-norm scale/shift, pre-norm attention + MLP blocks."""

    def __init__(self, channels: int, frames: int, height: int, width: int, cfg: ProbeConfig):
        super().__init__()
        p = cfg.patch
        if height % p or width % p:
            raise ValueError(f"latent size {height}x{width} is not a multiple of patch {p}")
        self.shape, self.p = (channels, frames, height, width), p
        n_tokens = frames * (height // p) * (width // p)
        d = cfg.width
        self.embed = nn.Linear(channels * p * p, d)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, d) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(64, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(
            d, cfg.heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True) for _ in range(cfg.depth)])
        self.ada = nn.Linear(d, 2 * d)
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.out = nn.Linear(d, channels * p * p)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _patchify(self, x):
        b, c, t, h, w = x.shape
        p = self.p
        x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 4, 6)
        return x.reshape(b, t * (h // p) * (w // p), c * p * p)

    def _unpatchify(self, tokens):
        c, t, h, w = self.shape
        p, b = self.p, tokens.shape[0]
        x = tokens.reshape(b, t, h // p, w // p, c, p, p).permute(0, 4, 1, 2, 5, 3, 6)
        return x.reshape(b, c, t, h, w)

    @staticmethod
    def _t_features(t):
        freqs = torch.exp(-math.log(1000.0) * torch.arange(32, device=t.device) / 32)
        angles = 1000.0 * t[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def forward(self, x, t):
        temb = self.t_mlp(self._t_features(t))
        h = self.embed(self._patchify(x)) + self.pos + temb[:, None]
        for block in self.blocks:
            h = block(h)
        scale, shift = self.ada(F.silu(temb)).chunk(2, dim=1)
        h = self.norm(h) * (1 + scale[:, None]) + shift[:, None]
        return self._unpatchify(self.out(h))


def _fm_loss(model, x0, noise, t):
    xt = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
    return (model(xt, t) - (noise - x0)).pow(2).mean(dim=(1, 2, 3, 4))


@torch.no_grad()
def _val_loss(model, x0, noise, t, batch):
    return torch.cat([_fm_loss(model, x0[i:i + batch], noise[i:i + batch], t[i:i + batch])
                      for i in range(0, len(x0), batch)])


def run_probe(train: torch.Tensor, val: torch.Tensor, cfg: ProbeConfig, decode=None,
              val_pixels: torch.Tensor | None = None, progress=None) -> dict:
    """Probe standardized latents (N, Z, T, h, w). `decode(z_standardized) -> pixels` and
    `val_pixels` (N_val, 3, T_px, H, W) enable the one-step PSNR; `progress(step)` is called
    after each step."""
    if train.ndim != 5 or val.shape[1:] != train.shape[1:]:
        raise ValueError(f"train/val latents must share a (Z, T, h, w) shape, got "
                         f"{tuple(train.shape)} and {tuple(val.shape)}")
    dev = train.device
    torch.manual_seed(cfg.seed)
    model = FlowTransformer(*train.shape[1:], cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    shift = time_shift(train[0].numel())

    def draw_t(n):
        return shift_t(torch.sigmoid(torch.randn(n, generator=g)), shift).to(dev)

    # fixed validation noise and timesteps (the same for every VAE of the same latent shape)
    v_noise = torch.randn(val.shape, generator=g).to(dev)
    v_t = draw_t(len(val))
    curve = []
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            curve.append([step, _val_loss(model, val, v_noise, v_t, cfg.batch_size).mean().item()])
            model.train()
        if step == cfg.steps:
            break
        idx = torch.randint(len(train), (cfg.batch_size,), generator=g).to(dev)
        noise = torch.randn((cfg.batch_size, *train.shape[1:]), generator=g).to(dev)
        loss = _fm_loss(model, train[idx], noise, draw_t(cfg.batch_size)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if progress is not None:
            progress(step)
    model.eval()
    report = {"time_shift": shift, "latent_values": train[0].numel(), "curve": curve,
              "curve_area": sum(v for _, v in curve) / len(curve), "final_val_loss": curve[-1][1],
              "loss_per_t_bucket": _bucket_losses(model, val, cfg, g)}
    if decode is not None and val_pixels is not None:
        report["one_step_psnr"] = _one_step_psnr(model, val, val_pixels, decode, cfg, g)
    return report


@torch.no_grad()
def _bucket_losses(model, val, cfg, g) -> list[dict]:
    out = []
    for k in range(cfg.time_buckets):
        lo, hi = k / cfg.time_buckets, (k + 1) / cfg.time_buckets
        t = (lo + (hi - lo) * torch.rand(len(val), generator=g)).to(val.device)
        noise = torch.randn(val.shape, generator=g).to(val.device)
        out.append({"t_min": lo, "t_max": hi,
                     "loss": _val_loss(model, val, noise, t, cfg.batch_size).mean().item()})
    return out


@torch.no_grad()
def _one_step_psnr(model, val, pixels, decode, cfg, g) -> list[dict]:
    out = []
    for level in cfg.noise_levels:
        t = torch.full((len(val),), float(level), device=val.device)
        noise = torch.randn(val.shape, generator=g).to(val.device)
        xt = (1 - level) * val + level * noise
        x0_hat = torch.cat([xt[i:i + cfg.batch_size] - level * model(
            xt[i:i + cfg.batch_size], t[i:i + cfg.batch_size])
            for i in range(0, len(val), cfg.batch_size)])
        rec = decode(x0_hat).clamp(-1, 1)
        n = min(rec.shape[2], pixels.shape[2])
        psnr = psnr_per_frame(pixels[:, :, :n].to(rec.device), rec[:, :, :n]).mean().item()
        out.append({"t": level, "psnr": psnr})
    return out

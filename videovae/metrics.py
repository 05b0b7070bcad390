"""Per-frame reconstruction metrics on (B, 3, T, H, W) tensors in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr_per_frame(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per (batch, frame) on the [0, 1] scale; shape (B, T). Identical frames: inf."""
    mse = ((x.float() - y.float()) / 2).pow(2).mean(dim=(1, 3, 4))
    return 10 * torch.log10(1.0 / mse)


def _gaussian_window(size=11, sigma=1.5, device=None):
    g = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-g.pow(2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_per_frame(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM (Gaussian window 11, sigma 1.5, valid region, mean over RGB) per (batch, frame)."""
    b, c, t, h, w = x.shape
    a = ((x.float() + 1) / 2).transpose(1, 2).reshape(b * t * c, 1, h, w)
    r = ((y.float() + 1) / 2).transpose(1, 2).reshape(b * t * c, 1, h, w)
    size = min(11, h, w)
    win = _gaussian_window(size, 1.5, x.device)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_r = F.conv2d(a, win), F.conv2d(r, win)
    saa = F.conv2d(a * a, win) - mu_a.pow(2)
    srr = F.conv2d(r * r, win) - mu_r.pow(2)
    sar = F.conv2d(a * r, win) - mu_a * mu_r
    s = ((2 * mu_a * mu_r + c1) * (2 * sar + c2)) / ((mu_a.pow(2) + mu_r.pow(2) + c1) *
                                                     (saa + srr + c2))
    return s.mean(dim=(1, 2, 3)).view(b, t, c).mean(dim=2)


def mean_psnr_ssim(x: torch.Tensor, rec: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR and SSIM over every frame, with `rec` clamped to [-1, 1]."""
    rec = rec.clamp(-1, 1)
    return psnr_per_frame(x, rec).mean().item(), ssim_per_frame(x, rec).mean().item()


def group_position_stats(clips: list[list[float]], ratio: int = 4) -> dict:
    """Quality by position inside the compression groups, pooled over clips of per-frame scores.

    Frame 0 of a clip is its own group (position 0); frame i >= 1 sits at position
    (i - 1) % ratio of its group. Returns the mean score per position, and the first-versus-rest
    gap: the mean over each group's first frame minus the mean over the other frames (the
    saw-tooth that shows as flicker; None when no clip has a frame after a group's first)."""
    by_pos = [[] for _ in range(ratio)]
    for scores in clips:
        for i, v in enumerate(scores):
            by_pos[0 if i == 0 else (i - 1) % ratio].append(v)
    rest = [v for k in range(1, ratio) for v in by_pos[k]]
    return {"per_position": [sum(v) / len(v) if v else None for v in by_pos],
            "first_vs_rest_gap": (sum(by_pos[0]) / len(by_pos[0]) - sum(rest) / len(rest))
            if rest else None}

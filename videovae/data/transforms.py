"""Clip transforms: resize the short side to cover a size, crop (random or center), flip."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..io.video import frames_to_tensor


def resize_crop(x: torch.Tensor, size, rng: np.random.Generator, random_crop: bool,
                hflip: bool, crop_scale=1.0) -> torch.Tensor:
    """(T, 3, H, W) float -> resize the short side to cover `size`, crop to `size`.

    `crop_scale` below 1 (a number, or a [min, max] range drawn per clip) crops that fraction of
    the largest window of the output's aspect ratio first (at a random place, or the centre
    without `random_crop`) and resizes it to `size`: crops that show a photo at many scales."""
    h, w = size
    lo, hi = (crop_scale, crop_scale) if np.isscalar(crop_scale) else crop_scale
    if not (0 < lo <= hi <= 1):
        raise ValueError(f"crop_scale must lie in (0, 1], got {crop_scale}")
    if hi < 1 or lo < 1:
        s = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
        fit = min(x.shape[2] / h, x.shape[3] / w)  # largest window of the output's aspect
        ch, cw = max(1, round(h * fit * s)), max(1, round(w * fit * s))
        top = int(rng.integers(0, x.shape[2] - ch + 1)) if random_crop else (x.shape[2] - ch) // 2
        left = int(rng.integers(0, x.shape[3] - cw + 1)) if random_crop else (x.shape[3] - cw) // 2
        x = x[:, :, top:top + ch, left:left + cw]
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=(ch > h),
                          align_corners=False)
        return x.flip(-1) if hflip and rng.random() < 0.5 else x
    scale = max(h / x.shape[2], w / x.shape[3])
    nh, nw = max(h, round(x.shape[2] * scale)), max(w, round(x.shape[3] * scale))
    if (nh, nw) != tuple(x.shape[2:]):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top = int(rng.integers(0, nh - h + 1)) if random_crop else (nh - h) // 2
    left = int(rng.integers(0, nw - w + 1)) if random_crop else (nw - w) // 2
    x = x[:, :, top:top + h, left:left + w]
    if hflip and rng.random() < 0.5:
        x = x.flip(-1)
    return x


def to_clip(frames: np.ndarray, size, rng, random_crop, hflip, crop_scale=1.0) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, h, w) in [-1, 1]."""
    x = frames_to_tensor(frames)[0].transpose(0, 1)  # (T, 3, H, W)
    x = resize_crop(x, size, rng, random_crop, hflip, crop_scale).clamp(-1, 1)
    return x.transpose(0, 1).contiguous()

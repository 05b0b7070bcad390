"""Clip transforms: resize the short side to cover a size, crop (random or center), flip."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..io.video import frames_to_tensor


def resize_crop(x: torch.Tensor, size, rng: np.random.Generator, random_crop: bool,
                hflip: bool) -> torch.Tensor:
    """(T, 3, H, W) float -> resize the short side to cover `size`, crop to `size`."""
    h, w = size
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


def to_clip(frames: np.ndarray, size, rng, random_crop, hflip) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, h, w) in [-1, 1]."""
    x = frames_to_tensor(frames)[0].transpose(0, 1)  # (T, 3, H, W)
    x = resize_crop(x, size, rng, random_crop, hflip).clamp(-1, 1)
    return x.transpose(0, 1).contiguous()

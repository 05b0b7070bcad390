"""The frame arithmetic of causal video VAEs, in one place.

A clip of T frames is padded (repeating its last frame) to T = 1 + r*k, r the temporal
compression ratio; frame 0 is compressed alone and every later group of r frames gives one
latent frame, so n latent frames decode to 1 + r*(n-1) frames. H and W are padded (replicating
the bottom row and right column) to multiples of the spatial ratio.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def num_latent_frames(num_frames: int, ratio: int = 4) -> int:
    """Latent frames of a clip of `num_frames` (padded up to the next 1 + ratio*k)."""
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    return 1 + -(-(num_frames - 1) // ratio)


def num_decoded_frames(num_latents: int, ratio: int = 4) -> int:
    """Frames that `num_latents` latent frames decode to: 1 + ratio*(n-1)."""
    return 1 + ratio * (num_latents - 1)


def frame_counts_for(num_latents: int, ratio: int = 4) -> range:
    """Every clip length whose latents have `num_latents` frames (what `decode` can trim to)."""
    full = num_decoded_frames(num_latents, ratio)
    return range(max(full - ratio + 1, 1), full + 1)


def padded_frames(num_frames: int, ratio: int = 4) -> int:
    """How many frames padding adds to reach 1 + ratio*k."""
    return num_decoded_frames(num_latent_frames(num_frames, ratio), ratio) - num_frames


def repeat_last_frame(x: torch.Tensor, extra: int) -> torch.Tensor:
    """x (B, C, T, H, W) with its last frame repeated `extra` more times."""
    if extra <= 0:
        return x
    return torch.cat([x, x[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)


def pad_frames(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """Repeat the last frame until T = 1 + ratio*k."""
    return repeat_last_frame(x, padded_frames(x.shape[2], ratio))


def pad_size(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """Replicate the bottom row and right column until H and W are multiples of `ratio`."""
    ph, pw = -x.shape[3] % ratio, -x.shape[4] % ratio
    if not (ph or pw):
        return x
    b, c, t, h, w = x.shape
    x = F.pad(x.reshape(b, c * t, h, w), (0, pw, 0, ph), mode="replicate")
    return x.reshape(b, c, t, h + ph, w + pw)


def pad_video(x: torch.Tensor, temporal_ratio: int, spatial_ratio: int) -> torch.Tensor:
    """Pad frames (repeat the last) to 1 + r*k and H, W (replicate bottom/right) to multiples."""
    return pad_size(pad_frames(x, temporal_ratio), spatial_ratio)

"""Tile placement and blending, in space and time."""

import torch
import torch.nn.functional as F

from videovae.models.tiling import blend_temporal_windows, tile_spans, tiled_apply_2d


def test_tile_placement_and_blending_are_exact_for_local_ops():
    """With a per-pixel op in each tile, tiled output equals the untiled one: spans cover the
    image and the blend weights sum to one everywhere."""
    x = torch.randn(1, 3, 2, 72, 104, generator=torch.Generator().manual_seed(0))
    down = tiled_apply_2d(x, lambda t, k: F.avg_pool3d(t, (1, 8, 8)), 32, 16, 1 / 8)
    assert torch.allclose(down, F.avg_pool3d(x, (1, 8, 8)), atol=1e-6)
    z = torch.randn(1, 4, 2, 9, 13, generator=torch.Generator().manual_seed(1))
    up = tiled_apply_2d(z, lambda t, k: F.interpolate(t, scale_factor=(1, 8, 8)), 4, 2, 8)
    assert torch.allclose(up, F.interpolate(z, scale_factor=(1, 8, 8)), atol=1e-6)
    assert tile_spans(104, 32, 16) == [(0, 32), (16, 48), (32, 64), (48, 80), (64, 96), (72, 104)]


def test_temporal_windows_blend_to_the_full_result_for_a_frame_local_decode():
    """A decode that maps each latent frame to frames on its own (first latent -> 1 frame,
    later ones -> r frames, as a causal decoder's frame count) blends back exactly."""
    r = 4
    z = torch.randn(1, 2, 11, 3, 3, generator=torch.Generator().manual_seed(2))

    def decode(w):  # window-independent per-latent expansion
        first = w[:, :, :1]
        rest = w[:, :, 1:].repeat_interleave(r, dim=2)
        return torch.cat([first, rest], dim=2)

    full = decode(z)
    windows = tile_spans(11, 4, 2)
    pieces = list(blend_temporal_windows(z, windows, decode, r))
    out = torch.cat(pieces, dim=2)
    assert out.shape == full.shape
    # window [a, b) puts latent a's single frame at frame r*a, where the full result has the
    # last of latent a's r frames: the same value, so the blend must give the full result
    assert torch.allclose(out, full, atol=1e-6)
    assert sum(p.shape[2] for p in pieces) == full.shape[2] and len(pieces) == len(windows)

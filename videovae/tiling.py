"""Overlapping tiles and their linear blending, in space (and in time for non-causal decoders)."""

from __future__ import annotations

from typing import Callable

import torch


def tile_spans(size: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Start/end of tiles of length `tile` covering [0, size) with at least `overlap` shared.

    The last tile is moved back to end at `size`, so every tile has full length (it then
    overlaps its neighbour by more than `overlap`). One tile when `size <= tile`.
    """
    if size <= tile:
        return [(0, size)]
    if overlap >= tile:
        raise ValueError(f"tile overlap ({overlap}) must be smaller than the tile ({tile})")
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return [(s, s + tile) for s in starts]


def _ramp(length: int, ramp_in: int, ramp_out: int, device, dtype) -> torch.Tensor:
    """1-D weights: rising over the first `ramp_in` entries, falling over the last `ramp_out`."""
    w = torch.ones(length, device=device, dtype=dtype)
    if ramp_in > 0:
        w[:ramp_in] = (torch.arange(ramp_in, device=device, dtype=dtype) + 0.5) / ramp_in
    if ramp_out > 0:
        w[length - ramp_out:] = torch.minimum(
            w[length - ramp_out:],
            (torch.arange(ramp_out, 0, -1, device=device, dtype=dtype) - 0.5) / ramp_out)
    return w


def blend_weights(out_spans, i, device, dtype=torch.float32):
    """Blend weights of tile i along one axis: linear ramps over the overlaps with its neighbours."""
    s, e = out_spans[i]
    ramp_in = out_spans[i - 1][1] - s if i > 0 else 0
    ramp_out = e - out_spans[i + 1][0] if i + 1 < len(out_spans) else 0
    return _ramp(e - s, max(ramp_in, 0), max(ramp_out, 0), device, dtype)


class TileBlender:
    """Accumulates weighted tiles along the last two axes and returns the blended result."""

    def __init__(self, out_h_spans, out_w_spans):
        self.hs, self.ws = out_h_spans, out_w_spans
        self.acc = None
        self.norm = None

    def add(self, i: int, j: int, tile: torch.Tensor) -> None:
        dev, dt = tile.device, torch.float32
        wh = blend_weights(self.hs, i, dev, dt)
        ww = blend_weights(self.ws, j, dev, dt)
        w = wh[:, None] * ww[None, :]
        if self.acc is None:
            shape = list(tile.shape[:-2]) + [self.hs[-1][1], self.ws[-1][1]]
            self.acc = torch.zeros(shape, device=dev, dtype=dt)
            self.norm = torch.zeros(shape[-2:], device=dev, dtype=dt)
        (h0, h1), (w0, w1) = self.hs[i], self.ws[j]
        self.acc[..., h0:h1, w0:w1] += tile.float() * w
        self.norm[h0:h1, w0:w1] += w

    def result(self, dtype) -> torch.Tensor:
        return (self.acc / self.norm).to(dtype)


def tiled_apply_2d(x: torch.Tensor, fn: Callable[[torch.Tensor, tuple], torch.Tensor],
                   tile: int, overlap: int, scale: float) -> torch.Tensor:
    """Apply `fn(tile, key)` on overlapping spatial tiles of x (..., H, W) and blend the outputs.

    `scale` is the output/input size ratio (1/8 for encoding, 8 for decoding); `tile` and
    `overlap` are in input units and must be multiples of 1/scale when scale < 1. `key` is
    (i, j), stable across calls, so `fn` can keep per-tile streaming state.
    """
    h_spans = tile_spans(x.shape[-2], tile, overlap)
    w_spans = tile_spans(x.shape[-1], tile, overlap)

    def scaled(spans):
        return [(int(round(s * scale)), int(round(e * scale))) for s, e in spans]

    blender = TileBlender(scaled(h_spans), scaled(w_spans))
    for i, (h0, h1) in enumerate(h_spans):
        for j, (w0, w1) in enumerate(w_spans):
            blender.add(i, j, fn(x[..., h0:h1, w0:w1], (i, j)))
    return blender.result(x.dtype)

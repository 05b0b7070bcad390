"""Overlapping tiles and their linear blending, in space (and in time for non-causal decoders)."""

from __future__ import annotations

from typing import Callable, Iterator

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
    """Blend weights of tile i along one axis: linear ramps over the overlaps with its
    neighbours."""
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


def blend_temporal_windows(z: torch.Tensor, windows: list[tuple[int, int]],
                           decode: Callable[[torch.Tensor], torch.Tensor],
                           ratio: int) -> Iterator[torch.Tensor]:
    """Decode overlapping latent windows [a, b) of z (B, Z, n, h, w) with `decode`, blend them
    linearly in time, and yield each run of frames as soon as no later window touches it.

    Window [a, b) covers frames r*a .. r*(b-1) (its first latent gives one frame, as frame 0 of
    a clip does), so neighbouring windows overlap in r*(overlap latents - 1) + 1 frames.
    """
    spans = [(ratio * a, ratio * (b - 1) + 1) for a, b in windows]
    acc = norm = None
    base = 0  # frame index of acc[:, :, 0]
    for k, (a, b) in enumerate(windows):
        piece = decode(z[:, :, a:b])
        s, e = spans[k]
        w = blend_weights(spans, k, piece.device)
        if acc is None:
            acc = piece.new_zeros((*piece.shape[:2], 0, *piece.shape[3:]), dtype=torch.float32)
            norm = w.new_zeros(0)
        grow = e - base - acc.shape[2]
        if grow > 0:
            acc = torch.cat([acc, acc.new_zeros((*acc.shape[:2], grow, *acc.shape[3:]))], 2)
            norm = torch.cat([norm, norm.new_zeros(grow)])
        acc[:, :, s - base:e - base] += piece.float() * w.view(1, 1, -1, 1, 1)
        norm[s - base:e - base] += w
        final = spans[k + 1][0] if k + 1 < len(spans) else spans[-1][1]
        yield (acc[:, :, :final - base] / norm[:final - base].view(1, 1, -1, 1, 1)).to(
            piece.dtype)
        acc, norm, base = acc[:, :, final - base:], norm[final - base:], final

"""Held-out comparison of VAEs on clips no training step saw: one row per model, one table.

Used by `tools/compare_arch.py` (cv against ktc) and `tools/train_default.py` (the shipped
models). Each row has parameters, encode+decode frames per second, PSNR, SSIM, the
first-versus-rest gap and PSNR by position inside the 4-frame groups (`metrics.
group_position_stats`), and the mean colour error: per channel, the mean over clips of
|mean(input) - mean(output)| in levels of 255 (a model that tints everything shows it here).
Baseline rows: the image VAE frame by frame and bicubic 8x down-up.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from .data.synthetic import HELD_OUT_PHOTOS, load_photo, pan_zoom_clip
from .io.video import frames_to_tensor
from .metrics import group_position_stats, psnr_per_frame, ssim_per_frame


def held_out_clips(frames: int = 17, size=(64, 96), speeds=(1.5, 3.0)) -> dict[str, torch.Tensor]:
    """Pans over each held-out photo at each speed: {name: (1, 3, T, H, W) in [-1, 1]}."""
    return {f"{name}_pan{speed:g}": frames_to_tensor(
        pan_zoom_clip(load_photo(name), frames, size, speed=speed, zoom=0.005))
        for name in HELD_OUT_PHOTOS for speed in speeds}


def per_frame(image_vae):
    """Reconstruction with an image VAE applied to each frame."""
    def run(x):
        frames = x[0].transpose(0, 1)
        return image_vae(frames).sample.transpose(0, 1)[None]
    return run


def video(vae):
    return lambda x: vae(x).sample


def bicubic(factor: int = 8):
    """Area down by `factor`, bicubic back up, frame by frame: the no-learning baseline."""
    def run(x):
        frames = x[0].transpose(0, 1)
        low = F.interpolate(frames, scale_factor=1 / factor, mode="area")
        up = F.interpolate(low, size=frames.shape[-2:], mode="bicubic", align_corners=False)
        return up.transpose(0, 1)[None]
    return run


def params_of(model) -> int:
    return sum(p.numel() for p in model.parameters()) if model is not None else 0


@torch.no_grad()
def evaluate(name: str, reconstruct, clips: dict[str, torch.Tensor], params: int = 0,
             ratio: int = 4) -> dict:
    """One row: `reconstruct` maps a (1, 3, T, H, W) clip to its reconstruction."""
    psnr, ssim, color, seconds = [], [], [], 0.0
    first = next(iter(clips.values()))
    reconstruct(first[:, :, :1 + ratio])  # warm-up, not timed
    for x in clips.values():
        t0 = time.perf_counter()
        rec = reconstruct(x).clamp(-1, 1)
        seconds += time.perf_counter() - t0
        if not torch.isfinite(rec).all():
            raise ValueError(f"{name}: the reconstruction is not finite")
        psnr.append(psnr_per_frame(x, rec)[0].tolist())
        ssim.append(ssim_per_frame(x, rec)[0].mean().item())
        color.append(((x - rec).mean(dim=(0, 2, 3, 4)).abs() * 127.5).tolist())
    frames = sum(x.shape[2] for x in clips.values())
    groups = group_position_stats(psnr, ratio)
    per_channel = np.mean(color, axis=0)
    return {"name": name, "params_m": params / 1e6, "fps": frames / seconds,
            "psnr": float(np.mean([v for p in psnr for v in p])), "ssim": float(np.mean(ssim)),
            "first_vs_rest_gap": groups["first_vs_rest_gap"],
            "psnr_by_position": groups["per_position"],
            "color_error": [float(v) for v in per_channel],
            "psnr_by_clip": {k: float(np.mean(p)) for k, p in zip(clips, psnr, strict=True)}}


def markdown(rows: list[dict], ratio: int = 4) -> str:
    """The table: one line per row of `evaluate`."""
    pos = " | ".join(f"pos {i}" for i in range(ratio))
    lines = [f"| model | params (M) | enc+dec fps | PSNR | SSIM | first-vs-rest gap (dB) | "
             f"{pos} | colour error R/G/B (of 255) |", "|---" * (7 + ratio) + "|"]
    for r in rows:
        by_pos = " | ".join("-" if v is None else f"{v:.2f}" for v in r["psnr_by_position"])
        gap = "-" if r["first_vs_rest_gap"] is None else f"{r['first_vs_rest_gap']:+.2f}"
        params = f"{r['params_m']:.2f}" if r["params_m"] else "-"
        color = "/".join(f"{v:.1f}" for v in r["color_error"])
        lines.append(f"| {r['name']} | {params} | {r['fps']:.1f} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.4f} | {gap} | {by_pos} | {color} |")
    return "\n".join(lines)

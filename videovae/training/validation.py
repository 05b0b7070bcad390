"""Validation during training: reconstruct fixed clips, write PSNR/SSIM JSON, an
(input | output) grid video and a TensorBoard image."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch

from ..io.atomic import write_json
from ..io.video import VideoWriter, tensor_to_frames
from ..metrics import mean_psnr_ssim


@torch.no_grad()
def validate(vae, clips, out_dir: Path, step: int, accelerator) -> dict:
    """Reconstruct the validation clips; write metrics JSON and an (input | output) grid video.

    Metrics that are not finite (a diverged model) are written as null with `"nonfinite":
    true`, so the JSON stays valid; the caller decides what that means for the run."""
    was_training = vae.training
    vae.eval()
    device = next(vae.parameters()).device
    psnrs, ssims, rows = [], [], []
    for x in clips:
        x = x.to(device)
        rec = vae(x).sample.clamp(-1, 1)
        psnr, ssim = mean_psnr_ssim(x, rec)
        psnrs.append(psnr)
        ssims.append(ssim)
        rows.append(torch.cat([x, rec], dim=4))
    vae.train(was_training)
    n = min(r.shape[2] for r in rows)
    grid = tensor_to_frames(torch.cat([r[:, :, :n] for r in rows], dim=3))
    out_dir.mkdir(parents=True, exist_ok=True)
    with VideoWriter(out_dir / f"step-{step:07d}.mp4", 8, grid.shape[1], grid.shape[2]) as wr:
        wr.write(grid)
    result = {"step": step, "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
              "psnr_per_clip": psnrs, "ssim_per_clip": ssims}
    result["nonfinite"] = not all(math.isfinite(v) for v in [*psnrs, *ssims])
    write_json(out_dir / f"step-{step:07d}.json", result)
    accelerator.log({"val/psnr": result["psnr"], "val/ssim": result["ssim"]}, step=step)
    with contextlib.suppress(Exception):  # the TensorBoard image is a nicety
        tb = accelerator.get_tracker("tensorboard", unwrap=True)
        tb.add_image("val/first_middle_last",
                     np.concatenate([grid[0], grid[n // 2], grid[-1]], axis=0), step,
                     dataformats="HWC")
    return result

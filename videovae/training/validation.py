"""Validation during training: reconstruct fixed clips, write PSNR/SSIM JSON, an
(input | output) grid video and a TensorBoard image."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from ..io.video import VideoWriter, tensor_to_frames
from ..metrics import mean_psnr_ssim


@torch.no_grad()
def validate(vae, clips, out_dir: Path, step: int, accelerator) -> dict:
    """Reconstruct the validation clips; write metrics JSON and an (input | output) grid video."""
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
    (out_dir / f"step-{step:07d}.json").write_text(json.dumps(result, indent=2))
    accelerator.log({"val/psnr": result["psnr"], "val/ssim": result["ssim"]}, step=step)
    with contextlib.suppress(Exception):  # the TensorBoard image is a nicety
        tb = accelerator.get_tracker("tensorboard", unwrap=True)
        tb.add_image("val/first_middle_last",
                     np.concatenate([grid[0], grid[n // 2], grid[-1]], axis=0), step,
                     dataformats="HWC")
    return result

"""`videovae learnability`: encode the same clips with each model (through the extraction code),
standardize each model's latents with its own per-channel statistics, run the probe with the
same seed and budget, and write REPORT.json, REPORT.md (table) and REPORT.png (curves)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import VideoVAEError
from ..extract import ExtractOptions, bucket_transform, run_extract
from ..io.atomic import atomic_output, write_json
from ..io.video import VideoReader, frames_to_tensor
from ..metrics import psnr_per_frame
from .probe import ProbeConfig, run_probe, standardize
from ..plots import plot_curves
from .report import markdown_table

logger = logging.getLogger(__name__)


def _names(model_dirs) -> list[str]:
    """Short unique names: folder names, numbered where they repeat."""
    names = []
    for d in model_dirs:
        base, name, k = Path(d).name or "model", Path(d).name or "model", 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _clip_pixels(row: dict, size) -> torch.Tensor:
    frames = VideoReader(row["source"]).read_frames(list(range(row["start"], row["stop"])))
    return bucket_transform(size)(frames_to_tensor(frames))


def probe_model(model_dir, data_path, work_dir, cfg: ProbeConfig, *, frames: int,
                resolution: int, clips: int, val_fraction: float, device=None,
                progress: bool = True, name: str = "model") -> dict:
    """Extract (or reuse) one model's latents of the data and probe them."""
    from ..data.latent_dataset import LatentDataset
    from ..models.registry import load_model

    opts = ExtractOptions(window_frames=frames, sizes=[(resolution, resolution)])
    run_extract(model_dir, data_path, work_dir, opts, progress=False)
    ds = LatentDataset(work_dir)
    rows = ds.rows[:clips]
    n_val = max(1, round(len(rows) * val_fraction))
    if len(rows) - n_val < 1:
        raise VideoVAEError(f"{data_path} gives {len(rows)} clips of {frames} frames; the probe "
                            "needs at least 2 (use more or longer videos, or fewer frames)")
    z = torch.stack([ds[i]["latents"] for i in range(len(rows))])
    (train, val), (mean, std) = standardize(z[:-n_val], z[-n_val:])
    vae = load_model(model_dir, device)
    dev = next(vae.parameters()).device
    size = (resolution, resolution)
    pixels = torch.cat([_clip_pixels(r, size) for r in rows[-n_val:]]).to(dev)

    @torch.no_grad()
    def decode(zs):
        raw = zs.to(dev) * std.to(dev) + mean.to(dev)
        return torch.cat([vae.decode(raw[i:i + 1], num_frames=frames).sample
                          for i in range(len(raw))])

    recon = psnr_per_frame(pixels, decode(val).clamp(-1, 1)).mean().item()
    bar = tqdm(total=cfg.steps, desc=f"probe {name}", disable=not progress,
               leave=False)
    result = run_probe(train.to(dev), val.to(dev), cfg, decode, pixels,
                       progress=lambda step: bar.update(1))
    bar.close()
    return {"model": str(model_dir), "arch": vae.arch, "latent_shape": list(z.shape[1:]),
            "recon_psnr": recon, "clips_train": len(rows) - n_val, "clips_val": n_val,
            "latents_mean": mean.flatten().tolist(), "latents_std": std.flatten().tolist(),
            **result}


def learnability(model_dirs, data_path, out_path, cfg: ProbeConfig, *, frames: int = 9,
                 resolution: int = 64, clips: int = 64, val_fraction: float = 0.25,
                 device=None, overwrite: bool = False, progress: bool = True,
                 names: list[str] | None = None) -> dict:
    """Probe every model on the same clips; write the JSON report, its table and its plot.
    Models are named by `names`, or by their folder names."""
    out_path = Path(out_path)
    outputs = [out_path, out_path.with_suffix(".md"), out_path.with_suffix(".png")]
    work = out_path.parent / f"{out_path.stem}_latents"
    results = {}
    names = names or _names(model_dirs)
    if len(set(names)) != len(model_dirs):
        raise VideoVAEError(f"need one distinct name per model, got {names}")
    for name, model_dir in zip(names, model_dirs):
        logger.info("probing %s", model_dir)
        results[name] = probe_model(model_dir, data_path, work / name, cfg, frames=frames,
                                    resolution=resolution, clips=clips,
                                    val_fraction=val_fraction, device=device, progress=progress,
                                    name=name)
    report = {"data": str(data_path), "frames": frames, "resolution": resolution,
              "probe": vars(cfg), "models": results}
    write_json(outputs[0], report, overwrite=overwrite)  # strict: a NaN loss becomes null
    with atomic_output(outputs[1], overwrite=overwrite) as tmp:
        tmp.write_text(markdown_table(results))
    with atomic_output(outputs[2], overwrite=overwrite) as tmp:
        plot_curves({n: r["curve"] for n, r in results.items()}, tmp)  # tmp ends in .png
    return report

"""`videovae learnability`: encode the same clips with each model (through the extraction code),
standardize each model's latents with its own per-channel statistics, run the probe with the
same seed and budget, and write REPORT.json, REPORT.md (table) and REPORT.png (curves).

Each model's latents are kept in REPORT_latents/<key>, where the key is a hash of the model's
identity (config and weights) and of what was extracted (the data's file list, frames,
resolution): never a path component, so a model named `..` or two models in folders of the same
name cannot share or escape that folder, and a rerun reuses only latents of the same model."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import VideoVAEError
from ..extract import ExtractOptions, bucket_transform, data_identity, extract_with
from ..io.atomic import atomic_output, check_distinct_paths, check_output_path, write_json
from ..io.latent_file import config_hash, weights_hash
from ..io.listing import MEDIA_SUFFIXES, list_files
from ..io.video import VideoReader, frames_to_tensor
from ..metrics import psnr_per_frame
from ..plots import plot_curves
from .probe import ProbeConfig, run_probe, standardize
from .report import markdown_table

logger = logging.getLogger(__name__)


def report_outputs(out_path) -> list[Path]:
    """The report JSON, its table and its plot (named after the JSON)."""
    out_path = Path(out_path)
    return [out_path, out_path.with_suffix(".md"), out_path.with_suffix(".png")]


def latents_folder(out_path) -> Path:
    """Where the models' latents are kept (a cache a rerun reuses)."""
    out_path = Path(out_path)
    return out_path.parent / f"{out_path.stem}_latents"


def check_outputs(out_path, overwrite: bool = False) -> None:
    """Every output name, before any work: distinct (`-o learn.md` would be the table's name
    too), writable, and not existing unless `overwrite`."""
    outputs = report_outputs(out_path)
    labels = ["the report", "the report's table", "the report's plot"]
    if len({str(p) for p in outputs}) < len(outputs):
        raise VideoVAEError(f"-o {out_path}: the table and the plot are written beside the "
                            "report as .md and .png; name the report .json")
    check_distinct_paths(list(zip(labels, outputs, strict=True)))
    for path in outputs:
        check_output_path(path, overwrite=overwrite)
    work = latents_folder(out_path)
    if work.exists() and not work.is_dir():
        raise VideoVAEError(f"{work} (where the latents are kept) is a file; move it or name "
                            "the report otherwise")


def _shipped_name(model_dir) -> str | None:
    """`default` (or another shipped name) when `model_dir` is a shipped model's folder."""
    from ..weights import NAMES, default_model_dir, is_default_name

    if is_default_name(str(model_dir)) and not Path(str(model_dir)).is_dir():
        return str(model_dir)
    real = Path(model_dir).resolve()
    for name in NAMES:
        try:
            if default_model_dir(name).resolve() == real:
                return name
        except VideoVAEError:  # not installed
            continue
    return None


def _names(model_dirs) -> list[str]:
    """Short unique names: a shipped model's name (`default`), else the folder's own name (of
    the resolved folder: `..` is named after the folder it is), numbered where they repeat."""
    names = []
    for d in model_dirs:
        base = _shipped_name(d) or Path(d).resolve().name or "model"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _clip_pixels(row: dict, size) -> torch.Tensor:
    frames = VideoReader(row["source"]).read_frames(list(range(row["start"], row["stop"])))
    return bucket_transform(size)(frames_to_tensor(frames))


def work_key(vae, data: dict, frames: int, resolution: int) -> str:
    """The latents folder's name for one model: its identity and what is extracted."""
    blob = json.dumps({"config_hash": config_hash(vae), "weights_hash": weights_hash(vae),
                       "data": data, "frames": frames, "resolution": resolution},
                      sort_keys=True)
    return f"{vae.arch}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def probe_model(model_dir, data_path, work_root, cfg: ProbeConfig, *, frames: int,
                resolution: int, clips: int, val_fraction: float, device=None,
                progress: bool = True, name: str = "model") -> dict:
    """Extract (or reuse) one model's latents of the data under `work_root` and probe them."""
    from ..data.latent_dataset import LatentDataset
    from ..models import load_model

    vae = load_model(model_dir, device)
    dev = next(vae.parameters()).device
    data = data_identity(data_path, list_files(data_path, MEDIA_SUFFIXES))
    work_dir = Path(work_root) / work_key(vae, data, frames, resolution)
    logger.info("%s: latents in %s", name, work_dir)
    opts = ExtractOptions(window_frames=frames, sizes=[(resolution, resolution)])
    extract_with(vae, data_path, work_dir, opts, progress=False)
    ds = LatentDataset(work_dir)
    rows = ds.rows[:clips]
    if len(rows) < clips:
        logger.warning("%s: %s gives %d clips of %d frames, fewer than the %d asked: the probe "
                       "uses %d", name, data_path, len(rows), frames, clips, len(rows))
    n_val = max(1, round(len(rows) * val_fraction))
    if len(rows) - n_val < 1:
        raise VideoVAEError(f"{data_path} gives {len(rows)} clips of {frames} frames; the probe "
                            "needs at least 2 (use more or longer videos, or fewer frames)")
    z = torch.stack([ds[i]["latents"] for i in range(len(rows))])
    (train, val), (mean, std) = standardize(z[:-n_val], z[-n_val:])
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
            "recon_psnr": recon, "clips_asked": clips, "clips_used": len(rows),
            "clips_train": len(rows) - n_val, "clips_val": n_val,
            "latents": str(work_dir),
            "latents_mean": mean.flatten().tolist(), "latents_std": std.flatten().tolist(),
            **result}


def learnability(model_dirs, data_path, out_path, cfg: ProbeConfig, *, frames: int = 9,
                 resolution: int = 64, clips: int = 64, val_fraction: float = 0.25,
                 device=None, overwrite: bool = False, progress: bool = True,
                 names: list[str] | None = None) -> dict:
    """Probe every model on the same clips; write the JSON report, its table and its plot.
    Models are named by `names`, or by their folder names (shipped models by their names).
    Every output name is checked before any work."""
    out_path = Path(out_path)
    check_outputs(out_path, overwrite)
    outputs = report_outputs(out_path)
    names = names or _names(model_dirs)
    if len(set(names)) != len(model_dirs):
        raise VideoVAEError(f"need one distinct name per model, got {names}")
    results = {}
    for name, model_dir in zip(names, model_dirs, strict=True):
        logger.info("probing %s (%s)", name, model_dir)
        results[name] = probe_model(model_dir, data_path, latents_folder(out_path), cfg,
                                    frames=frames, resolution=resolution, clips=clips,
                                    val_fraction=val_fraction, device=device, progress=progress,
                                    name=name)
    report = {"data": str(data_path), "frames": frames, "resolution": resolution,
              "clips": clips, "probe": vars(cfg), "models": results}
    write_json(outputs[0], report, overwrite=overwrite)  # strict: a NaN loss becomes null
    with atomic_output(outputs[1], overwrite=overwrite) as tmp:
        tmp.write_text(markdown_table(results))
    with atomic_output(outputs[2], overwrite=overwrite) as tmp:
        plot_curves({n: r["curve"] for n, r in results.items()}, tmp)  # tmp ends in .png
    return report

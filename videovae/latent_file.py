"""Latent files: safetensors with tensor `latents` (Z, T', h, w) (or batched) and string metadata
that lets `decode` restore frame count, size and fps and refuse latents of another model.

Normalization (`normalized: true`), as diffusion models consume latents:
    with latents_mean/std:  (z - mean) / std * scaling_factor
    otherwise:              (z - shift_factor) * scaling_factor      (shift 0 when unset)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "videovae-latents-v1"
REQUIRED = ("format", "num_frames", "fps", "height", "width", "config_hash", "normalized")
# config keys that change what the latents mean; the normalization constants are stored apart
_VOLATILE = {"_diffusers_version", "_name_or_path", "_class_name", "_use_default_values",
             "scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast"}


class LatentFileError(ValueError):
    """A latent file that is missing, incomplete, or from another model."""


def config_hash(config) -> str:
    """Hash of the model's architecture config (not of its latent normalization constants)."""
    items = {k: v for k, v in dict(config).items() if k not in _VOLATILE}
    blob = json.dumps(items, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _stats(config, z):
    shape = (1, -1) + (1,) * (z.ndim - 2)
    mean = torch.tensor(config["latents_mean"], dtype=z.dtype, device=z.device).view(shape)
    std = torch.tensor(config["latents_std"], dtype=z.dtype, device=z.device).view(shape)
    return mean, std


def normalize_latents(z: torch.Tensor, config) -> torch.Tensor:
    """Raw (B, Z, ...) latents -> what a diffusion model is trained on."""
    config = dict(config)
    scale = config.get("scaling_factor") or 1.0
    if config.get("latents_mean") is not None and config.get("latents_std") is not None:
        mean, std = _stats(config, z)
        return (z - mean) / std * scale
    return (z - (config.get("shift_factor") or 0.0)) * scale


def denormalize_latents(z: torch.Tensor, config) -> torch.Tensor:
    """Inverse of `normalize_latents`."""
    config = dict(config)
    scale = config.get("scaling_factor") or 1.0
    if config.get("latents_mean") is not None and config.get("latents_std") is not None:
        mean, std = _stats(config, z)
        return z / scale * std + mean
    return z / scale + (config.get("shift_factor") or 0.0)


def save_latents(path, latents: torch.Tensor, config, *, num_frames: int, fps: float,
                 height: int, width: int, normalized: bool, extra: dict | None = None) -> None:
    """Write latents (unbatched (Z, T', h, w) or batched) with their metadata."""
    config = dict(config)
    meta = {
        "format": FORMAT,
        "num_frames": str(int(num_frames)),
        "fps": repr(float(fps)),
        "height": str(int(height)),
        "width": str(int(width)),
        "padded_frames": str(int(1 + config["temporal_compression_ratio"] *
                                 (latents.shape[-3] - 1) - num_frames)),
        "padded_height": str(int(latents.shape[-2] * config["spatial_compression_ratio"] -
                                 height)),
        "padded_width": str(int(latents.shape[-1] * config["spatial_compression_ratio"] -
                                width)),
        "config_hash": config_hash(config),
        "normalized": "true" if normalized else "false",
        "scaling_factor": json.dumps(config.get("scaling_factor")),
        "shift_factor": json.dumps(config.get("shift_factor")),
        "latents_mean": json.dumps(config.get("latents_mean")),
        "latents_std": json.dumps(config.get("latents_std")),
    }
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    save_file({"latents": latents.detach().to("cpu", torch.float32).contiguous()}, str(path),
              metadata=meta)


def load_latents(path) -> tuple[torch.Tensor, dict]:
    """Read latents and metadata (numbers parsed); errors name what is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latent file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "latents" not in f.keys():
                raise LatentFileError(f"{path} has no 'latents' tensor")
            latents = f.get_tensor("latents")
    except LatentFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise LatentFileError(f"cannot read {path} as a safetensors latent file: {e}") from e
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise LatentFileError(f"{path} lacks latent metadata: {', '.join(missing)} "
                              "(was it written by `videovae encode`?)")
    if meta["format"] != FORMAT:
        raise LatentFileError(f"{path}: unknown latent format {meta['format']!r}")
    if latents.ndim not in (4, 5):
        raise LatentFileError(f"{path}: latents must be (Z, T', h, w) or batched, got "
                              f"{tuple(latents.shape)}")
    parsed = dict(meta)
    for k in ("num_frames", "height", "width", "padded_frames", "padded_height", "padded_width"):
        if k in meta:
            parsed[k] = int(meta[k])
    parsed["fps"] = float(meta["fps"])
    parsed["normalized"] = meta["normalized"] == "true"
    for k in ("scaling_factor", "shift_factor", "latents_mean", "latents_std"):
        if k in meta:
            parsed[k] = json.loads(meta[k])
    return latents, parsed


def check_compatible(meta: dict, config, path="latents") -> None:
    """Refuse latents written by a model with a different architecture config."""
    mine = config_hash(config)
    if meta["config_hash"] != mine:
        raise LatentFileError(f"{path} was made by a different model (config hash "
                              f"{meta['config_hash']}, this model's is {mine})")

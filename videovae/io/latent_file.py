"""Latent files: safetensors with tensor `latents` (Z, T', h, w) (or batched) and string metadata
that lets `decode` restore frame count, size and fps and refuse latents of another model.
`normalized: true` means `videovae.latents.normalize_latents` was applied, with the constants
stored beside it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import LatentFileError
from ..latents import ABSORB_KEY
from ..models.frames import padded_frames
from ..models.streaming import PIPELINE_CONFIG_KEYS

FORMAT = "videovae-latents-v1"
REQUIRED = ("format", "num_frames", "fps", "height", "width", "config_hash", "normalized")
# config keys that change what the latents mean; the normalization constants are stored apart
_VOLATILE = {"_diffusers_version", "_name_or_path", "_class_name", "_use_default_values",
             "scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast",
             *PIPELINE_CONFIG_KEYS}  # the last: names for diffusers pipelines, derived
_NORMALIZATION = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", ABSORB_KEY)


def config_hash(model) -> str:
    """Hash of a model's class and architecture config (not of its latent normalization
    constants), so two families never share a hash."""
    items = {k: v for k, v in dict(model.config).items() if k not in _VOLATILE}
    if not items.get(ABSORB_KEY):  # absorbing changes what encode returns; off is the default
        items.pop(ABSORB_KEY, None)
    items["_class_name"] = type(model).__name__
    blob = json.dumps(items, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_latents(path, latents: torch.Tensor, model, *, num_frames: int, fps: float,
                 height: int, width: int, normalized: bool, extra: dict | None = None) -> None:
    """Write latents (unbatched (Z, T', h, w) or batched) of `model` with their metadata."""
    config = dict(model.config)
    meta = {
        "format": FORMAT,
        "num_frames": str(int(num_frames)),
        "fps": repr(float(fps)),
        "height": str(int(height)),
        "width": str(int(width)),
        "padded_frames": str(padded_frames(num_frames, config["temporal_compression_ratio"])),
        "padded_height": str(int(latents.shape[-2] * config["spatial_compression_ratio"] -
                                 height)),
        "padded_width": str(int(latents.shape[-1] * config["spatial_compression_ratio"] -
                                width)),
        "config_hash": config_hash(model),
        "normalized": "true" if normalized else "false",
        **{k: json.dumps(config.get(k)) for k in _NORMALIZATION},
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
    for k in _NORMALIZATION:
        if k in meta:
            parsed[k] = json.loads(meta[k])
    return latents, parsed


def check_compatible(meta: dict, model, path="latents") -> None:
    """Refuse latents written by a model of another family or architecture config."""
    mine = config_hash(model)
    if meta["config_hash"] != mine:
        raise LatentFileError(f"{path} was made by a different model (config hash "
                              f"{meta['config_hash']}, this model's is {mine})")

"""Latent files: safetensors with tensor `latents` (Z, T', h, w) (or batched) and string metadata
that lets `decode` restore frame count, size, fps and sample aspect ratio, and refuse latents of
another model or metadata that does not fit them.
`normalized: true` means `videovae.latents.normalize_latents` was applied, with the constants
stored beside it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import LatentFileError
from ..latents import ABSORB_KEY
from ..models.frames import frame_counts_for, num_latent_frames, padded_frames
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
                 height: int, width: int, normalized: bool, extra: dict | None = None,
                 sample_aspect_ratio: tuple[int, int] | None = None) -> None:
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
    if sample_aspect_ratio is not None:
        meta["sample_aspect_ratio"] = f"{sample_aspect_ratio[0]}:{sample_aspect_ratio[1]}"
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
            parsed[k] = _meta_int(path, meta, k, minimum=0 if k.startswith("padded") else 1)
    parsed["fps"] = _meta_float(path, meta, "fps")
    if meta["normalized"] not in ("true", "false"):
        raise LatentFileError(f"{path}: metadata normalized={meta['normalized']!r} must be "
                              "'true' or 'false'")
    parsed["normalized"] = meta["normalized"] == "true"
    for k in _NORMALIZATION:
        if k in meta:
            try:
                parsed[k] = json.loads(meta[k])
            except json.JSONDecodeError:
                raise LatentFileError(f"{path}: metadata {k}={meta[k]!r} is not JSON") from None
    if "sample_aspect_ratio" in meta:
        parsed["sample_aspect_ratio"] = _meta_ratio(path, meta["sample_aspect_ratio"])
    return latents, parsed


def _meta_int(path, meta: dict, key: str, minimum: int) -> int:
    raw = meta[key]
    try:
        value = int(raw)
    except ValueError:
        raise LatentFileError(f"{path}: metadata {key}={raw!r} is not an integer") from None
    if value < minimum:
        raise LatentFileError(f"{path}: metadata {key}={value} must be >= {minimum}")
    return value


def _meta_float(path, meta: dict, key: str) -> float:
    raw = meta[key]
    try:
        value = float(raw)
    except ValueError:
        raise LatentFileError(f"{path}: metadata {key}={raw!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise LatentFileError(f"{path}: metadata {key}={raw} must be a positive number")
    return value


def _meta_ratio(path, raw: str) -> tuple[int, int]:
    try:
        num, den = (int(v) for v in raw.split(":"))
    except ValueError:
        num = den = 0
    if num <= 0 or den <= 0:
        raise LatentFileError(f"{path}: metadata sample_aspect_ratio={raw!r} is not N:D")
    return num, den


def check_latents(latents: torch.Tensor, meta: dict, model, path="latents") -> torch.Tensor:
    """One unbatched (Z, T', h, w) latent tensor of `path` that `model` can decode into the
    metadata's frame count and size, with finite values; errors name the file and the field."""
    check_compatible(meta, model, path)
    if latents.ndim == 5:
        if latents.shape[0] != 1:
            raise LatentFileError(f"{path} holds a batch of {latents.shape[0]} videos; decode "
                                  "them one file at a time")
        latents = latents[0]
    zc = model.config.latent_channels
    if latents.shape[0] != zc:
        raise LatentFileError(f"{path} has {latents.shape[0]} latent channels, the model {zc}")
    t_ratio, s_ratio = model.temporal_compression_ratio, model.spatial_compression_ratio
    n = meta["num_frames"]
    if latents.shape[1] != num_latent_frames(n, t_ratio):
        raise LatentFileError(f"{path}: metadata num_frames={n} does not fit its "
                              f"{latents.shape[1]} latent frames (they decode to "
                              f"{_span(frame_counts_for(latents.shape[1], t_ratio))} frames)")
    for key, size in (("height", latents.shape[2]), ("width", latents.shape[3])):
        fits = range(max(1, (size - 1) * s_ratio + 1), size * s_ratio + 1)
        if meta[key] not in fits:
            raise LatentFileError(f"{path}: metadata {key}={meta[key]} does not fit latents of "
                                  f"{key} {size} (they decode to {_span(fits)} pixels)")
    bad = ~torch.isfinite(latents)
    if bad.any():
        nan = int(torch.isnan(latents).sum())
        raise LatentFileError(f"{path}: latents hold {nan} NaN and {int(bad.sum()) - nan} "
                              "infinite values; decoding them would give garbage")
    return latents


def _span(r: range) -> str:
    return f"{r.start}..{r.stop - 1}" if len(r) > 1 else str(r.start)


def check_compatible(meta: dict, model, path="latents") -> None:
    """Refuse latents written by a model of another family or architecture config."""
    mine = config_hash(model)
    if meta["config_hash"] != mine:
        raise LatentFileError(f"{path} was made by a different model (config hash "
                              f"{meta['config_hash']}, this model's is {mine})")

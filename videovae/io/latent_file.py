"""Latent files: safetensors with tensor `latents` (Z, T', h, w) (or batched) and string metadata
that lets `decode` restore frame count, size, fps and sample aspect ratio, and refuse latents of
another model (config hash: another architecture; weights hash: other weights of the same one)
or metadata that does not fit them. Every field is validated on reading, with errors naming the
file and the field (values repr-escaped: no terminal escape sequence passes through). The header
is written with sorted keys, so equal latents and metadata give byte-identical files.
`normalized: true` means `videovae.latents.normalize_latents` was applied, with the constants
stored beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from ..config import PIPELINE_CONFIG_KEYS
from ..errors import LatentFileError, one_line
from ..frames import frame_counts_for, num_latent_frames, padded_frames
from ..latents import ABSORB_KEY

FORMAT = "videovae-latents-v1"
REQUIRED = ("format", "num_frames", "fps", "height", "width", "config_hash", "normalized")
# config keys that change what the latents mean; the normalization constants are stored apart
_VOLATILE = {"_diffusers_version", "_name_or_path", "_class_name", "_use_default_values",
             "scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast",
             *PIPELINE_CONFIG_KEYS}  # the last: names for diffusers pipelines, derived
_NORMALIZATION = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", ABSORB_KEY)
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")  # safetensors' names
_WEIGHT_DTYPES = ("float64", "float32", "bfloat16", "float16")
FPS_RANGE = (1e-6, 1e4)  # one frame in about 12 days .. 10,000 frames per second
SAR_RANGE = (0.01, 100.0)  # pixel aspect ratios (H.264 stores N and D in 16 bits)

logger = logging.getLogger(__name__)


def config_hash(model) -> str:
    """Hash of a model's class and architecture config (not of its latent normalization
    constants), so two families never share a hash."""
    items = {k: v for k, v in dict(model.config).items() if k not in _VOLATILE}
    if not items.get(ABSORB_KEY):  # absorbing changes what encode returns; off is the default
        items.pop(ABSORB_KEY, None)
    items["_class_name"] = type(model).__name__
    blob = json.dumps(items, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def weights_hash(model) -> str:
    """SHA-256 (hex) of a model's weights: every state-dict tensor in name order, with its name,
    shape and values rounded to bfloat16, so the same weights loaded in fp32 or bf16 hash alike
    (fp16 rounds differently). Cached on the model until one of its tensors changes."""
    state = model.state_dict()
    key = tuple((name, t.data_ptr(), t._version, t.dtype, str(t.device))
                for name, t in state.items())
    cached = getattr(model, "_videovae_weights_hash", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.bfloat16).view(torch.int16)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.contiguous().numpy().tobytes())
    digest = h.hexdigest()
    model._videovae_weights_hash = (key, digest)
    return digest


def _dtype_name(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def save_latents(path, latents: torch.Tensor, model, *, num_frames: int, fps: float,
                 height: int, width: int, normalized: bool, extra: dict | None = None,
                 sample_aspect_ratio: tuple[int, int] | None = None) -> None:
    """Write latents (unbatched (Z, T', h, w) or batched) of `model` with their metadata, in a
    fixed (sorted) order: equal latents and metadata give equal bytes."""
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
        "weights_hash": weights_hash(model),
        "weights_dtype": _dtype_name(model),
        "normalized": "true" if normalized else "false",
        **{k: json.dumps(config.get(k)) for k in _NORMALIZATION},
    }
    if sample_aspect_ratio is not None:
        meta["sample_aspect_ratio"] = f"{sample_aspect_ratio[0]}:{sample_aspect_ratio[1]}"
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    tensors = {"latents": latents.detach().to("cpu", torch.float32).contiguous()}
    Path(path).write_bytes(_sorted_header(save(tensors, metadata=meta)))


def _sorted_header(blob: bytes) -> bytes:
    """A safetensors file with its JSON header rewritten with sorted keys (safetensors orders
    the metadata by a per-process hash): same tensors and offsets, header padded to 8 bytes."""
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":"))
    header = header.encode() + b" " * (-len(header.encode()) % 8)
    return len(header).to_bytes(8, "little") + header + blob[8 + n:]


# ----------------------------------------------------------------------------------------------
# Reading and checking


def read_latent_metadata(path) -> dict:
    """The checked metadata of a latent file (numbers parsed), without reading the latents:
    every field is validated, and errors name the file and the field (values repr-escaped)."""
    return _read(path, with_tensor=False)[1]


def load_latents(path) -> tuple[torch.Tensor, dict]:
    """Read latents and metadata (numbers parsed); errors name what is missing or wrong."""
    return _read(path, with_tensor=True)


def _read(path, with_tensor: bool):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latent file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "latents" not in f.keys():
                raise LatentFileError(f"{path} has no 'latents' tensor")
            view = f.get_slice("latents")
            shape, dtype = tuple(view.get_shape()), view.get_dtype()
            _check_tensor(path, shape, dtype)
            parsed = parse_metadata(path, meta, channels=shape[-4])
            latents = f.get_tensor("latents") if with_tensor else None
    except LatentFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise LatentFileError(f"cannot read {path} as a safetensors latent file: "
                              f"{one_line(e)}") from e
    return latents, parsed


def _check_tensor(path, shape: tuple, dtype: str) -> None:
    if dtype not in _FLOAT_DTYPES:
        raise LatentFileError(f"{path}: latents are {dtype!r}, not floating point "
                              f"({', '.join(_FLOAT_DTYPES)}); not a latent file to decode")
    if len(shape) not in (4, 5):
        raise LatentFileError(f"{path}: latents must be (Z, T', h, w) or batched, got {shape}")


def parse_metadata(path, meta: dict, channels: int) -> dict:
    """Every field of a latent file's metadata checked and parsed (`channels`: the latents'
    channel count, which per-channel statistics must match)."""
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise LatentFileError(f"{path} lacks latent metadata: {', '.join(missing)} "
                              "(was it written by `videovae encode`?)")
    if meta["format"] != FORMAT:
        raise LatentFileError(f"{path}: unknown latent format {meta['format']!r}")
    parsed = dict(meta)
    for k in ("num_frames", "height", "width", "padded_frames", "padded_height", "padded_width"):
        if k in meta:
            parsed[k] = _meta_int(path, meta, k, minimum=0 if k.startswith("padded") else 1)
    parsed["fps"] = _meta_fps(path, meta["fps"])
    for k, digits in (("config_hash", 16), ("weights_hash", 64)):
        if k in meta and not re.fullmatch(f"[0-9a-f]{{{digits}}}", meta[k]):
            raise LatentFileError(f"{path}: metadata {k}={meta[k]!r} is not a hash of "
                                  f"{digits} hex digits")
    if meta.get("weights_dtype", "float32") not in _WEIGHT_DTYPES:
        raise LatentFileError(f"{path}: metadata weights_dtype={meta['weights_dtype']!r} is not "
                              f"one of {', '.join(_WEIGHT_DTYPES)}")
    if meta["normalized"] not in ("true", "false"):
        raise LatentFileError(f"{path}: metadata normalized={meta['normalized']!r} must be "
                              "'true' or 'false'")
    parsed["normalized"] = meta["normalized"] == "true"
    parsed.update(_normalization(path, meta, channels, parsed["normalized"]))
    if "sample_aspect_ratio" in meta:
        parsed["sample_aspect_ratio"] = _meta_ratio(path, meta["sample_aspect_ratio"])
    return parsed


def _meta_int(path, meta: dict, key: str, minimum: int) -> int:
    raw = meta[key]
    try:
        value = int(raw)
    except ValueError:
        raise LatentFileError(f"{path}: metadata {key}={raw!r} is not an integer") from None
    if value < minimum:
        raise LatentFileError(f"{path}: metadata {key}={value} must be >= {minimum}")
    return value


def _meta_fps(path, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise LatentFileError(f"{path}: metadata fps={raw!r} is not a number") from None
    lo, hi = FPS_RANGE
    if not (math.isfinite(value) and lo <= value <= hi):
        raise LatentFileError(f"{path}: metadata fps={value:g} must be a positive number of "
                              f"frames per second in {lo:g}..{hi:g}")
    return value


def _meta_ratio(path, raw: str) -> tuple[int, int]:
    try:
        num, den = (int(v) for v in raw.split(":"))
    except ValueError:
        raise LatentFileError(f"{path}: metadata sample_aspect_ratio={raw!r} is not N:D") from None
    lo, hi = SAR_RANGE
    if not (0 < num <= 65535 and 0 < den <= 65535 and lo <= num / den <= hi):
        raise LatentFileError(f"{path}: metadata sample_aspect_ratio={raw!r} must be N:D with "
                              f"N and D in 1..65535 and N/D in {lo:g}..{hi:g}")
    return num, den


def _meta_json(path, meta: dict, key: str):
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise LatentFileError(f"{path}: metadata {key}={meta[key]!r} is not JSON") from None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _normalization(path, meta: dict, channels: int, normalized: bool) -> dict:
    """The normalization constants: null or finite numbers (per-channel lists of `channels`
    positive stds); a normalized file's scaling_factor cannot be 0."""
    out = {k: _meta_json(path, meta, k) for k in _NORMALIZATION if k in meta}
    for k in ("scaling_factor", "shift_factor"):
        if out.get(k) is not None and not _is_number(out[k]):
            raise LatentFileError(f"{path}: metadata {k}={meta[k]!r} must be a finite number "
                                  "or null")
    for k in ("latents_mean", "latents_std"):
        v = out.get(k)
        if v is None:
            continue
        if not (isinstance(v, list) and len(v) == channels and all(map(_is_number, v))):
            raise LatentFileError(f"{path}: metadata {k}={_short(meta[k])} must be a list of "
                                  f"{channels} finite numbers (one per latent channel) or null")
        if k == "latents_std" and min(v) <= 0:
            raise LatentFileError(f"{path}: metadata latents_std holds {min(v)!r}; a standard "
                                  "deviation must be > 0")
    if out.get(ABSORB_KEY) not in (None, True, False):
        raise LatentFileError(f"{path}: metadata {ABSORB_KEY}={meta[ABSORB_KEY]!r} must be "
                              "true, false or null")
    if normalized and out.get("scaling_factor") == 0:
        raise LatentFileError(f"{path}: metadata scaling_factor=0 in a normalized file: the "
                              "latents cannot be denormalized (a scaling factor is never 0)")
    return out


def _short(raw: str, n: int = 60) -> str:
    return repr(raw if len(raw) <= n else raw[:n] + "...")


def check_latents(latents: torch.Tensor, meta: dict, model, path="latents",
                  force: bool = False) -> torch.Tensor:
    """One unbatched (Z, T', h, w) latent tensor of `path` that `model` can decode into the
    metadata's frame count and size, with finite values; errors name the file and the field.
    Latents of other weights of the same architecture are refused unless `force`."""
    check_compatible(meta, model, path)
    check_weights(meta, model, path, force=force)
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
                              f"{meta['config_hash']!r}, this model's is {mine!r})")


def check_weights(meta: dict, model, path="latents", force: bool = False) -> None:
    """Refuse (unless `force`, then warn) latents whose recorded weights hash is not `model`'s:
    the same architecture with other weights (a fine-tuned copy, another training run) decodes
    them into garbage. Files written before the hash existed are decoded with a warning."""
    theirs = meta.get("weights_hash")
    if theirs is None:
        logger.warning("%s records no weights hash (written by an older videovae): cannot check "
                       "that this model's weights made it", path)
        return
    mine = weights_hash(model)
    if theirs == mine:
        return
    made_with, mine_dtype = meta.get("weights_dtype", "float32"), _dtype_name(model)
    dtype_note = (f"; it was encoded with {made_with} weights, this model is {mine_dtype}, and "
                  "fp16 rounding changes the hash" if made_with != mine_dtype and
                  "float16" in (made_with, mine_dtype) else "")
    msg = (f"{path} was made by other weights of this architecture (weights hash "
           f"{theirs[:12]}, this model's {mine[:12]}){dtype_note}")
    if not force:
        raise LatentFileError(f"{msg}; pass --force to decode it anyway")
    logger.warning("%s; decoding anyway (--force)", msg)

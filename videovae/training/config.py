"""The training config: YAML sections `model`, `data`, `loss`, `optim`, `train`.

Defaults live here (and, for `model`, in the model family's `__init__`; `model.arch` picks the
family, `cv` by default); a YAML file overrides them and `key=value` command-line arguments
override the file (`optim.lr=2e-4`, `train.max_steps=10`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

from ..config import apply_overrides, from_dict, load_yaml
from ..data import DataConfig
from ..errors import ConfigError
from ..models.registry import DEFAULT_ARCH, family_class
from .losses import LossConfig


@dataclass
class OptimConfig:
    lr: float = 1e-4  # autoencoder (and learned logvar)
    disc_lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_steps: int = 500  # linear warmup, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0  # max gradient norm (0: off)


@dataclass
class RunConfig:
    output_dir: str = "runs/videovae"
    # a new run (no resume_from) into a folder that holds a run (final/, checkpoints,
    # metrics.jsonl) is refused; True removes that run's files first (the folder's other files stay)
    overwrite: bool = False
    init_from_image_vae: str | None = None  # inflate this image VAE; kept frozen for reg losses
    image_vae_type: str | None = None  # sd | sdxl | sd3 | flux when the checkpoint does not say
    init_from_pretrained: str | None = None  # start from a video VAE folder (or "default")
    image_vae: str | None = None  # frozen image VAE for reg losses (default: init_from_image_vae)
    max_steps: int = 1000  # length of the schedule
    stop_at: int | None = None  # exit after this step with a checkpoint (time-limited jobs)
    grad_accum: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16 (weights stay fp32)
    seed: int = 0
    ema_decay: float = 0.999  # 0 disables EMA
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 3
    resume_from: str | None = None  # "latest" or a checkpoint-<step> folder
    max_nonfinite_steps: int = 25  # this many non-finite steps in a row end the run (0: never)
    log_every: int = 10
    val_every: int = 500  # 0: only at the end
    gradient_checkpointing: bool = False
    train_encoder: bool = True
    train_decoder: bool = True


@dataclass
class TrainConfig:
    model: dict = field(default_factory=dict)  # `arch` (cv) + that family's keyword arguments
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)


def split_model_config(model: dict, where: str = "model") -> tuple[str, dict]:
    """`model` section -> (arch, keyword arguments of that family), unknown keys rejected."""
    kwargs = dict(model)
    arch = kwargs.pop("arch", DEFAULT_ARCH)
    try:
        cls = family_class(arch)
    except ValueError as e:
        raise ConfigError(f"{where}.arch: {e}") from e
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in kwargs if k not in params or k == "self")
    if unknown:
        raise ConfigError(f"unknown model key(s) in {where} for arch {arch}: "
                          f"{', '.join(unknown)}")
    return arch, kwargs


def load_train_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    data = load_yaml(path) if path else {}
    apply_overrides(data, list(overrides))
    cfg = from_dict(TrainConfig, data)
    check_train_config(cfg)
    return cfg


# (field, lowest allowed value, whether the lowest is allowed, what 0 means where it is allowed)
_RANGES = {
    "train": [("max_steps", 1, True, ""), ("grad_accum", 1, True, ""),
              ("log_every", 1, True, ""), ("checkpoint_every", 0, True, " (0: off)"),
              ("checkpoints_total_limit", 0, True, " (0: keep all)"),
              ("val_every", 0, True, " (0: only at the end)"),
              ("max_nonfinite_steps", 0, True, " (0: never stop)"), ("seed", 0, True, ""),
              ("ema_decay", 0, True, " (0: off)")],
    "optim": [("lr", 0, False, ""), ("disc_lr", 0, False, ""), ("warmup_steps", 0, True, ""),
              ("min_lr_ratio", 0, True, ""), ("grad_clip", 0, True, " (0: off)"),
              ("weight_decay", 0, True, ""), ("eps", 0, False, "")],
    "data": [("num_workers", 0, True, ""), ("val_clips", 1, True, ""),
             ("val_num_frames", 1, True, "")],
}
_SOURCE_RANGES = [("num_frames", 1, True), ("batch_size", 1, True), ("weight", 0, True)]


def _check_min(name: str, value, low, inclusive: bool = True, note: str = "") -> None:
    ok = value >= low if inclusive else value > low
    if not ok:
        raise ConfigError(f"{name} must be {'>=' if inclusive else '>'} {low}{note}, "
                          f"got {value!r}")


def _check_sizes(name: str, value) -> None:
    """A resolution: one positive int, or a list of one or two."""
    sizes = value if isinstance(value, (list, tuple)) else [value]
    if not 1 <= len(sizes) <= 2 or any(s <= 0 for s in sizes):
        raise ConfigError(f"{name} must be a positive size (or [height, width]), got {value!r}")


def check_train_config(cfg: TrainConfig) -> None:
    """Every value in its range, before anything is built or created; errors name the field."""
    split_model_config(cfg.model)
    for section, fields in _RANGES.items():
        for name, low, inclusive, note in fields:
            value = getattr(getattr(cfg, section), name)
            _check_min(f"{section}.{name}", value, low, inclusive, note)
    run, optim = cfg.train, cfg.optim
    if run.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError("train.mixed_precision must be no, bf16 or fp16")
    if run.overwrite and run.resume_from:
        raise ConfigError("train.overwrite and train.resume_from both set: resume the run in "
                          "train.output_dir, or replace it")
    if run.stop_at is not None:
        _check_min("train.stop_at", run.stop_at, 1)
    if run.ema_decay >= 1:
        raise ConfigError(f"train.ema_decay must be < 1 (0: off), got {run.ema_decay!r}")
    if optim.min_lr_ratio > 1:
        raise ConfigError(f"optim.min_lr_ratio must be <= 1, got {optim.min_lr_ratio!r}")
    if len(optim.betas) != 2 or not all(0 <= b < 1 for b in optim.betas):
        raise ConfigError(f"optim.betas must be two values in [0, 1), got {optim.betas!r}")
    _check_data(cfg.data)


def _check_data(data) -> None:
    if not data.sources:
        raise ConfigError("data.sources is empty: name at least one source")
    _check_sizes("data.val_resolution", data.val_resolution)
    for i, src in enumerate(data.sources):
        where = f"data.sources[{i}]" + (f" ({src.name})" if src.name != "source" else "")
        for name, low, inclusive in _SOURCE_RANGES:
            _check_min(f"{where}.{name}", getattr(src, name), low, inclusive)
        _check_sizes(f"{where}.resolution", src.resolution)
        strides = src.frame_stride if isinstance(src.frame_stride, list) else [src.frame_stride]
        if not 1 <= len(strides) <= 2 or any(s < 1 for s in strides) or strides[0] > strides[-1]:
            raise ConfigError(f"{where}.frame_stride must be >= 1 (or [min, max]), got "
                              f"{src.frame_stride!r}")
        if src.type in ("video", "image") and not src.path:
            raise ConfigError(f"{where}.path is missing (a folder or manifest of {src.type}s)")


def check_data_paths(data) -> None:
    """Every data path exists (checked before a run builds anything or creates its folder)."""
    paths = [(f"data.sources[{i}].path", s.path) for i, s in enumerate(data.sources)]
    for name, path in [*paths, ("data.val_path", data.val_path)]:
        if path and not Path(path).exists():
            raise ConfigError(f"{name}: data path not found: {path}")

"""The training config: YAML sections `model`, `data`, `loss`, `optim`, `train`.

Defaults live here (and, for `model`, in the model family's `__init__`; `model.arch` picks the
family, `cv` by default); a YAML file overrides them and `key=value` command-line arguments
override the file (`optim.lr=2e-4`, `train.max_steps=10`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import inspect

from ..config import apply_overrides, from_dict, load_yaml
from ..data import DataConfig
from ..errors import ConfigError
from ..models.registry import family_class
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
    arch = kwargs.pop("arch", "cv")
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
    split_model_config(cfg.model)
    if cfg.train.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError("train.mixed_precision must be no, bf16 or fp16")
    if cfg.train.grad_accum < 1 or cfg.train.max_steps < 1:
        raise ConfigError("train.grad_accum and train.max_steps must be >= 1")
    if cfg.train.max_nonfinite_steps < 0:
        raise ConfigError("train.max_nonfinite_steps must be >= 0 (0: never stop)")
    return cfg

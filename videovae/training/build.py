"""Building what training needs from its config: the video VAE (from scratch, from a model
folder, or inflated from an image VAE that stays frozen for the latent regularization), after
checking that its training state fits in memory."""

from __future__ import annotations

import torch

from ..convert import inflate_from_model, load_image_vae
from ..errors import ConfigError, one_line
from ..models.registry import family_class, model_class_for
from ..runtime import available_memory
from ..weights import resolve_model
from .config import TrainConfig, split_model_config

# bytes per parameter while training in fp32: the weight, its gradient, AdamW's two moments
TRAIN_BYTES_PER_PARAM = 16
EMA_BYTES_PER_PARAM = 4


def count_parameters(arch: str, kwargs: dict) -> int:
    """Parameters of family `arch` built with `kwargs`, counted on the meta device (nothing is
    allocated, as diffusers does when it loads a model folder)."""
    try:
        with torch.device("meta"):
            model = family_class(arch)(**kwargs)
    except Exception as e:  # noqa: BLE001 - any bad setting: one line naming the section
        raise ConfigError(f"model: arch {arch} cannot be built with {kwargs}: "
                          f"{type(e).__name__}: {one_line(e)}") from e
    return sum(p.numel() for p in model.parameters())


def check_model_size(cfg: TrainConfig) -> None:
    """Refuse, before anything is allocated, a model built from the `model` section whose
    training state (weights, gradients, AdamW, EMA; fp32) does not fit in the free memory of the
    device it trains on. (Models started from a folder or an image VAE take their sizes from
    weights that exist.)"""
    run = cfg.train
    if run.init_from_image_vae or run.init_from_pretrained:
        return
    arch, kwargs = split_model_config(cfg.model)
    n = count_parameters(arch, kwargs)
    need = n * (TRAIN_BYTES_PER_PARAM + (EMA_BYTES_PER_PARAM if run.ema_decay > 0 else 0))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    free = available_memory(device)
    if free is not None and need > free:
        settings = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "its defaults"
        raise ConfigError(f"model ({settings}): {n / 1e9:.1f} G parameters need about "
                          f"{need / 2**30:.0f} GiB to train (fp32 weights, gradients, AdamW, "
                          f"EMA), {free / 2**30:.1f} GiB is free on {device.type}: choose a "
                          "smaller model.block_out_channels")


def build_models(cfg: TrainConfig):
    """The video VAE to train, and the frozen image VAE (or None)."""
    run = cfg.train
    arch, kwargs = split_model_config(cfg.model)
    if run.init_from_image_vae and run.init_from_pretrained:
        raise ConfigError("train.init_from_image_vae and train.init_from_pretrained both set: "
                          "start from one (train.image_vae names the frozen image VAE)")
    if run.image_vae and run.init_from_image_vae and run.image_vae != run.init_from_image_vae:
        raise ConfigError("train.image_vae differs from train.init_from_image_vae")
    image_vae = None
    image_path = run.image_vae or run.init_from_image_vae
    if image_path:
        image_vae, _ = load_image_vae(image_path, run.image_vae_type,
                                      kwargs.get("norm_num_groups"))
    if run.init_from_image_vae:
        vae = inflate_from_model(image_vae, arch, run.init_from_image_vae, **kwargs)
    elif run.init_from_pretrained:
        start = resolve_model(run.init_from_pretrained)
        cls = model_class_for(start)
        if "arch" in cfg.model and cls.arch != arch:
            raise ConfigError(f"model.arch={arch} but {run.init_from_pretrained} holds an "
                              f"arch {cls.arch} model")
        vae = cls.from_pretrained(str(start), torch_dtype=torch.float32, **kwargs)
    else:
        vae = family_class(arch)(**kwargs)
    vae.set_trainable(encoder=run.train_encoder, decoder=run.train_decoder)
    return vae, image_vae

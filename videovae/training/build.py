"""Building what training needs from its config: the video VAE (from scratch, from a model
folder, or inflated from an image VAE that stays frozen for the latent regularization)."""

from __future__ import annotations

import torch

from ..convert import inflate_from_model, load_image_vae
from ..errors import ConfigError
from ..models.registry import family_class, model_class_for
from ..weights import resolve_model
from .config import TrainConfig, split_model_config


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

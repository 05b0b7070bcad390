"""Image VAE checkpoints in, video VAE families out: reading diffusers folders and LDM single
files, and the per-family inflation rules (`INFLATERS`, the convert side of the family table)."""

from .checkpoints import load_image_vae, sd_vae_config
from .inflate import INFLATERS, inflate_from_model, inflate_image_vae

__all__ = ["INFLATERS", "load_image_vae", "sd_vae_config", "inflate_from_model",
           "inflate_image_vae"]

"""videovae: causal 3D video VAEs that inflate image VAEs, stream long videos exactly and train
with Accelerate."""

from . import convert  # noqa: F401  (registers the image-VAE inflaters with the model registry)
from .models import (AutoencoderKTC, DiagonalGaussianDistribution, VideoVAE, families,
                     frame_counts_for, load_model, num_latent_frames, pad_frames, pad_size,
                     pad_video)

__version__ = "0.1.0"

__all__ = ["VideoVAE", "AutoencoderKTC", "DiagonalGaussianDistribution", "load_model",
           "families", "num_latent_frames", "frame_counts_for", "pad_frames", "pad_size", "pad_video",
           "__version__"]

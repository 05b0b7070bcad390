"""Model families (one file each), their shared layers, streaming and tiling, and the registry
that loads any family's folder. Nothing here imports `videovae.convert`."""

from .autoencoder_cv import VideoVAE
from .autoencoder_ktc import AutoencoderKTC
from .distributions import DiagonalGaussianDistribution
from .frames import (frame_counts_for, num_decoded_frames, num_latent_frames, pad_frames,
                     pad_size, pad_video)
from .registry import families, family_class, load_model, model_class_for
from .streaming import StreamingAutoencoder

__all__ = ["VideoVAE", "AutoencoderKTC", "StreamingAutoencoder", "DiagonalGaussianDistribution", "families",
           "family_class", "load_model", "model_class_for", "num_latent_frames",
           "num_decoded_frames", "frame_counts_for", "pad_frames", "pad_size", "pad_video"]

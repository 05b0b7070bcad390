"""Model families (one file each, listed in `registry.FAMILIES`), their shared base (`base.py`:
streaming, tiling, checks) and layers, and loading any family's folder. Nothing here imports
`videovae.convert`, `videovae.io` or `videovae.data`."""

from ..frames import (
                      frame_counts_for,
                      num_decoded_frames,
                      num_latent_frames,
                      pad_frames,
                      pad_size,
                      pad_video,
)
from .autoencoder_cv import AutoencoderCV, VideoVAE
from .autoencoder_ktc import AutoencoderKTC
from .autoencoder_wan import AutoencoderWan
from .base import StreamingAutoencoder
from .distributions import DiagonalGaussianDistribution
from .registry import DEFAULT_ARCH, FAMILIES, families, family_class, load_model, model_class_for

__all__ = ["AutoencoderCV", "VideoVAE", "AutoencoderKTC", "AutoencoderWan", "StreamingAutoencoder",
           "DiagonalGaussianDistribution", "FAMILIES", "DEFAULT_ARCH", "families",
           "family_class", "load_model", "model_class_for", "num_latent_frames",
           "num_decoded_frames", "frame_counts_for", "pad_frames", "pad_size", "pad_video"]

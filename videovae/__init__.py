"""videovae: causal 3D video VAEs that inflate image VAEs, stream long videos exactly and train
with Accelerate."""

from .distributions import DiagonalGaussianDistribution
from .model import VideoVAE, num_latent_frames, pad_frames, pad_size, pad_video

__version__ = "0.1.0"

__all__ = ["VideoVAE", "DiagonalGaussianDistribution", "num_latent_frames", "pad_frames",
           "pad_size", "pad_video", "__version__"]

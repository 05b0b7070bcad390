"""videovae: causal 3D video VAEs that inflate image VAEs, stream long videos exactly and train
with Accelerate.

The public names are imported on first use (module `__getattr__`), so `videovae --help` and the
command line's one-line errors do not pay for importing torch and diffusers.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "AutoencoderCV": "videovae.models", "VideoVAE": "videovae.models",
    "AutoencoderKTC": "videovae.models", "AutoencoderWan": "videovae.models",
    "FAMILIES": "videovae.models",
    "DiagonalGaussianDistribution": "videovae.models",
    "load_model": "videovae.models", "families": "videovae.models",
    "family_class": "videovae.models", "StreamingAutoencoder": "videovae.models",
    "num_latent_frames": "videovae.models", "frame_counts_for": "videovae.models",
    "pad_frames": "videovae.models", "pad_size": "videovae.models", "pad_video": "videovae.models",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'videovae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])

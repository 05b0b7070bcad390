"""The family table (arch name -> model class), and loading any family's folder by the class
named in its config.json.

Adding a family: write its model file (`autoencoder_<arch>.py`, a `StreamingAutoencoder`
subclass with `arch = "<arch>"`), add it to `FAMILIES` below, add its converter or inflater to
`videovae.convert.INFLATERS` if it has one, and its test file
`tests/models/test_autoencoder_<arch>.py` (a `FamilyTests` subclass); `tests/test_family_table.py`
fails, naming what is missing, until all of them exist.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers.models.modeling_utils import ModelMixin

from ..config import read_model_config
from ..errors import ModelLoadError, one_line
from .autoencoder_cv import AutoencoderCV
from .autoencoder_ktc import AutoencoderKTC
from .autoencoder_wan import AutoencoderWan
from .base import StreamingAutoencoder

FAMILIES: dict[str, type[StreamingAutoencoder]] = {
    "cv": AutoencoderCV,  # CV-VAE: the SD VAE with causal 3D convs
    "ktc": AutoencoderKTC,  # IV-VAE: keyframe + temporal halves, group causal convs
    "wan": AutoencoderWan,  # diffusers' AutoencoderKLWan (Wan 2.1/2.2), its folders as they are
}

DEFAULT_ARCH = "cv"  # what `inflate`, `train` and the tools build when no arch is given


def _class_names() -> dict[str, type]:
    """config.json `_class_name` -> class: each family's own name and its older aliases."""
    names = {}
    for arch, cls in FAMILIES.items():
        if cls.arch != arch:
            raise TypeError(f"{cls.__name__}.arch is {cls.arch!r}, but FAMILIES lists it as "
                            f"{arch!r}")
        for name in (cls.__name__, *cls.class_aliases):
            names[name] = cls
        # diffusers reloads a saved pipeline's component by finding its loadable base class
        # (ModelMixin) by name in the module that defines the class
        module = sys.modules[cls.__module__]
        if not hasattr(module, "ModelMixin"):
            module.ModelMixin = ModelMixin
    return names


_CLASS_NAMES = _class_names()


def families() -> list[str]:
    return sorted(FAMILIES)


def family_class(arch: str) -> type[StreamingAutoencoder]:
    if arch not in FAMILIES:
        raise ModelLoadError(f"unknown arch {arch!r}; known: {', '.join(families())}")
    return FAMILIES[arch]


def model_class_for(model_dir) -> type:
    """The family class a model folder was saved from."""
    name = read_model_config(model_dir).get("_class_name")
    if name == "AutoencoderKL":
        raise ModelLoadError(f"{model_dir} holds an image VAE (AutoencoderKL): make a video VAE "
                             f"of it with `videovae inflate --image-vae {model_dir} -o OUT`")
    if name not in _CLASS_NAMES:
        raise ModelLoadError(f"{model_dir} holds a {name or 'model without _class_name'}, not a "
                             f"videovae model; supported: {', '.join(sorted(_CLASS_NAMES))}")
    return _CLASS_NAMES[name]


def load_model(model_dir="default", device=None, dtype=torch.float32):
    """Any family's folder (config.json + diffusion_pytorch_model.safetensors), in eval mode
    with gradients off. Errors name the folder; weights that are not finite (a diverged
    training run) are refused. `"default"` (and the other names of `videovae.weights.NAMES`) is
    the model shipped with the package."""
    from ..weights import resolve_model

    model_dir = resolve_model(model_dir)
    cls = model_class_for(model_dir)
    if not any((Path(model_dir) / f"diffusion_pytorch_model.{ext}").is_file()
               for ext in ("safetensors", "bin", "safetensors.index.json", "bin.index.json")):
        raise ModelLoadError(f"{model_dir} has a config.json but no weights "
                             "(diffusion_pytorch_model.safetensors)")
    try:
        vae = cls.from_pretrained(str(model_dir), torch_dtype=dtype)
    except ModelLoadError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, ArithmeticError) as e:
        raise ModelLoadError(f"cannot load the model at {model_dir}: {one_line(e)}") from e
    # diffusers leaves weights the file lacks on the meta device (and only warns)
    missing = [name for name, t in (*vae.named_parameters(), *vae.named_buffers()) if t.is_meta]
    if missing:
        more = ", ..." if len(missing) > 3 else ""
        raise ModelLoadError(f"{model_dir}: the weights file lacks {len(missing)} of the model's "
                             f"tensors ({', '.join(missing[:3])}{more}); a truncated or foreign "
                             "file?")
    bad = [name for name, p in vae.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ModelLoadError(f"{model_dir} holds non-finite weights in {len(bad)} tensors "
                             f"({bad[0]}, ...): a diverged training run?")
    return vae.to(device=device).eval().requires_grad_(False)

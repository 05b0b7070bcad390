"""Model families by name, and loading any family's folder by the class named in config.json.

Families register their class (`register_family`); the conversion package registers the
function that inflates an image VAE into a family (`register_inflater`), so models never
import it (`inflate` loads that plug-in by name on first use).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable

import torch
from diffusers.models.modeling_utils import ModelMixin

from ..config import read_model_config
from ..errors import ModelLoadError, one_line

_FAMILIES: dict[str, type] = {}  # arch name -> class
_CLASS_NAMES: dict[str, type] = {}  # config.json `_class_name` -> class
_INFLATER: list[Callable] = []  # set by videovae.convert on import


def register_family(arch: str, *aliases: str):
    """Class decorator: make a model class loadable by its arch name and class name(s)."""
    def deco(cls):
        _FAMILIES[arch] = cls
        cls.arch = arch
        for name in (cls.__name__, *aliases):
            _CLASS_NAMES[name] = cls
        # diffusers reloads a saved pipeline's component by finding its loadable base class
        # (ModelMixin) by name in the module that defines the class
        module = sys.modules[cls.__module__]
        if not hasattr(module, "ModelMixin"):
            module.ModelMixin = ModelMixin
        return cls
    return deco


def families() -> list[str]:
    return sorted(_FAMILIES)


def family_class(arch: str) -> type:
    if arch not in _FAMILIES:
        raise ModelLoadError(f"unknown arch {arch!r}; known: {', '.join(families())}")
    return _FAMILIES[arch]


def register_inflater(fn: Callable) -> None:
    """`fn(path, arch=..., **overrides)` builds a model of family `arch` from an image VAE."""
    _INFLATER[:] = [fn]


def inflate(path, arch: str = "cv", **overrides):
    family_class(arch)  # a readable error for unknown names
    if not _INFLATER:  # the conversion package registers itself when imported; it is a plug-in
        import importlib  # found by name, not a dependency of the models

        importlib.import_module("videovae.convert")
    return _INFLATER[0](path, arch=arch, **overrides)


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_model_location(path) -> None:
    """A model location is an existing folder, or else an `owner/name` hub id."""
    p = os.fspath(path)
    if os.path.isdir(p):
        return
    if os.path.exists(p):
        raise ModelLoadError(f"{p} is a file; a model is a folder (config.json + weights)")
    if not _HUB_ID.fullmatch(p) or p.startswith((".", "/")) or ".." in p:
        raise ModelLoadError(f"no model folder at {p} (and it is not an owner/name hub id)")


def model_class_for(model_dir) -> type:
    """The family class a model folder was saved from."""
    name = read_model_config(model_dir).get("_class_name")
    if name not in _CLASS_NAMES:
        raise ModelLoadError(f"{model_dir} holds a {name or 'model without _class_name'}, not a "
                             f"videovae model ({', '.join(sorted(_CLASS_NAMES))})")
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
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise ModelLoadError(f"cannot load the model at {model_dir}: {one_line(e)}") from e
    bad = [name for name, p in vae.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ModelLoadError(f"{model_dir} holds non-finite weights in {len(bad)} tensors "
                             f"({bad[0]}, ...): a diverged training run?")
    return vae.to(device=device).eval().requires_grad_(False)

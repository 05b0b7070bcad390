"""Model families by name, and loading any family's folder by the class named in config.json.

Families register their class (`register_family`); the conversion package registers the
function that inflates an image VAE into a family (`register_inflater`), so models never
import it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import torch
from diffusers.models.modeling_utils import ModelMixin

from ..errors import ModelLoadError

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
    if not _INFLATER:  # only when videovae.models is used without the package's __init__
        raise ModelLoadError("no inflater registered: import videovae (not videovae.models alone)")
    return _INFLATER[0](path, arch=arch, **overrides)


def read_model_config(model_dir) -> dict:
    """config.json of a model folder, with errors that name the folder."""
    model_dir = Path(model_dir)
    cfg_file = model_dir / "config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"no model at {model_dir} (expected config.json and "
                             "diffusion_pytorch_model.safetensors)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{cfg_file} is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{cfg_file} must hold a JSON object")
    return cfg


def model_class_for(model_dir) -> type:
    """The family class a model folder was saved from."""
    name = read_model_config(model_dir).get("_class_name")
    if name not in _CLASS_NAMES:
        raise ModelLoadError(f"{model_dir} holds a {name or 'model without _class_name'}, not a "
                             f"videovae model ({', '.join(sorted(_CLASS_NAMES))})")
    return _CLASS_NAMES[name]


def load_model(model_dir, device=None, dtype=torch.float32):
    """Any family's folder (config.json + diffusion_pytorch_model.safetensors), in eval mode
    with gradients off."""
    cls = model_class_for(model_dir)
    vae = cls.from_pretrained(str(model_dir), torch_dtype=dtype)
    return vae.to(device=device).eval().requires_grad_(False)

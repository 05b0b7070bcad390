"""YAML configs loaded into dataclasses, with `key=value` / `section.key=value` overrides, and
the `config.json` of a model folder.

Each section is a dataclass whose fields hold its defaults (model settings are the keyword
arguments of a model family, checked by `videovae.training.config`). Unknown keys are errors.
This module does not import torch (the command line checks a model folder before loading it).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, ModelLoadError

# Config names diffusers video pipelines read (Wan: scale_factor_*, z_dim; LTX:
# timestep_conditioning; CogVideoX image-to-video: invert_scale_latents). A model derives them at
# init from its ratios and latent channels; a value in a loaded config.json is ignored.
PIPELINE_CONFIG_KEYS = ("scale_factor_temporal", "scale_factor_spatial", "z_dim",
                        "timestep_conditioning", "invert_scale_latents")


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: bad value: {e}") from e
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


def _check_type(name: str, value: Any, hint) -> Any:
    """Loose type check/coercion for YAML values (int -> float, list -> tuple)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or value is None and (type(None) in args or hint is type(None)):
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(name, value, a)
            except ConfigError:
                pass
        raise ConfigError(f"{name}={value!r} does not fit {hint}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return [_check_type(name, v, inner) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, name)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and
                                               not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{name} must be {hint.__name__}, got {value!r}")
    return value


def from_dict(cls, data: dict | None, where: str = ""):
    """Build dataclass `cls` from a dict, rejecting unknown keys and wrong types."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where or cls.__name__}: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(names))})")
    kwargs = {k: _check_type(f"{where}.{k}" if where else k, v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)


def to_flat_dict(obj, prefix: str = "") -> dict:
    """Flatten a (nested) dataclass/dict into `a.b` -> scalar (for TensorBoard hparams)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(to_flat_dict(v, key + "."))
        elif isinstance(v, (bool, int, float, str)) or v is None:
            out[key] = v
        else:
            out[key] = str(v)
    return out


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

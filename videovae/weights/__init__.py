"""The models shipped with the package, trained by `tools/train_default.py` (see
`default/TRAINING.md`): a small SD-layout image VAE (16 latent channels) and the `cv` video VAE
inflated from it and fine-tuned. fp16 safetensors; loaded in the dtype asked for (fp32 unless
told).

Names: `default` (the `cv` video VAE), `default-cv`, `default-image-vae`.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DIR = Path(__file__).parent / "default"
NAMES = {"default": "cv", "default-cv": "cv", "default-image-vae": "image_vae"}


def is_default_name(name) -> bool:
    return isinstance(name, str) and name in NAMES


def default_model_dir(name: str = "default") -> Path:
    """The folder of a shipped model; an error naming the folder when it is not installed."""
    from ..errors import ModelLoadError

    if name not in NAMES:
        raise ModelLoadError(f"unknown shipped model {name!r}; known: {', '.join(NAMES)}")
    path = DEFAULT_DIR / NAMES[name]
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"the shipped model {name!r} is missing ({path}); reinstall "
                             "the package or train it with tools/train_default.py --install")
    return path


def resolve_model(model) -> str | os.PathLike:
    """`model` itself, or the shipped folder when it is one of NAMES."""
    return default_model_dir(model) if is_default_name(model) else model


def training_minutes() -> float:
    """How long the shipped models trained in all (every image VAE run and the shipped video
    VAE), from `default/training.json`."""
    import json

    record = json.loads((DEFAULT_DIR / "training.json").read_text())
    minutes, img = 0.0, record["image_vae"]
    while img is not None:
        minutes += img["wall_seconds"] / 60
        img = img.get("continued_from")
    shipped = {folder for folder in NAMES.values() if folder != "image_vae"}
    return minutes + sum(record["video"][arch]["wall_seconds"] / 60
                         for arch in shipped if arch in record["video"])

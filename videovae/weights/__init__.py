"""The models shipped with the package, trained by `tools/train_default.py` (see
`default/TRAINING.md`): a small SD-layout image VAE (16 latent channels) and the `cv` video VAE
inflated from it and fine-tuned. fp16 safetensors; loaded in the dtype asked for (fp32 unless
told).

Names: `default` (the `cv` video VAE), `default-cv`, `default-image-vae`. A name that is also a
folder in the current directory is refused as ambiguous (`./default` names the folder).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DIR = Path(__file__).parent / "default"
SHIPPED_FAMILIES = ("cv",)  # video families installed beside the image VAE; ktc (27 M parameters,
# 55 MB in fp16 at this width) is too heavy to carry in the package
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
    """`model` itself, or the shipped folder when it is one of NAMES. A name that is also a
    folder in the current directory is refused as ambiguous (`./default` names the folder)."""
    if not is_default_name(model):
        return model
    path = default_model_dir(model)
    if Path(model).is_dir():
        from ..errors import ModelLoadError

        others = [n for n, sub in NAMES.items() if sub == NAMES[model] and n != model]
        shipped = f"{others[0]} (its folder: {path})" if others else str(path)
        raise ModelLoadError(f"model {model!r} is ambiguous: ./{model} is a folder here and "
                             f"{model} names a shipped model; use ./{model} for the folder, or "
                             f"{shipped} for the shipped model")
    return path


def image_vae_runs(record: dict) -> list[dict]:
    """The runs of a training record's image VAE (`training.json`'s "image_vae"), earliest
    first: a run continued from an earlier one holds it under "continued_from"."""
    runs = []
    while record is not None:
        runs.insert(0, record)
        record = record.get("continued_from")
    return runs


def training_minutes() -> float:
    """How long the shipped models trained in all (every image VAE run and the shipped video
    VAEs), from `default/training.json`."""
    import json

    record = json.loads((DEFAULT_DIR / "training.json").read_text())
    return (sum(run["wall_seconds"] for run in image_vae_runs(record["image_vae"]))
            + sum(record["video"][arch]["wall_seconds"] for arch in SHIPPED_FAMILIES
                  if arch in record["video"])) / 60

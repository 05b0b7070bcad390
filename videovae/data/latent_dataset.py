"""`LatentDataset`: what `videovae extract` wrote, read back for a diffusion trainer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import VideoVAEError
from ..io.listing import jsonl_objects

ROW_FIELDS = ("shard", "key", "has_std")


class LatentDataset(Dataset):
    """Item i: {"latents": (Z, T', h, w), "std": ... (when extracted with moments), and the
    index row (source, window, num_frames, fps, size, ...)}. With `sample=True` the latents are
    a draw from the posterior (mean + std * noise), seeded by (seed, i) so epochs repeat.
    Shards are read only from inside the data set folder: an index row naming a shard outside
    it (`..`, an absolute path, a symlink that leaves it) is refused."""

    def __init__(self, root, sample: bool = False, seed: int = 0):
        self.root = Path(root)
        index = self.root / "index.jsonl"
        if not index.is_file():
            raise VideoVAEError(f"{self.root} has no index.jsonl (is the extraction finished?)")
        self.meta = _read_json(self.root / "meta.json")
        self.rows = _read_index(index)
        self._shards = _shard_files(self.root, index, self.rows)
        if sample and self.rows and not self.rows[0]["has_std"]:
            raise VideoVAEError(f"{self.root} was extracted without moments: sampling needs the "
                                "posterior std (videovae extract --moments)")
        self.sample, self.seed = sample, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        from safetensors import safe_open

        row = self.rows[i]
        with safe_open(str(self._shards[row["shard"]]), framework="pt") as f:
            item = {"latents": f.get_tensor(f"{row['key']}/latents")}
            if row["has_std"]:
                item["std"] = f.get_tensor(f"{row['key']}/std")
        if self.sample:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            noise = torch.randn(item["latents"].shape, generator=g)
            item["latents"] = item["latents"] + item["std"] * noise
        return {**row, **item}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VideoVAEError(f"{path} not found (is this an extraction folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VideoVAEError(f"{path} is not readable JSON ({e})") from None


def _read_index(index: Path) -> list[dict]:
    rows = []
    for n, row in jsonl_objects(index.read_text(), index):
        missing = [k for k in ROW_FIELDS if k not in row]
        if missing:
            raise VideoVAEError(f"{index}:{n}: row without {', '.join(missing)}")
        if not isinstance(row["shard"], str) or not isinstance(row["key"], str):
            raise VideoVAEError(f"{index}:{n}: 'shard' and 'key' must be strings")
        rows.append(row)
    return rows


def _shard_files(root: Path, index: Path, rows: list[dict]) -> dict[str, Path]:
    """Each shard named by the index -> its file, which must lie inside `root` once every
    symlink is resolved (a crafted index must not read files elsewhere)."""
    inside = os.path.realpath(root)
    files = {}
    for n, row in enumerate(rows, 1):
        name = row["shard"]
        if name in files:
            continue
        real = os.path.realpath(root / name)
        if os.path.isabs(name) or os.path.commonpath([inside, real]) != inside:
            raise VideoVAEError(f"{index}:{n}: shard {name!r} lies outside the data set folder "
                                f"{root}; shards must be inside it")
        files[name] = Path(real)
    return files

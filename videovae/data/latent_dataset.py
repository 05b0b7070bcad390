"""`LatentDataset`: what `videovae extract` wrote, read back for a diffusion trainer."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import VideoVAEError


class LatentDataset(Dataset):
    """Item i: {"latents": (Z, T', h, w), "std": ... (when extracted with moments), and the
    index row (source, window, num_frames, fps, size, ...)}. With `sample=True` the latents are
    a draw from the posterior (mean + std * noise), seeded by (seed, i) so epochs repeat."""

    def __init__(self, root, sample: bool = False, seed: int = 0):
        self.root = Path(root)
        index = self.root / "index.jsonl"
        if not index.is_file():
            raise VideoVAEError(f"{self.root} has no index.jsonl (is the extraction finished?)")
        self.meta = json.loads((self.root / "meta.json").read_text())
        self.rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
        if sample and self.rows and not self.rows[0]["has_std"]:
            raise VideoVAEError(f"{self.root} was extracted without moments: sampling needs the "
                                "posterior std (videovae extract --moments)")
        self.sample, self.seed = sample, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        from safetensors import safe_open

        row = self.rows[i]
        with safe_open(str(self.root / row["shard"]), framework="pt") as f:
            item = {"latents": f.get_tensor(f"{row['key']}/latents")}
            if row["has_std"]:
                item["std"] = f.get_tensor(f"{row['key']}/std")
        if self.sample:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            noise = torch.randn(item["latents"].shape, generator=g)
            item["latents"] = item["latents"] + item["std"] * noise
        return {**row, **item}

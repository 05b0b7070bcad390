"""The joint image/video loader: each step draws one source by weight and a batch from it.

Batch `s` of rank `r` is a pure function of (seed, r, s), so ranks see different data, loader
workers need no shared state, and resuming at step k continues exactly where the run stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import VideoVAEError
from .sources import ClipSource, SourceConfig


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig(type="synthetic")])
    num_workers: int = 2
    val_path: str | None = None  # validation videos (folder/manifest); default: synthetic clips
    val_clips: int = 2
    val_num_frames: int = 17
    val_resolution: list[int] = field(default_factory=lambda: [64, 64])


class StepBatches(Dataset):
    """Item `s` is the whole batch of micro-step `s`: {"pixels", "source", "skipped"}, or
    {"error": reason} when its source has too many unreadable files (a loader worker's own
    exception would reach the trainer as "Caught ... in DataLoader worker process 0")."""

    def __init__(self, sources: list[ClipSource], seed: int, rank: int):
        self.sources = sources
        w = np.array([s.cfg.weight for s in sources], dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("source weights must be >= 0 and not all 0")
        self.probs = w / w.sum()
        self.seed, self.rank = seed, rank

    def __len__(self):
        return 2**62

    def __getitem__(self, step: int) -> dict:
        rng = np.random.default_rng([self.seed, self.rank, int(step)])
        j = int(rng.choice(len(self.sources), p=self.probs))
        src = self.sources[j]
        clips, skipped = [], 0
        for _ in range(src.cfg.batch_size):
            try:
                clip, k = src.sample(rng)
            except VideoVAEError as e:
                return {"error": str(e)}
            clips.append(clip)
            skipped += k
        return {"pixels": torch.stack(clips), "source": j, "skipped": skipped}


def build_sources(cfg: DataConfig, temporal_ratio: int = 4) -> list[ClipSource]:
    if not cfg.sources:
        raise ValueError("data.sources is empty")
    return [ClipSource(s, temporal_ratio) for s in cfg.sources]


def make_loader(cfg: DataConfig, sources, seed: int, rank: int, start_step: int) -> DataLoader:
    """Batches for micro-steps start_step, start_step + 1, ... of this rank."""
    # its own generator: creating the iterator must not consume the global RNG (exact resume)
    return DataLoader(StepBatches(sources, seed, rank), batch_size=None,
                      sampler=range(start_step, 2**62), num_workers=cfg.num_workers,
                      generator=torch.Generator().manual_seed(seed),
                      persistent_workers=cfg.num_workers > 0,
                      prefetch_factor=2 if cfg.num_workers > 0 else None)

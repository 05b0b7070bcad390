"""Clip sources (image folders, video folders, synthetic clips), sampled reproducibly from a seed.

Every sample is a function of an integer seed (which file, which frames, which crop), so a
training run is reproducible and resumes exactly. Images become one-frame clips. A file that
cannot be read is skipped (another is drawn) and counted, never a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import VideoVAEError, one_line
from ..io.listing import IMAGE_SUFFIXES, MEDIA_SUFFIXES, list_files
from ..io.video import VideoReader
from .synthetic import TRAIN_PHOTOS, load_photo, pan_zoom_clip
from .transforms import to_clip

logger = logging.getLogger(__name__)

MAX_RETRIES = 20
IMAGE_CACHE_BYTES = 256 << 20  # decoded images kept in memory per source and loader worker


@dataclass
class SourceConfig:
    """One data source of the joint loader."""

    name: str = "source"
    type: str = "video"  # video | image | synthetic
    path: str | None = None  # folder (scanned recursively) or CSV/JSONL manifest with `path`
    resolution: int | list[int] = 256  # [h, w], or one int for squares
    num_frames: int = 17  # clip length, 1 + 4k (images: 1)
    frame_stride: int | list[int] = 1  # a stride, or [min, max] drawn per clip
    batch_size: int = 1
    weight: float = 1.0  # sampling probability (normalized over sources)
    random_crop: bool = True  # False: center crop
    hflip: bool = False
    crop_scale: float | list[float] = 1.0  # <1 (or [min, max]): random-resized crops, see to_clip


class ClipSource:
    """Draws (3, T, h, w) clips from one source; `sample(rng)` returns (clip, skipped_files)."""

    def __init__(self, cfg: SourceConfig, temporal_ratio: int = 4):
        self.cfg = cfg
        res = cfg.resolution if isinstance(cfg.resolution, (list, tuple)) else [cfg.resolution] * 2
        self.size = (int(res[0]), int(res[-1]))
        if cfg.type not in ("video", "image", "synthetic"):
            raise VideoVAEError(f"source {cfg.name}: type must be video, image or synthetic")
        if cfg.type == "image" and cfg.num_frames != 1:
            raise VideoVAEError(f"source {cfg.name}: image sources give 1-frame clips")
        if (cfg.num_frames - 1) % temporal_ratio:
            raise VideoVAEError(f"source {cfg.name}: num_frames must be 1 + {temporal_ratio}k, "
                             f"got {cfg.num_frames}")
        if cfg.type == "synthetic":
            self.photos = [load_photo(n) for n in TRAIN_PHOTOS]
            self.files = []
        else:
            suffixes = IMAGE_SUFFIXES if cfg.type == "image" else MEDIA_SUFFIXES
            self.files = list_files(cfg.path, suffixes)
        self._images: dict[Path, np.ndarray] = {}  # decoded images, up to IMAGE_CACHE_BYTES
        self._image_bytes = 0
        stride = cfg.frame_stride if isinstance(cfg.frame_stride, (list, tuple)) else \
            [cfg.frame_stride] * 2
        self.stride = (int(stride[0]), int(stride[-1]))

    def __len__(self):
        return len(self.files) or len(self.photos)

    def _read(self, path: Path, rng) -> np.ndarray:
        t = self.cfg.num_frames
        if path in self._images:
            return self._images[path]
        reader = VideoReader(path)
        if reader.backend == "image":
            frames = reader.read_all()
            if self._image_bytes + frames.nbytes <= IMAGE_CACHE_BYTES:
                self._images[path] = frames
                self._image_bytes += frames.nbytes
            return frames
        if t == 1:
            return reader.read_frames([int(rng.integers(0, reader.num_frames))])
        stride = int(rng.integers(self.stride[0], self.stride[1] + 1))
        stride = max(1, min(stride, (reader.num_frames - 1) // max(t - 1, 1)))
        span = (t - 1) * stride + 1
        start = int(rng.integers(0, max(reader.num_frames - span, 0) + 1))
        idx = [min(start + i * stride, reader.num_frames - 1) for i in range(t)]
        return reader.read_frames(idx)  # a too-short video repeats its last frame

    def _synthetic(self, rng) -> np.ndarray:
        photo = self.photos[int(rng.integers(len(self.photos)))]
        size = (self.size[0] * 3 // 2, self.size[1] * 3 // 2)
        return pan_zoom_clip(photo, self.cfg.num_frames, size,
                             speed=float(rng.uniform(0, 3)) if rng.random() > 0.1 else 0.0,
                             zoom=float(rng.uniform(-0.02, 0.02)),
                             angle=float(rng.uniform(0, 2 * np.pi)),
                             scale=float(rng.uniform(0.5, 1.5)))

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        skipped, reason = 0, ""
        for _ in range(MAX_RETRIES):
            if self.cfg.type == "synthetic":
                frames = self._synthetic(rng)
            else:
                path = self.files[int(rng.integers(len(self.files)))]
                try:
                    frames = self._read(path, rng)
                except Exception as e:  # noqa: BLE001 - any unreadable file is skipped
                    skipped += 1
                    reason = f"{path}: {one_line(e)}"
                    logger.warning("skipping unreadable %s", reason)
                    continue
            return to_clip(frames, self.size, rng, self.cfg.random_crop, self.cfg.hflip,
                           self.cfg.crop_scale), skipped
        raise VideoVAEError(f"source {self.cfg.name} ({self.cfg.path}): {MAX_RETRIES} unreadable "
                            f"files in a row, the last {reason}")

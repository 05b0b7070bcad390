"""Image and video-clip datasets, sampled reproducibly from a seed.

Every sample is a function of an integer seed (which file, which frames, which crop), so a
training run is reproducible and resumes exactly. Images become one-frame clips. A file that
cannot be read is skipped (another is drawn) and counted, never a crash.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..video_io import IMAGE_SUFFIXES, VideoReader

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif", ".m4v", ".mpg", ".mpeg"}
MAX_RETRIES = 20


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


def list_files(path, suffixes) -> list[Path]:
    """Files under a folder (recursive, sorted) or listed in a CSV/JSONL manifest (`path` column;
    relative paths are resolved against the manifest's folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
    elif path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "path" not in rows[0]:
            raise ValueError(f"{path}: a manifest needs a 'path' column")
        files = [path.parent / r["path"] for r in rows]
    elif path.suffix.lower() in (".jsonl", ".json"):
        files = []
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                item = json.loads(line)
                if "path" not in item:
                    raise ValueError(f"{path}:{i + 1}: manifest entry without 'path'")
                files.append(path.parent / item["path"])
    else:
        raise ValueError(f"{path}: expected a folder or a .csv/.jsonl manifest")
    if not files:
        raise ValueError(f"no {'/'.join(sorted(suffixes))} files found in {path}")
    return files


def _resize_crop(x: torch.Tensor, size, rng: np.random.Generator, random_crop: bool,
                 hflip: bool) -> torch.Tensor:
    """(T, 3, H, W) float -> resize the short side to cover `size`, crop to `size`."""
    h, w = size
    scale = max(h / x.shape[2], w / x.shape[3])
    nh, nw = max(h, round(x.shape[2] * scale)), max(w, round(x.shape[3] * scale))
    if (nh, nw) != tuple(x.shape[2:]):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top = int(rng.integers(0, nh - h + 1)) if random_crop else (nh - h) // 2
    left = int(rng.integers(0, nw - w + 1)) if random_crop else (nw - w) // 2
    x = x[:, :, top:top + h, left:left + w]
    if hflip and rng.random() < 0.5:
        x = x.flip(-1)
    return x


def _to_clip(frames: np.ndarray, size, rng, random_crop, hflip) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, h, w) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    x = _resize_crop(x, size, rng, random_crop, hflip).clamp(-1, 1)
    return x.permute(1, 0, 2, 3).contiguous()


class ClipSource:
    """Draws (3, T, h, w) clips from one source; `sample(rng)` returns (clip, skipped_files)."""

    def __init__(self, cfg: SourceConfig, temporal_ratio: int = 4):
        self.cfg = cfg
        res = cfg.resolution if isinstance(cfg.resolution, (list, tuple)) else [cfg.resolution] * 2
        self.size = (int(res[0]), int(res[-1]))
        if cfg.type not in ("video", "image", "synthetic"):
            raise ValueError(f"source {cfg.name}: type must be video, image or synthetic")
        if cfg.type == "image" and cfg.num_frames != 1:
            raise ValueError(f"source {cfg.name}: image sources give 1-frame clips")
        if (cfg.num_frames - 1) % temporal_ratio:
            raise ValueError(f"source {cfg.name}: num_frames must be 1 + {temporal_ratio}k, "
                             f"got {cfg.num_frames}")
        if cfg.type == "synthetic":
            from ..synthetic import TRAIN_PHOTOS, load_photo

            self.photos = [load_photo(n) for n in TRAIN_PHOTOS]
            self.files = []
        else:
            suffixes = IMAGE_SUFFIXES if cfg.type == "image" else VIDEO_SUFFIXES | IMAGE_SUFFIXES
            self.files = list_files(cfg.path, suffixes)
        stride = cfg.frame_stride if isinstance(cfg.frame_stride, (list, tuple)) else \
            [cfg.frame_stride] * 2
        self.stride = (int(stride[0]), int(stride[-1]))

    def __len__(self):
        return len(self.files) or len(self.photos)

    def _read(self, path: Path, rng) -> np.ndarray:
        t = self.cfg.num_frames
        reader = VideoReader(path)
        if reader.backend == "image" or t == 1:
            if reader.backend == "image":
                return reader.read_all()[:1]
            start = int(rng.integers(0, reader.num_frames))
            return _read_indices(reader, [start])
        stride = int(rng.integers(self.stride[0], self.stride[1] + 1))
        stride = max(1, min(stride, (reader.num_frames - 1) // max(t - 1, 1)))
        span = (t - 1) * stride + 1
        start = int(rng.integers(0, max(reader.num_frames - span, 0) + 1))
        idx = [min(start + i * stride, reader.num_frames - 1) for i in range(t)]
        return _read_indices(reader, idx)  # a too-short video repeats its last frame

    def _synthetic(self, rng) -> np.ndarray:
        from ..synthetic import pan_zoom_clip

        photo = self.photos[int(rng.integers(len(self.photos)))]
        size = (self.size[0] * 3 // 2, self.size[1] * 3 // 2)
        return pan_zoom_clip(photo, self.cfg.num_frames, size,
                             speed=float(rng.uniform(0, 3)) if rng.random() > 0.1 else 0.0,
                             zoom=float(rng.uniform(-0.02, 0.02)),
                             angle=float(rng.uniform(0, 2 * np.pi)),
                             scale=float(rng.uniform(0.5, 1.5)))

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        skipped = 0
        for _ in range(MAX_RETRIES):
            if self.cfg.type == "synthetic":
                frames = self._synthetic(rng)
            else:
                path = self.files[int(rng.integers(len(self.files)))]
                try:
                    frames = self._read(path, rng)
                except Exception as e:  # noqa: BLE001 - any unreadable file is skipped
                    skipped += 1
                    logger.warning("skipping unreadable %s: %s", path,
                                   str(e).strip().splitlines()[0] if str(e).strip() else e)
                    continue
            return _to_clip(frames, self.size, rng, self.cfg.random_crop, self.cfg.hflip), skipped
        raise RuntimeError(f"source {self.cfg.name}: {MAX_RETRIES} unreadable files in a row")


def _read_indices(reader: VideoReader, idx: list[int]) -> np.ndarray:
    """Frames at the given (sorted) indices; decord seeks, other backends decode forward."""
    if reader.backend == "decord":
        return reader._vr.get_batch(idx).asnumpy()
    wanted = set(idx)
    got = {}
    pos = 0
    for chunk in reader.iter_chunks(32):
        for f in chunk:
            if pos in wanted:
                got[pos] = f
            pos += 1
        if pos > idx[-1]:
            break
    if not got:
        raise ValueError(f"{reader.path}: none of frames {idx[0]}..{idx[-1]} could be decoded")
    return np.stack([got.get(i, got[max(got)]) for i in idx])

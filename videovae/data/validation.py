"""The clips validation reconstructs: the first frames of videos in `data.val_path`, or, by
default, pan/zoom clips over the held-out photos (which training never sees)."""

from __future__ import annotations

import numpy as np
import torch

from ..io.listing import VIDEO_SUFFIXES, list_files
from ..io.video import VideoReader, frames_to_tensor
from .loader import DataConfig
from .synthetic import HELD_OUT_PHOTOS, load_photo, pan_zoom_clip
from .transforms import to_clip


def validation_clips(cfg: DataConfig) -> list[torch.Tensor]:
    """`cfg.val_clips` clips of (1, 3, val_num_frames, h, w) in [-1, 1] (fewer frames where a
    video is shorter)."""
    res = cfg.val_resolution
    h, w = (res if isinstance(res, (list, tuple)) else [res, res])[:2]
    clips = []
    if cfg.val_path:
        for path in list_files(cfg.val_path, VIDEO_SUFFIXES)[: cfg.val_clips]:
            reader = VideoReader(path)
            frames = reader.read_frames(list(range(min(cfg.val_num_frames, reader.num_frames))))
            clips.append(to_clip(frames, (h, w), np.random.default_rng(0), False, False)[None])
    else:
        for i in range(cfg.val_clips):
            photo = load_photo(HELD_OUT_PHOTOS[i % len(HELD_OUT_PHOTOS)])
            frames = pan_zoom_clip(photo, cfg.val_num_frames, (h, w), speed=1.5 + i, zoom=0.01)
            clips.append(frames_to_tensor(frames))
    return clips

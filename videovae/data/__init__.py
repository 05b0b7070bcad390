"""Training and evaluation data: clip sources (images as one-frame clips, videos, synthetic
clips from bundled photos), transforms, validation clips and the joint image/video loader."""

from .loader import DataConfig, StepBatches, build_sources, make_loader
from .sources import ClipSource, SourceConfig
from .validation import validation_clips

__all__ = ["ClipSource", "SourceConfig", "DataConfig", "StepBatches", "build_sources",
           "make_loader", "validation_clips"]

"""Training and evaluation data: clip sources (images as one-frame clips, videos, synthetic
clips from bundled photos), transforms, validation clips, the joint image/video loader, and
the reader of extracted latents."""

from .latent_dataset import LatentDataset
from .loader import DataConfig, StepBatches, build_sources, make_loader
from .sources import ClipSource, SourceConfig
from .validation import validation_clips

__all__ = ["ClipSource", "SourceConfig", "DataConfig", "StepBatches", "build_sources",
           "make_loader", "validation_clips", "LatentDataset"]

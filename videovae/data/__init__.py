"""Datasets (images as one-frame clips, video clips, synthetic clips) and the joint loader."""

from .datasets import ClipSource, SourceConfig, list_files
from .loader import DataConfig, StepBatches, build_sources, make_loader

__all__ = ["ClipSource", "SourceConfig", "list_files", "DataConfig", "StepBatches",
           "build_sources", "make_loader"]

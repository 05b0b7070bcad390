"""Shared fixtures. Helpers live in helpers.py (this folder is put on sys.path for them)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from videovae.data.synthetic import load_photo, pan_zoom_clip  # noqa: E402
from videovae.io.video import write_video  # noqa: E402
from videovae.runtime import setup_cpu  # noqa: E402

from helpers import SD3_CONFIG, SD_CONFIG, reset_accelerate_state, tiny_vae  # noqa: E402

setup_cpu()


@pytest.fixture(scope="session")
def sd_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(1234)
    return AutoencoderKL(**SD_CONFIG).eval()


@pytest.fixture(scope="session")
def sd3_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(4321)
    return AutoencoderKL(**SD3_CONFIG).eval()


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; reset them after a test that trains."""
    yield
    reset_accelerate_state()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny seeded `cv` model folder."""
    d = tmp_path_factory.mktemp("model")
    tiny_vae(seed=5).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """An 11-frame 40x56 photo pan at 12.5 fps: (path, uint8 frames)."""
    d = tmp_path_factory.mktemp("clips")
    frames = pan_zoom_clip(load_photo("astronaut"), 11, (40, 56), speed=2.0)
    path = d / "pan.mp4"
    write_video(path, frames, fps=12.5)
    return path, frames

"""Test helpers: tiny seeded models, image VAEs with the real SD layouts (random weights), clips.

Imported by test modules as `helpers` (tests/ is on sys.path through conftest.py).
"""

import importlib.util
import sys
from functools import cache
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from videovae.convert import sd_vae_config
from videovae.data.synthetic import load_photo, pan_zoom_clip
from videovae.io.video import frames_to_tensor, write_video
from videovae.models import DEFAULT_ARCH, family_class
from videovae.training.budget import reset_accelerate_state  # noqa: F401 - for the tests


def _has_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


# The video reader backends to parametrize over: decord only where it is installed (it has no
# wheels for some platforms; videovae then reads with PyAV).
READER_BACKENDS = [pytest.param("decord", marks=pytest.mark.skipif(
    not _has_decord(), reason="decord is not installed (no wheel for this platform)")), "pyav"]

TOL = 1e-5  # exact-math tolerance in fp32 (streaming, chunking)
INFLATE_TOL = 1e-4  # inflated model vs image VAE


# The real SD 1.x/2.x VAE config, and SD3's 16-channel one (diffusers config.json of each).
SD_CONFIG = sd_vae_config(sample_size=512, scaling_factor=0.18215)
SD3_CONFIG = sd_vae_config(latent_channels=16, sample_size=1024, scaling_factor=1.5305,
                           shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)


MODEL_TESTS = Path(__file__).parent / "models"


def family_test_file(arch: str) -> Path:
    """The one test file of family `arch`: it holds the family's `FamilyTests` subclass."""
    return MODEL_TESTS / f"test_autoencoder_{arch}.py"


@cache
def family_test_class(arch: str):
    """The `FamilyTests` subclass in the family's test file (loaded from the file, so tests of
    every family read the family's own tiny config and applicability)."""
    from family_mixin import FamilyTests

    path = family_test_file(arch)
    if not path.is_file():
        raise LookupError(f"family {arch!r} has no test file {path}")
    spec = importlib.util.spec_from_file_location(f"_family_tests_{arch}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = [c for c in vars(module).values() if isinstance(c, type)
             and issubclass(c, FamilyTests) and c is not FamilyTests and c.arch == arch]
    if len(found) != 1:
        raise LookupError(f"{path} must define one FamilyTests subclass with arch = {arch!r}, "
                          f"found {len(found)}")
    return found[0]


def tiny_config(arch: str = DEFAULT_ARCH) -> dict:
    """Keyword arguments of family `arch`'s tiny test model (its `FamilyTests.config`)."""
    return dict(family_test_class(arch).config)


def tiny_vae(seed=0, arch=DEFAULT_ARCH, **kw):
    """A seeded tiny model of family `arch` (its tiny config, updated with `kw`), in eval mode."""
    torch.manual_seed(seed)
    return family_class(arch)(**{**tiny_config(arch), **kw}).eval()


def applies(arch: str, prop: str) -> str | None:
    """None if the shared property `prop` applies to family `arch`, else the skip reason its
    test file gives (`FamilyTests.not_applicable`)."""
    return family_test_class(arch).not_applicable.get(prop)


def tiny_image_vae(seed=0, widths=(8, 16, 16, 16), groups=4, **kw) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(**sd_vae_config(widths, 1, norm_num_groups=groups, **kw)).eval()


def random_video(b=1, t=9, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def launch_processes(n: int) -> list[str]:
    """The command prefix that starts `n` processes through Accelerate's launcher; without CUDA
    they are gloo processes on the CPU (accelerate's `--cpu` flag would start a single one)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            str(n), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def photo_clip(t=9, size=(64, 96), photo="chelsea", speed=2.0):
    """A real-photo pan clip as a (1, 3, t, H, W) tensor in [-1, 1]."""
    return frames_to_tensor(pan_zoom_clip(load_photo(photo), t, size, speed=speed))


def chunked(x, sizes, dim=2):
    """Consecutive slices of x along `dim` with the given lengths (stops at the end of x)."""
    out, i = [], 0
    for s in sizes:
        if i >= x.shape[dim]:
            break
        out.append(x.narrow(dim, i, min(s, x.shape[dim] - i)))
        i += s
    return out


def write_media(root: Path, n_videos=2, n_images=2, corrupt=True):
    """Photo pan videos and images under root/videos and root/images (and a corrupt mp4)."""
    from PIL import Image

    (root / "videos").mkdir(parents=True)
    (root / "images").mkdir(parents=True)
    for i in range(n_videos):
        write_video(root / "videos" / f"v{i}.mp4",
                    pan_zoom_clip(load_photo("astronaut"), 12, (40, 48), speed=1 + i))
    if corrupt:
        (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + b"x" * 200)
    for i in range(n_images):
        Image.fromarray(pan_zoom_clip(load_photo("coffee"), 1, (48, 40), speed=0)[0]).save(
            root / "images" / f"i{i}.png")


def normalization(kind: str, latent_channels: int) -> dict:
    """Latent normalization configs with scaling_factor != 1: "scale" (SD style), "shift"
    (SD3/FLUX style) and "per_channel" (latent-stats --per-channel, here with a scale as well)."""
    if kind == "scale":
        return dict(scaling_factor=0.7)
    if kind == "shift":
        return dict(scaling_factor=0.7, shift_factor=0.3)
    g = torch.Generator().manual_seed(latent_channels)
    return dict(scaling_factor=0.8,
                latents_mean=(torch.randn(latent_channels, generator=g) * 0.5).tolist(),
                latents_std=(torch.rand(latent_channels, generator=g) + 0.5).tolist())

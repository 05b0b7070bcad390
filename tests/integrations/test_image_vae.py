"""Image-latent compatibility: each latent frame decoded by the source image VAE, as a helper
and in `videovae eval --image-vae`."""

import json

import pytest
import torch

from videovae.cli import main as cli
from videovae.data.synthetic import load_photo, pan_zoom_clip
from videovae.integrations.image_vae import image_vae_psnr, paired_frame
from videovae.io.video import VideoReader, frames_to_tensor, write_video
from videovae.metrics import psnr_per_frame
from videovae.models import families, family_class

from helpers import applies, photo_clip, tiny_image_vae


@pytest.fixture(scope="module")
def image_vae_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("image_vae")
    tiny_image_vae(widths=(16, 32, 32, 32), groups=8).save_pretrained(d)
    return d


@pytest.mark.parametrize("arch", families())
@torch.no_grad()
def test_inflated_latents_decode_like_the_image_vae(arch, image_vae_dir):
    """Right after inflation each latent frame is the image VAE's latent of its frame, so the
    PSNR equals the image VAE's own reconstruction PSNR there (a random image VAE's: low, but
    exactly matched); chunking the input changes nothing; a drifted encoder changes it."""
    from diffusers import AutoencoderKL

    if why := applies(arch, "inflation"):
        pytest.skip(why)

    image_vae = AutoencoderKL.from_pretrained(image_vae_dir).eval()
    vae = family_class(arch).from_image_vae(image_vae_dir, arch=arch).eval()
    x = photo_clip(t=11, size=(32, 48))
    m = image_vae_psnr(vae, image_vae, [x])
    mapping = getattr(vae, "image_reg_mapping", None) or "slice"
    assert m["mapping"] == mapping
    assert m["paired_frames"] == [min(paired_frame(k, 4, mapping), 10) for k in range(4)]
    frames = x[:, :, m["paired_frames"]]
    own = image_vae(frames.transpose(1, 2).flatten(0, 1)).sample.clamp(-1, 1)
    ref = psnr_per_frame(frames, own.unflatten(0, (1, -1)).transpose(1, 2))[0].tolist()
    assert m["per_latent_frame"] == pytest.approx(ref, abs=0.01)
    assert m["image_vae_psnr"] == pytest.approx(sum(ref) / len(ref), abs=0.01)
    assert image_vae_psnr(vae, image_vae, x.split(3, dim=2)) == m
    torch.manual_seed(0)  # an encoder that no longer matches the image VAE's
    for p in (p for module in vae.encoder_modules() for p in module.parameters()):
        p.add_(0.05 * torch.randn_like(p))
    drifted = image_vae_psnr(vae, image_vae, [x])["per_latent_frame"]
    assert max(abs(a - b) for a, b in zip(drifted, ref, strict=True)) > 0.1


def test_eval_reports_the_image_vae_psnr(tmp_path, image_vae_dir):
    model = tmp_path / "model"
    assert cli(["inflate", "--image-vae", str(image_vae_dir), "-o", str(model)]) == 0
    data = tmp_path / "data"
    data.mkdir()
    write_video(data / "pan.mp4", pan_zoom_clip(load_photo("astronaut"), 10, (36, 44)))
    report_path = tmp_path / "report.json"
    assert cli(["eval", "--model", str(model), "--data", str(data), "--image-vae",
                str(image_vae_dir), "-o", str(report_path), "--no-progress"]) == 0
    report = json.loads(report_path.read_text())
    (row,) = report["per_file"]
    assert row["latent_frames"] == 4
    assert report["image_vae_psnr_mean"] == row["image_vae_psnr"]
    # the same number as the helper on the decoded frames (H, W padded to 8 and cropped back)
    from diffusers import AutoencoderKL

    from videovae import load_model
    from videovae.frames import pad_size

    x = frames_to_tensor(VideoReader(data / "pan.mp4").read_all())
    m = image_vae_psnr(load_model(model), AutoencoderKL.from_pretrained(image_vae_dir),
                       [pad_size(x, 8)], size=(36, 44))
    assert row["image_vae_psnr"] == pytest.approx(m["image_vae_psnr"], abs=1e-4)
    assert cli(["eval", "--model", str(model), "--data", str(data), "--image-vae",
                str(tmp_path / "missing"), "--no-progress"]) != 0

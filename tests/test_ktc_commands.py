"""Every command that takes a model takes a `ktc` folder: encode, decode, reconstruct, eval,
latent-stats (train: tests/training/test_ktc_training.py)."""

import json

import pytest
import torch

from videovae import load_model
from videovae.cli import main as cli
from videovae.data.synthetic import load_photo, pan_zoom_clip
from videovae.io.latent_file import load_latents
from videovae.io.video import VideoReader, frames_to_tensor
from videovae.io.video import write_video as write_clip

from helpers import tiny_vae


@pytest.fixture(scope="module")
def ktc_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ktc_model")
    tiny_vae(seed=5, arch="ktc").save_pretrained(d)
    return d


def test_file_commands_with_a_ktc_model(tmp_path, ktc_dir, clip):
    path, frames = clip  # 11 frames, 40x56, 12.5 fps
    m = ["--model", str(ktc_dir), "--no-progress"]
    lat = tmp_path / "pan.safetensors"
    assert cli(["encode", str(path), *m, "-o", str(lat), "--chunk-frames", "4"]) == 0
    z, meta = load_latents(lat)
    assert z.shape == (8, 4, 5, 7) and meta["num_frames"] == 11
    vae = load_model(ktc_dir)
    with torch.no_grad():  # streamed in 4-frame chunks == one full pass
        ref = vae.encode(frames_to_tensor(VideoReader(path).read_all())).latent_dist.mean[0]
    assert (z - ref).abs().max() < 1e-5
    out = tmp_path / "dec.mp4"
    assert cli(["decode", str(lat), *m, "-o", str(out), "--decode-chunk", "1"]) == 0
    r = VideoReader(out)
    assert (r.num_frames, r.height, r.width) == (11, 40, 56)
    assert cli(["reconstruct", str(path), *m, "-o", str(tmp_path / "rec.mp4"), "--metrics",
                str(tmp_path / "m.json"), "--tile", "32", "--tile-overlap", "16"]) == 0
    assert len(json.loads((tmp_path / "m.json").read_text())["psnr_per_frame"]) == 11

    data = tmp_path / "data"
    data.mkdir()
    write_clip(data / "c0.mp4", pan_zoom_clip(load_photo("astronaut"), 9, (32, 32)))
    assert cli(["eval", *m, "--data", str(data), "-o", str(tmp_path / "report.json")]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["frames"] == 9
    stats = tmp_path / "stats.json"
    assert cli(["latent-stats", *m[:2], "--data", str(data), "--clips", "2", "--num-frames",
                "5", "--resolution", "32", "--per-channel", "--no-progress", "-o",
                str(stats)]) == 0
    assert len(json.loads(stats.read_text())["latents_mean"]) == 8  # both halves

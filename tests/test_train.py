"""Losses, data and the Accelerate trainer on tiny CPU configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from conftest import random_video
from videovae import VideoVAE
from videovae.data import ClipSource, SourceConfig, StepBatches
from videovae.distributions import DiagonalGaussianDistribution
from videovae.losses import LossConfig, VAELoss, map_frames
from videovae.synthetic import load_photo, pan_zoom_clip, write_clip
from videovae.train_config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["model.block_out_channels=[8,16,16,16]", "model.layers_per_block=1",
              "model.norm_num_groups=4"]


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def _tiny_image_vae(seed=0):
    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=[8, 16, 16, 16], layers_per_block=1,
                         norm_num_groups=4, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4).eval()


# ----------------------------------------------------------------------------------------------
# Losses


def test_map_frames():
    x = torch.arange(9.0).view(1, 1, 9, 1, 1)
    t, idx = map_frames(x, "slice", 4)
    assert t.flatten().tolist() == [0, 4, 8] and idx == [0, 1, 2]
    t, _ = map_frames(x, "average", 4)
    assert t.flatten().tolist() == [0, 2.5, 6.5]
    t, idx = map_frames(x, "first", 4)
    assert t.flatten().tolist() == [0] and idx == [0]
    t, _ = map_frames(x, "random", 4, torch.Generator().manual_seed(0))
    v = t.flatten().tolist()
    assert v[0] == 0 and 1 <= v[1] <= 4 and 5 <= v[2] <= 8
    for m in ("first", "slice", "average", "random"):  # images: frame 0 only
        assert map_frames(x[:, :, :1], m, 4)[0].shape[2] == 1


@pytest.mark.parametrize("t", [1, 9])
def test_regularization_grads_reach_video_encoder_not_image_vae(t):
    from videovae.image_vae import inflate_from_model

    image_vae = _tiny_image_vae()
    vae = inflate_from_model(image_vae)
    cfg = LossConfig(perceptual_weight=0, disc_weight=0, kl_weight=0, reg_dec_weight=1.0,
                     reg_enc_weight=0.0)
    loss_fn = VAELoss(cfg, image_vae)
    x = random_video(t=t, h=16, w=16)
    post = vae.encode(x).latent_dist
    z = post.sample()
    x_hat = vae.decode(z).sample
    _, logs = loss_fn.generator_loss(x, x_hat, post, z, step=0)
    reg = loss_fn._reg_dec(x, z, None)
    assert torch.allclose(reg, logs["reg_dec"])
    reg.backward()
    enc_grads = [p.grad for p in vae.encoder.parameters()]
    assert all(g is not None for g in enc_grads) and sum(g.abs().sum() for g in enc_grads) > 0
    assert all(p.grad is None for p in vae.decoder.parameters())  # the path skips D_vid
    assert all(p.grad is None and not p.requires_grad for p in image_vae.parameters())
    # the encoder path trains the video decoder from image-encoder latents
    vae.zero_grad()
    lat = loss_fn.encoder_reg_latents(x)
    assert lat.shape == post.mean.shape
    enc_rec = vae.decode(lat).sample
    cfg2 = LossConfig(perceptual_weight=0, disc_weight=0, kl_weight=0, reg_dec_weight=0,
                      reg_enc_weight=1.0)
    post2 = DiagonalGaussianDistribution(post.parameters.detach())
    loss, logs = VAELoss(cfg2, image_vae).generator_loss(x, x_hat.detach(), post2, z.detach(), 0,
                                                         enc_reg_recon=enc_rec)
    loss.backward()
    assert sum(p.grad.abs().sum() for p in vae.decoder.parameters()) > 0
    assert all(p.grad is None for p in image_vae.parameters())


def test_lpips_and_gan_terms_are_differentiable():
    cfg = LossConfig(perceptual_weight=1.0, lpips_pretrained_trunk=False, kl_weight=0,
                     reg_dec_weight=0, disc_weight=1.0, disc_start=0, disc_channels=8,
                     disc_layers=2, adaptive_disc_weight=False)
    torch.manual_seed(0)
    loss_fn = VAELoss(cfg)
    assert all(not p.requires_grad for p in loss_fn.lpips.parameters())
    x = random_video(t=5, h=32, w=32)
    x_hat = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    post = DiagonalGaussianDistribution(torch.zeros(1, 8, 2, 4, 4))
    p = loss_fn.perceptual(x, x_hat)
    (g,) = torch.autograd.grad(p, x_hat)
    assert g.abs().sum() > 0
    loss_fn.discriminator.requires_grad_(False)
    loss, logs = loss_fn.generator_loss(x, x_hat, post, None, step=0)
    assert "g_loss" in logs and "lpips" in logs
    (g,) = torch.autograd.grad(logs["g_loss"] * 0 + -loss_fn.discriminator(x_hat).mean(), x_hat)
    assert g.abs().sum() > 0
    loss_fn.discriminator.requires_grad_(True)
    d_loss, d_logs = loss_fn.discriminator_loss(x, x_hat)
    d_loss.backward()
    assert sum(p.grad.abs().sum() for p in loss_fn.discriminator.parameters()) > 0
    assert x_hat.grad is None  # the discriminator step does not reach the generator
    # images (T = 1) through the 3D discriminator
    assert loss_fn.discriminator(x[:, :, :1]).shape[2] == 1


def test_missing_image_vae_for_regularization_is_an_error():
    with pytest.raises(ValueError, match="init_from_image_vae"):
        VAELoss(LossConfig(perceptual_weight=0, disc_weight=0, reg_dec_weight=1.0))


# ----------------------------------------------------------------------------------------------
# Data


def _write_media(root: Path, n_videos=2, n_images=2, corrupt=True):
    (root / "videos").mkdir(parents=True)
    (root / "images").mkdir(parents=True)
    for i in range(n_videos):
        write_clip(root / "videos" / f"v{i}.mp4",
                   pan_zoom_clip(load_photo("astronaut"), 12, (40, 48), speed=1 + i))
    if corrupt:
        (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + b"x" * 200)
    for i in range(n_images):
        Image.fromarray(pan_zoom_clip(load_photo("coffee"), 1, (48, 40), speed=0)[0]).save(
            root / "images" / f"i{i}.png")


def test_sources_corrupt_files_are_skipped_and_counted(tmp_path):
    _write_media(tmp_path)
    src = ClipSource(SourceConfig(type="video", path=str(tmp_path / "videos"), resolution=32,
                                  num_frames=9, frame_stride=[1, 2], batch_size=2))
    batches = StepBatches([src], seed=0, rank=0)
    skipped = 0
    for s in range(12):
        b = batches[s]
        assert b["pixels"].shape == (2, 3, 9, 32, 32)
        assert b["pixels"].min() >= -1 and b["pixels"].max() <= 1
        skipped += b["skipped"]
    assert skipped > 0
    assert torch.equal(batches[3]["pixels"], batches[3]["pixels"])  # a pure function of step
    other_rank = StepBatches([src], seed=0, rank=1)
    assert not torch.equal(batches[3]["pixels"], other_rank[3]["pixels"])


def test_manifests_and_joint_mix(tmp_path):
    _write_media(tmp_path, corrupt=False)
    (tmp_path / "m.csv").write_text("path,caption\nvideos/v0.mp4,a\nvideos/v1.mp4,b\n")
    (tmp_path / "m.jsonl").write_text('{"path": "images/i0.png"}\n{"path": "images/i1.png"}\n')
    vid = ClipSource(SourceConfig(type="video", path=str(tmp_path / "m.csv"), resolution=[16, 24],
                                  num_frames=5, batch_size=1, weight=0.3))
    img = ClipSource(SourceConfig(type="image", path=str(tmp_path / "m.jsonl"), resolution=32,
                                  num_frames=1, batch_size=4, weight=0.7))
    assert len(vid) == 2 and len(img) == 2
    batches = StepBatches([vid, img], seed=1, rank=0)
    shapes = {tuple(batches[s]["pixels"].shape) for s in range(20)}
    assert shapes == {(1, 3, 5, 16, 24), (4, 3, 1, 32, 32)}
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        ClipSource(SourceConfig(type="video", path=str(tmp_path / "m.csv"), num_frames=6))


def test_configs_load_and_cvvae_mix_is_expressible():
    for path in sorted((ROOT / "configs" / "train").glob("*.yaml")):
        cfg = load_train_config(str(path))
        assert cfg.data.sources, path
    cfg = load_train_config(str(ROOT / "configs" / "train" / "cvvae_sd.yaml"))
    mix = [(s.type, s.num_frames, s.resolution, s.batch_size, s.weight) for s in cfg.data.sources]
    assert mix == [("image", 1, 256, 8, 0.4), ("image", 1, 512, 2, 0.1),
                   ("video", 9, 256, 1, 0.25), ("video", 17, 192, 1, 0.25)]
    with pytest.raises(ValueError, match="unknown key"):
        load_train_config(None, ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="unknown model key"):
        load_train_config(None, ["model.widths=[1]"])


# ----------------------------------------------------------------------------------------------
# The trainer


def _overrides(out, steps, extra=()):
    return [*TINY_MODEL, f"train.output_dir={out}", f"train.max_steps={steps}",
            "train.log_every=1", "train.val_every=0", "train.checkpoint_every=3",
            "data.num_workers=0", "data.val_clips=1", "data.val_num_frames=5",
            "data.val_resolution=[32,32]", "optim.warmup_steps=2", "optim.lr=1e-3",
            *extra]


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _run(overrides):
    from videovae.train import train

    return train(load_train_config(str(ROOT / "configs" / "train" / "tiny_cpu.yaml"), overrides))


def test_resume_gives_the_same_losses(tmp_path):
    extra = ["loss.perceptual_weight=0.5", "loss.lpips_pretrained_trunk=false",
             "loss.disc_weight=0.5", "loss.disc_start=2", "loss.disc_channels=8",
             "loss.disc_layers=2", "loss.learn_logvar=true",
             "data.sources=[{type: synthetic, num_frames: 1, resolution: 32, batch_size: 2},"
             " {type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]"]
    full = tmp_path / "full"
    _run(_overrides(full, 6, extra))
    part = tmp_path / "part"
    _run(_overrides(part, 6, [*extra, "train.stop_at=3"]))  # a job stopped after step 3
    assert (part / "checkpoints" / "checkpoint-3").is_dir()
    assert not (part / "final").exists()
    _run(_overrides(part, 6, [*extra, "train.resume_from=latest"]))
    a = {m["step"]: m for m in _metrics(full)}
    b = {m["step"]: m for m in _metrics(part)}
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        for key in ("train/loss", "train/rec", "train/lpips", "train/g_loss", "train/d_loss"):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-5, abs=1e-7), (step, key)
    va = VideoVAE.from_pretrained(full / "final")
    vb = VideoVAE.from_pretrained(part / "final")
    for (n, p), q in zip(va.named_parameters(), vb.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_overfit_lowers_reconstruction_loss(tmp_path):
    """One fixed clip, seen every step: the reconstruction loss must fall well below its start."""
    (tmp_path / "one").mkdir()
    write_clip(tmp_path / "one" / "clip.mp4",
               pan_zoom_clip(load_photo("astronaut"), 5, (32, 32), speed=2.0))
    out = tmp_path / "overfit"
    _run(_overrides(out, 50, ["optim.lr=3e-3", "train.ema_decay=0",
                              "data.sources=[{type: video, path: " + str(tmp_path / "one") +
                              ", num_frames: 5, resolution: 32, random_crop: false,"
                              " batch_size: 1}]"]))
    rec = [m["train/rec"] for m in _metrics(out)]
    first, last = np.mean(rec[:3]), np.mean(rec[-5:])
    assert last < 0.6 * first, (first, last)
    assert (out / "val").is_dir() and list((out / "val").glob("*.mp4"))
    report = json.loads(sorted((out / "val").glob("*.json"))[-1].read_text())
    assert 0 < report["psnr"] < 100 and 0 < report["ssim"] <= 1  # held-out clips: no bound


def test_nonfinite_loss_is_skipped_and_counted(tmp_path, monkeypatch):
    real = VAELoss.generator_loss

    def flaky(self, x, x_hat, posterior, z, step, *a, **k):
        loss, logs = real(self, x, x_hat, posterior, z, step, *a, **k)
        return (loss * float("nan") if step == 1 else loss), logs

    monkeypatch.setattr(VAELoss, "generator_loss", flaky)
    out = tmp_path / "nan"
    _run(_overrides(out, 4))
    m = _metrics(out)
    assert [r["step"] for r in m] == [1, 2, 3, 4]
    assert m[-1]["train/nonfinite_steps"] == 1
    assert all(np.isfinite(r["train/rec"]) for r in m if r["step"] != 2)
    assert (out / "final" / "config.json").is_file()


def test_from_image_vae_with_regularization(tmp_path):
    _tiny_image_vae().save_pretrained(tmp_path / "image_vae")
    out = tmp_path / "reg"
    _run([f"train.output_dir={out}", "train.max_steps=2", "train.val_every=0",
          "train.checkpoint_every=0", "data.num_workers=0", "data.val_clips=1",
          "data.val_num_frames=5", "data.val_resolution=[32,32]",
          f"train.init_from_image_vae={tmp_path / 'image_vae'}", "loss.reg_dec_weight=1.0",
          "loss.reg_enc_weight=0.5",
          "data.sources=[{type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]",
          "model={}"])
    m = _metrics(out)
    assert all("train/reg_dec" in r and "train/reg_enc" in r for r in m)
    vae = VideoVAE.from_pretrained(out / "final")
    assert list(vae.config.block_out_channels) == [8, 16, 16, 16]


def test_two_process_accelerate_launch(tmp_path):
    _write_media(tmp_path / "data")
    out = tmp_path / "ddp"
    # accelerate 1.15's `--cpu` flag starts a single process (its simple launcher); the
    # multi-process launcher with no CUDA gives two gloo processes on the CPU
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "videovae", "train", "--config", str(ROOT / "configs/train/tiny_cpu.yaml"),
           *_overrides(out, 3, [
               "data.sources=[{type: image, path: " + str(tmp_path / "data/images") +
               ", num_frames: 1, resolution: 32, batch_size: 2},"
               " {type: video, path: " + str(tmp_path / "data/videos") +
               ", num_frames: 5, resolution: 32, batch_size: 1}]"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "checkpoints" / "checkpoint-3" / "model.safetensors").is_file()
    assert (out / "checkpoints" / "checkpoint-3" / "random_states_1.pkl").is_file()
    assert (out / "final" / "diffusion_pytorch_model.safetensors").is_file()
    assert "on 2 process(es)" in res.stderr
    m = _metrics(out)
    assert len(m) == 3 and all(np.isfinite(r["train/loss"]) for r in m)  # main process only
    assert m[-1]["train/skipped_samples"] >= 0
    VideoVAE.from_pretrained(out / "final")


def test_train_cli_bad_config_is_one_line(tmp_path, capsys):
    from videovae.cli import main as cli

    assert cli(["train", "--config", str(tmp_path / "missing.yaml")]) != 0
    assert cli(["train", "--config", str(ROOT / "configs/train/tiny_cpu.yaml"),
                "optim.lr=fast"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not found" in err[0] and "optim.lr" in err[1]

"""Training the `ktc` family: the latent regularization pairs the keyframe half with each group's
first frame, and trainer steps with it on move the video model, never the frozen image VAE."""

import json
from pathlib import Path

import pytest
import torch

from videovae import AutoencoderKTC
from videovae.convert import inflate_from_model
from videovae.training.config import load_train_config
from videovae.training.losses import LossConfig, VAELoss, map_frames

from helpers import random_video, tiny_image_vae

ROOT = Path(__file__).resolve().parents[2]
KEY_FRAMES = [0, 1, 5]  # of a 9-frame clip with 4 frames per group


def test_key_mapping_picks_each_groups_first_frame():
    x = torch.arange(13.0).view(1, 1, 13, 1, 1)
    t, idx = map_frames(x, "key", 4)
    assert t.flatten().tolist() == [0, 1, 5, 9] and idx == [0, 1, 2, 3]


def test_ktc_regularization_compares_the_keyframe_half_with_key_frames():
    image_vae = tiny_image_vae()
    vae = inflate_from_model(image_vae, "ktc")
    cfg = LossConfig(perceptual_weight=0, disc_weight=0, kl_weight=0, reg_dec_weight=1.0,
                     reg_enc_weight=1.0, reg_mapping="random")  # ktc overrides the mapping
    loss_fn = VAELoss(cfg, image_vae, 4, vae)
    x = random_video(t=9, h=16, w=16)
    keys = x[:, :, KEY_FRAMES].transpose(1, 2).flatten(0, 1)
    with torch.no_grad():
        ref_lat = image_vae.encode(keys).latent_dist.mode()
        ref = (keys - image_vae.decode(ref_lat).sample).abs().mean()
        lat = loss_fn.encoder_reg_latents(x)
    # the encoder path: both halves are the image latents of the key frames
    z = ref_lat.unflatten(0, (1, 3)).transpose(1, 2)
    assert lat.shape == (1, 8, 3, 2, 2)
    assert torch.equal(lat[:, :4], z) and torch.equal(lat[:, 4:], z)
    # the decoder path at inflation: D_img(keyframe half) is the image VAE's reconstruction
    # of the key frames (the temporal half holds each group's last frame instead)
    post = vae.encode(x).latent_dist
    reg = loss_fn._reg_dec(x, post.mode(), None)
    assert (reg - ref).abs() < 1e-5
    lasts = x[:, :, [0, 4, 8]].transpose(1, 2).flatten(0, 1)  # what the temporal half holds
    with torch.no_grad():
        other = (keys - image_vae.decode(image_vae.encode(lasts).latent_dist.mode()).sample)
    # the 1e-5 comparison above tells the key frames from the last frames apart
    assert (other.abs().mean() - ref).abs() > 1e-4
    reg.backward()
    enc = [p.grad for p in vae.encoder.parameters() if p.grad is not None]
    assert enc and sum(g.abs().sum() for g in enc) > 0
    assert all(p.grad is None for p in vae.decoder.parameters())
    assert all(p.grad is None and not p.requires_grad for p in image_vae.parameters())


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_ktc_trainer_steps_with_regularization(tmp_path, monkeypatch):
    """`model.arch: ktc` in the train config; gradients of every step reach the video encoder
    and decoder and never the frozen image VAE."""
    from accelerate import Accelerator

    from videovae.training import trainer

    tiny_image_vae().save_pretrained(tmp_path / "image_vae")
    seen, grads = {}, []
    real_build, real_backward = trainer.build_models, Accelerator.backward

    def build(cfg):
        seen["vae"], seen["image_vae"] = real_build(cfg)
        return seen["vae"], seen["image_vae"]

    def backward(self, loss, **kw):
        real_backward(self, loss, **kw)
        vae, image_vae = seen["vae"], seen["image_vae"]
        grads.append({
            "encoder": sum(float(p.grad.abs().sum()) for m in vae.encoder_modules()
                           for p in m.parameters() if p.grad is not None),
            "decoder": sum(float(p.grad.abs().sum()) for m in vae.decoder_modules()
                           for p in m.parameters() if p.grad is not None),
            "image_vae": any(p.grad is not None or p.requires_grad
                             for p in image_vae.parameters())})

    monkeypatch.setattr(trainer, "build_models", build)
    monkeypatch.setattr(Accelerator, "backward", backward)
    out = tmp_path / "ktc"
    cfg = load_train_config(str(ROOT / "configs" / "train" / "ktc_tiny_cpu.yaml"), [
        f"train.output_dir={out}", "train.max_steps=3", "train.val_every=0",
        "train.checkpoint_every=0", "data.num_workers=0", "data.val_clips=1",
        "data.val_num_frames=5", "data.val_resolution=[32,32]",
        f"train.init_from_image_vae={tmp_path / 'image_vae'}", "loss.reg_dec_weight=1.0",
        "loss.reg_enc_weight=0.5",
        "data.sources=[{type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]",
        "model={arch: ktc}"])
    before = {k: v.clone() for k, v in
              inflate_from_model(tiny_image_vae(), "ktc").state_dict().items()}
    final = trainer.train(cfg)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3
    assert all("train/reg_dec" in m and "train/reg_enc" in m for m in metrics)
    assert len(grads) == 3
    assert all(g["encoder"] > 0 and g["decoder"] > 0 and not g["image_vae"] for g in grads)
    trained = AutoencoderKTC.from_pretrained(final)
    assert trained.config.latent_channels == 8
    moved = [k for k, v in trained.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.") for k in moved)
    assert any(k.startswith("decoder.") for k in moved)

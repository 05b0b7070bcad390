"""Semantic latent alignment: zero when aligned, positive otherwise, per frame, and gradients
that reach the encoder and never the frozen backbone."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from videovae.training.alignment import LatentAlignment, alignment_terms
from videovae.training.config import load_train_config
from videovae.training.losses import LossConfig, VAELoss

from helpers import random_video, tiny_vae

ROOT = Path(__file__).resolve().parents[2]


def tiny_backbone(seed=0):
    """A randomly initialised stand-in for DINOv2: (N, 3, H, W) -> (N, 16, H/8, W/8)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 8, stride=8), nn.GELU(), nn.Conv2d(16, 16, 1))


def test_terms_are_zero_when_aligned_and_positive_otherwise():
    f = torch.randn(3, 16, 10, generator=torch.Generator().manual_seed(0))
    for p in (f, 2.5 * f):  # same directions: both terms vanish, whatever the scale
        mcos, mdms = alignment_terms(p, f, 0.5, 0.25)
        assert mcos.item() == 0 and mdms.item() == 0
    mcos, mdms = alignment_terms(-f, f, 0.5, 0.25)
    assert mcos.item() == pytest.approx(1.5)  # relu(1 - 0.5 - (-1)) everywhere
    assert mdms.item() == 0  # negating every vector keeps the pairwise similarities
    p = torch.randn(3, 16, 10, generator=torch.Generator().manual_seed(1))
    mcos, mdms = alignment_terms(p, f, 0.0, 0.0)
    assert mcos.item() > 0.5 and mdms.item() > 0.1
    # margins: a loose enough margin forgives a slightly rotated copy
    near = f + 0.05 * p
    assert alignment_terms(near, f, 0.5, 0.25) == (0, 0)


def test_alignment_is_per_frame_and_trains_encoder_not_backbone():
    vae = tiny_vae().train()
    align = LatentAlignment(tiny_backbone(), vae.config.latent_channels, 4)
    x = random_video(b=2, t=9, h=32, w=32)
    z = vae.encode(x).latent_dist.mode()
    loss, logs = align(x, z)
    assert loss.item() > 0 and set(logs) == {"align_mcos", "align_mdms"}
    loss.backward()
    enc = [p.grad for p in vae.encoder.parameters()]
    assert all(g is not None for g in enc) and sum(g.abs().sum() for g in enc) > 0
    assert align.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in align.backbone.parameters())
    # never mixing frames: the loss of a clip is the mean of the losses of its latent frames
    with torch.no_grad():
        per_frame = [align(x[:, :, 4 * g:4 * g + 1], z[:, :, g:g + 1])[0] for g in range(3)]
        assert torch.allclose(align(x, z)[0], torch.stack(per_frame).mean(), atol=1e-6)


def test_loss_config_and_trainer_with_alignment(tmp_path, fresh_accelerate_state):
    with pytest.raises(ValueError, match="align_backbone"):
        VAELoss(LossConfig(perceptual_weight=0, disc_weight=0, reg_dec_weight=0,
                           align_weight=1.0), latent_channels=4)
    # a backbone file as a user exports one (dynamic batch, fixed image size)
    program = torch.export.export(tiny_backbone(), (torch.zeros(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("n")},))
    torch.export.save(program, str(tmp_path / "backbone.pt2"))
    from videovae import VideoVAE
    from videovae.training.trainer import train

    def run(name, weight):
        out = tmp_path / name
        train(load_train_config(str(ROOT / "configs/train/tiny_cpu.yaml"), [
            "model.block_out_channels=[8,16,16,16]", "model.norm_num_groups=4",
            f"train.output_dir={out}", "train.max_steps=2", "train.val_every=0",
            "train.checkpoint_every=0", "train.ema_decay=0", "data.num_workers=0",
            "data.val_clips=1", "data.val_num_frames=5", "data.val_resolution=[32,32]",
            "data.sources=[{type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]",
            f"loss.align_weight={weight}", f"loss.align_backbone={tmp_path / 'backbone.pt2'}",
            "loss.align_image_size=32"]))
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        return rows, VideoVAE.from_pretrained(out / "final")

    rows, aligned = run("aligned", 0.5)
    assert len(rows) == 2 and all(r["train/align"] > 0 and r["train/align_mcos"] > 0
                                  for r in rows)
    plain_rows, plain = run("plain", 0.0)
    assert "train/align" not in plain_rows[0]
    # same seed and data: only the alignment term can make the trained encoders differ
    assert plain_rows[0]["train/rec"] == rows[0]["train/rec"]
    diff = [(p - q).abs().max().item() for p, q in zip(aligned.encoder.parameters(),
                                                       plain.encoder.parameters(), strict=True)]
    assert max(diff) > 0

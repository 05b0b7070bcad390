"""Training losses: frame mapping, latent regularization, LPIPS and GAN terms."""

import pytest
import torch

from videovae.errors import ConfigError
from videovae.models.distributions import DiagonalGaussianDistribution
from videovae.training.losses import LossConfig, VAELoss, map_frames

from helpers import random_video, tiny_image_vae


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
    from videovae.convert import inflate_from_model

    image_vae = tiny_image_vae()
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
    # the GAN term of the generator loss reaches the reconstruction: its gradient with the GAN
    # on differs from the one with it off by exactly disc_weight * d(-D(x_hat))/d x_hat
    loss_fn.discriminator.requires_grad_(False)
    torch.manual_seed(1)  # same LPIPS frames in both calls
    loss_on, logs = loss_fn.generator_loss(x, x_hat, post, None, step=0)
    (g_on,) = torch.autograd.grad(loss_on, x_hat)
    assert "g_loss" in logs and "lpips" in logs
    torch.manual_seed(1)
    loss_off, logs_off = loss_fn.generator_loss(x, x_hat, post, None, step=-1)  # before disc_start
    assert "g_loss" not in logs_off
    (g_off,) = torch.autograd.grad(loss_off, x_hat)
    (g_gan,) = torch.autograd.grad(-loss_fn.discriminator(x_hat).mean(), x_hat)
    assert g_gan.abs().max() > 0
    assert torch.allclose(g_on - g_off, cfg.disc_weight * g_gan, atol=1e-6)
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


def test_lowpass_term_sees_block_mean_colour_not_per_pixel_error():
    from videovae.training.losses import lowpass_distance

    x = random_video(t=3, h=16, w=24)
    tint = torch.tensor([0.02, -0.04, 0.0]).view(1, 3, 1, 1, 1)
    assert torch.allclose(lowpass_distance(x, x + tint), torch.tensor(0.02), atol=1e-6)
    checker = (torch.arange(16).view(16, 1) + torch.arange(24)) % 2 * 2 - 1.0  # +-1, mean 0
    noisy = x + 0.3 * checker
    assert lowpass_distance(x, noisy) < 1e-6 < 0.29 < (noisy - x).abs().mean()
    # a video is its frames; a border block smaller than 8x8 is a block of its own
    frames = x.transpose(1, 2).flatten(0, 1)
    assert torch.allclose(lowpass_distance(x, x + tint),
                          lowpass_distance(frames, frames + tint[:, :, 0]))
    odd = random_video(t=1, h=12, w=13)[:, :, 0]
    assert torch.allclose(lowpass_distance(odd, odd + 0.05), torch.tensor(0.05), atol=1e-6)


def test_lowpass_weight_adds_its_term_to_the_loss():
    x = random_video(t=5, h=16, w=16)
    x_hat = x + 0.1 * random_video(t=5, h=16, w=16, seed=1) + 0.03
    post = DiagonalGaussianDistribution(torch.zeros(1, 8, 2, 2, 2))
    base = VAELoss(LossConfig(perceptual_weight=0, disc_weight=0, reg_dec_weight=0))
    with_low = VAELoss(LossConfig(perceptual_weight=0, disc_weight=0, reg_dec_weight=0,
                                  lowpass_weight=2.0))
    loss0, logs0 = base.generator_loss(x, x_hat, post, None, step=0)
    loss1, logs1 = with_low.generator_loss(x, x_hat, post, None, step=0)
    assert "lowpass" not in logs0 and logs1["lowpass"] > 0.025
    assert torch.allclose(loss1 - loss0, 2.0 * logs1["lowpass"])
    with pytest.raises(ConfigError, match="lowpass_factor"):
        VAELoss(LossConfig(perceptual_weight=0, disc_weight=0, reg_dec_weight=0,
                           lowpass_factor=0))

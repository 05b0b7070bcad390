"""The VideoVAE model on tiny seeded configs: shapes, causality, round trips, errors."""

import pytest
import torch

from conftest import random_video, tiny_vae
from videovae import DiagonalGaussianDistribution, VideoVAE, num_latent_frames


@torch.no_grad()
def test_shapes_and_config_ratios():
    vae = tiny_vae()
    assert vae.config.temporal_compression_ratio == 4 == vae.temporal_compression_ratio
    assert vae.config.spatial_compression_ratio == 8 == vae.spatial_compression_ratio
    x = random_video(b=2, t=17, h=32, w=48)
    post = vae.encode(x).latent_dist
    assert isinstance(post, DiagonalGaussianDistribution)
    assert post.mean.shape == (2, 4, 5, 4, 6)
    assert post.kl().shape == (2,)
    assert post.sample(torch.Generator().manual_seed(0)).shape == post.mean.shape
    assert vae.decode(post.mode()).sample.shape == x.shape
    assert vae.decode(post.mode(), return_dict=False)[0].shape == x.shape
    # one temporal downsampling level: 2x
    vae2 = tiny_vae(temporal_downsample=(True, False, False))
    assert vae2.encode(x).latent_dist.mean.shape[2] == 9


@torch.no_grad()
def test_encoder_is_causal_frame_by_frame():
    """Changing input frame t changes no latent frame m with 4m < t (latent m sees frames <= 4m),
    and every latent frame from t's group on does change."""
    vae = tiny_vae()
    x = random_video(t=13, h=16, w=16)
    base = vae.encode(x).latent_dist.mean
    for t in range(13):
        y = x.clone()
        y[:, :, t] = -y[:, :, t]
        lat = vae.encode(y).latent_dist.mean
        group = num_latent_frames(t + 1) - 1  # latent frame that first sees frame t
        assert torch.equal(lat[:, :, :group], base[:, :, :group]), t
        assert (lat[:, :, group] - base[:, :, group]).abs().max() > 1e-4, t


@torch.no_grad()
def test_decoder_is_causal_in_latent_groups():
    """Changing latent frame m changes no decoded frame before its group (frames 4m-3..4m)."""
    vae = tiny_vae()
    z = torch.randn(1, 4, 5, 2, 2, generator=torch.Generator().manual_seed(1))
    base = vae.decode(z).sample
    for m in range(5):
        z2 = z.clone()
        z2[:, :, m] += 1.0
        out = vae.decode(z2).sample
        start = max(4 * m - 3, 0)
        assert torch.equal(out[:, :, :start], base[:, :, :start]), m
        assert (out[:, :, start] - base[:, :, start]).abs().max() > 1e-4, m


@torch.no_grad()
def test_end_to_end_causal():
    """Changing input frame t changes no reconstructed frame before t's group."""
    vae = tiny_vae()
    x = random_video(t=9, h=16, w=16)
    base = vae(x).sample
    for t in range(9):
        y = x.clone()
        y[:, :, t] = 0
        out = vae(y).sample
        start = max(4 * (num_latent_frames(t + 1) - 1) - 3, 0)
        assert torch.equal(out[:, :, :start], base[:, :, :start]), t
    # frames that start a group: nothing before t changes at all
    for t in (1, 5):
        y = x.clone()
        y[:, :, t] = 0
        assert torch.equal(vae(y).sample[:, :, :t], base[:, :, :t])


@torch.no_grad()
def test_every_frame_count_and_odd_size_round_trips():
    vae = tiny_vae()
    for t in range(1, 18):
        x = random_video(t=t, h=36, w=52, seed=t)
        out = vae(x).sample
        assert out.shape == x.shape, t
        lat = vae.encode(x[..., :32, :48]).latent_dist.mean
        assert lat.shape[2] == num_latent_frames(t) == 1 + (t + 2) // 4
        dec = vae.decode(lat, num_frames=t).sample
        assert dec.shape[2] == t
    with pytest.raises(ValueError, match="num_frames=3 does not fit 3 latent"):
        vae.decode(torch.zeros(1, 4, 3, 2, 2), num_frames=3)
    with pytest.raises(ValueError, match="num_frames=0 does not fit 1 latent"):
        vae.decode(torch.zeros(1, 4, 1, 2, 2), num_frames=0)


@torch.no_grad()
def test_padding_frames_matches_repeating_the_last_frame():
    vae = tiny_vae()
    x = random_video(t=6, h=16, w=16)
    padded = torch.cat([x, x[:, :, -1:].expand(-1, -1, 3, -1, -1)], dim=2)
    assert torch.equal(vae.encode(x).latent_dist.mean, vae.encode(padded).latent_dist.mean)


@torch.no_grad()
def test_save_and_load_pretrained_identical(tmp_path):
    vae = tiny_vae(seed=3, conv3d_layers="all", scaling_factor=0.5, latents_mean=[0.0] * 4,
                   latents_std=[1.0] * 4)
    x = random_video(t=5, h=16, w=16)
    vae.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = VideoVAE.from_pretrained(tmp_path).eval()
    assert loaded.config.conv3d_layers == "all"
    assert loaded.config.scaling_factor == 0.5
    assert torch.equal(loaded(x).sample, vae(x).sample)
    assert torch.equal(loaded.encode(x).latent_dist.logvar, vae.encode(x).latent_dist.logvar)


def test_bad_input_errors():
    vae = tiny_vae()
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\).*T=1"):
        vae.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="has 4 channels"):
        vae.encode(torch.zeros(1, 4, 1, 16, 16))
    with pytest.raises(ValueError, match="float"):
        vae.encode(torch.zeros(1, 3, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(torch.zeros(1, 3, 1, 20, 16))
    with pytest.raises(ValueError, match="no frames"):
        vae.encode(torch.zeros(1, 3, 0, 16, 16))
    with pytest.raises(ValueError, match=r"latents must be \(B, 4"):
        vae.decode(torch.zeros(1, 16, 1, 2, 2))
    with pytest.raises(ValueError, match="4D|\\(B, 3, T, H, W\\)"):
        vae(torch.zeros(1, 3, 16, 16))


def test_bad_configs():
    with pytest.raises(ValueError, match="temporal_downsample needs 3"):
        VideoVAE(block_out_channels=(8, 8, 8, 8), norm_num_groups=8, temporal_downsample=(True,))
    with pytest.raises(ValueError, match="not divisible"):
        VideoVAE(block_out_channels=(12, 8, 8, 8), norm_num_groups=8)
    with pytest.raises(ValueError, match="temporal_compression_ratio=8 disagrees"):
        VideoVAE(block_out_channels=(8, 8, 8, 8), norm_num_groups=8,
                 temporal_compression_ratio=8)
    with pytest.raises(ValueError, match="unknown arch"):
        VideoVAE(block_out_channels=(8, 8, 8, 8), norm_num_groups=8, arch="nope")


def test_gradients_and_checkpointing_match():
    vae = tiny_vae().train()
    x = random_video(t=5, h=16, w=16)
    rec, post = vae(x, return_posterior=True)
    loss = (rec - x).abs().mean() + 1e-6 * post.kl().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in vae.named_parameters()}
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "conv" in n and "weight" in n)
    vae.zero_grad()
    vae.enable_gradient_checkpointing()
    rec2, post2 = vae(x, return_posterior=True)
    ((rec2 - x).abs().mean() + 1e-6 * post2.kl().mean()).backward()
    for n, p in vae.named_parameters():
        assert torch.allclose(p.grad, grads[n], atol=1e-6, rtol=1e-4), n

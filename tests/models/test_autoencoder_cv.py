"""The `cv` family: the shared family properties, plus what only a frame-causal model has."""

import random

import pytest
import torch

from videovae import AutoencoderCV, num_latent_frames
from videovae.metrics import psnr_per_frame
from videovae.models.layers import StreamState

from family_mixin import FamilyTests
from helpers import TOL, chunked, random_video, tiny_vae


class TestCVFamily(FamilyTests):
    arch = "cv"
    config = dict(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
                  latent_channels=4)
    # 6-latent tiles of this random tiny model measured 16.04 dB against the untiled output
    tiling_psnr_floor = 15.0


@torch.no_grad()
def test_encoder_is_causal_frame_by_frame():
    """Latent m sees frames <= 4m only: changing frame t changes no latent m with 4m < t."""
    vae = tiny_vae()
    x = random_video(t=13, h=16, w=16)
    base = vae.encode(x).latent_dist.mean
    for t in range(13):
        y = x.clone()
        y[:, :, t] = -y[:, :, t]
        lat = vae.encode(y).latent_dist.mean
        group = num_latent_frames(t + 1) - 1
        assert torch.equal(lat[:, :, :group], base[:, :, :group]), t
        assert (lat[:, :, group] - base[:, :, group]).abs().max() > 1e-4, t


@torch.no_grad()
def test_stream_encode_equals_full_pass_for_any_chunking():
    """Frame-causal layers stream with chunks of any length, not only whole groups."""
    vae = tiny_vae(conv3d_layers="all")
    vae.set_chunk_sizes(encode_frames=400, decode_latents=100)
    rng = random.Random(0)
    x_all = random_video(t=30, h=16, w=16, seed=7)
    for t in range(1, 31):
        x = x_all[:, :, :t]
        ref = vae.encode(x).latent_dist.mean
        for sizes in ([1] * t, [5] * t, [rng.randint(1, 7) for _ in range(t)]):
            lat = torch.cat(list(vae.stream_encode(chunked(x, sizes))), dim=2)
            assert (lat - ref).abs().max() <= TOL, (t, sizes)


@torch.no_grad()
def test_strided_causal_conv_streams_frame_by_frame():
    """At layer level any chunking works, including chunks too short to emit an output."""
    from videovae.models.layers import CausalConv3d

    torch.manual_seed(0)
    conv = CausalConv3d(3, 5, 3, stride=(2, 2, 2), spatial_padding=(1, 1))
    x = torch.randn(1, 3, 11, 8, 8)
    full = conv(x)
    state = StreamState()
    outs = [conv(x[:, :, i:i + 1], state) for i in range(11)]
    assert [o.shape[2] for o in outs] == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert all(o.shape[1:2] + o.shape[3:] == full.shape[1:2] + full.shape[3:] for o in outs)
    assert (torch.cat(outs, dim=2) - full).abs().max() <= TOL


@torch.no_grad()
def test_non_causal_decoder_uses_temporal_tiles():
    vae = tiny_vae(decoder_causal=False)
    z = torch.randn(1, 4, 11, 2, 2, generator=torch.Generator().manual_seed(0))
    full = vae.decode(z).sample
    assert full.shape[2] == 41
    vae.enable_tiling(tile_sample_size=256, tile_sample_overlap=64, tile_latent_frames=16,
                      tile_latent_overlap=2)
    assert torch.equal(vae.decode(z).sample, full)  # one temporal tile: exact
    vae.enable_tiling(tile_sample_size=256, tile_sample_overlap=64, tile_latent_frames=4,
                      tile_latent_overlap=2)
    tiled = vae.decode(z).sample
    assert tiled.shape == full.shape
    streamed = torch.cat(list(vae.stream_decode(z.split(3, 2))), 2)
    assert (streamed - tiled).abs().max() <= TOL
    # 4-latent windows of this random model measured 18.65 dB (mean) against the full pass
    assert psnr_per_frame(tiled.clamp(-1, 1), full.clamp(-1, 1)).mean() > 17.5
    with pytest.raises(RuntimeError, match="cannot stream"):
        vae.decoder(z, state=StreamState())


def test_shapes_with_other_temporal_ratios():
    vae = tiny_vae(temporal_downsample=(True, False, False))
    assert vae.temporal_compression_ratio == 2
    with torch.no_grad():
        assert vae.encode(random_video(t=17, h=16, w=16)).latent_dist.mean.shape[2] == 9


@pytest.mark.parametrize("bad,message", [
    (dict(temporal_downsample=(True,)), "temporal_downsample needs 3"),
    (dict(block_out_channels=(12, 8, 8, 8)), "not divisible"),
    (dict(temporal_compression_ratio=8), "temporal_compression_ratio=8 disagrees"),
    (dict(conv3d_layers="some"), "conv3d_layers"),
    (dict(latents_mean=[0.0] * 3), "latents_mean has 3 values"),
], ids=["levels", "groups", "ratio", "conv3d_layers", "stats"])
def test_bad_configs(bad, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderCV(**{"block_out_channels": (8, 8, 8, 8), "norm_num_groups": 8, **bad})

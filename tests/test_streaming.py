"""Exact causal streaming and tiling."""

import random

import pytest
import torch
import torch.nn.functional as F

from conftest import random_video, tiny_vae
from videovae.metrics import psnr_per_frame
from videovae.layers import StreamState
from videovae.synthetic import load_photo, pan_zoom_clip
from videovae.tiling import tile_spans, tiled_apply_2d
from videovae.video_io import frames_to_tensor

TOL = 1e-5


def _chunks(x, sizes):
    out, i = [], 0
    for s in sizes:
        if i >= x.shape[2]:
            break
        out.append(x[:, :, i:i + s])
        i += s
    return out


def _chunkings(t, rng):
    random_sizes = [rng.randint(1, 7) for _ in range(t)]
    return {"1": [1] * t, "4": [4] * t, "5": [5] * t, "random": random_sizes}


@torch.no_grad()
def test_stream_encode_and_decode_equal_full_pass_for_every_length():
    vae = tiny_vae(conv3d_layers="all")
    vae.set_chunk_sizes(encode_frames=400, decode_latents=100)  # full pass reference
    rng = random.Random(0)
    x_all = random_video(t=40, h=16, w=16, seed=7)
    for t in range(1, 41):
        x = x_all[:, :, :t]
        ref = vae.encode(x).latent_dist.mean
        ref_dec = vae.decode(ref).sample
        for name, sizes in _chunkings(t, rng).items():
            lat = torch.cat(list(vae.stream_encode(_chunks(x, sizes))), dim=2)
            assert lat.shape == ref.shape, (t, name)
            assert (lat - ref).abs().max() <= TOL, (t, name)
            lsizes = [max(1, s // 2) for s in sizes]
            dec = torch.cat(list(vae.stream_decode(_chunks(ref, lsizes))), dim=2)
            assert dec.shape == ref_dec.shape, (t, name)
            assert (dec - ref_dec).abs().max() <= TOL, (t, name)


@torch.no_grad()
def test_internal_chunking_equals_full_pass():
    vae = tiny_vae()
    x = random_video(t=37, h=16, w=16, seed=2)
    vae.set_chunk_sizes(encode_frames=400, decode_latents=100)
    post = vae.encode(x).latent_dist
    full = vae.decode(post.mean).sample
    vae.set_chunk_sizes(encode_frames=4, decode_latents=1)
    post2 = vae.encode(x).latent_dist
    assert (post2.mean - post.mean).abs().max() <= TOL
    assert (post2.logvar - post.logvar).abs().max() <= TOL
    assert (vae.decode(post.mean).sample - full).abs().max() <= TOL


@torch.no_grad()
def test_stream_sample_and_errors():
    vae = tiny_vae()
    x = random_video(t=9, h=16, w=16)
    a = torch.cat(list(vae.stream_encode(x.split(3, 2), sample_posterior=True,
                                         generator=torch.Generator().manual_seed(0))), 2)
    b = torch.cat(list(vae.stream_encode(x.split(3, 2), sample_posterior=True,
                                         generator=torch.Generator().manual_seed(0))), 2)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="no frames"):
        list(vae.stream_encode([]))
    with pytest.raises(ValueError, match="differs"):
        list(vae.stream_encode([x[:, :, :1], random_video(t=2, h=24, w=16)]))


def _photo_clip(t=9, size=(64, 96)):
    return frames_to_tensor(pan_zoom_clip(load_photo("chelsea"), t, size, speed=2.0))


@torch.no_grad()
def test_tiling_exact_with_one_tile_and_close_otherwise():
    vae = tiny_vae()
    x = _photo_clip()
    ref_lat = vae.encode(x).latent_dist.mean
    ref = vae.decode(ref_lat).sample
    vae.enable_tiling(tile_sample_size=96, tile_sample_overlap=32)  # tile >= input: exact
    assert torch.equal(vae.encode(x).latent_dist.mean, ref_lat)
    assert torch.equal(vae.decode(ref_lat).sample, ref)
    vae.enable_tiling(tile_sample_size=48, tile_sample_overlap=16)
    lat = vae.encode(x).latent_dist.mean
    assert lat.shape == ref_lat.shape
    dec = vae.decode(ref_lat).sample
    assert dec.shape == ref.shape
    # per-tile GroupNorm statistics and attention make tiles differ; on this random tiny model
    # (6-latent tiles) the blend measured 16.0 dB against the untiled output
    assert psnr_per_frame(dec.clamp(-1, 1), ref.clamp(-1, 1)).min() > 14
    # streaming with tiles equals tiled full pass
    streamed = torch.cat(list(vae.stream_encode(x.split(2, 2))), 2)
    assert (streamed - lat).abs().max() <= TOL
    sdec = torch.cat(list(vae.stream_decode(ref_lat.split(1, 2))), 2)
    assert (sdec - dec).abs().max() <= TOL
    vae.disable_tiling()
    assert torch.equal(vae.decode(ref_lat).sample, ref)
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.enable_tiling(tile_sample_size=50)


def test_tile_placement_and_blending_are_exact_for_local_ops():
    """With a per-pixel op in each tile, tiled output equals the untiled one: spans cover the
    image and the blend weights sum to one everywhere."""
    x = torch.randn(1, 3, 2, 72, 104, generator=torch.Generator().manual_seed(0))
    down = tiled_apply_2d(x, lambda t, k: F.avg_pool3d(t, (1, 8, 8)), 32, 16, 1 / 8)
    assert torch.allclose(down, F.avg_pool3d(x, (1, 8, 8)), atol=1e-6)
    z = torch.randn(1, 4, 2, 9, 13, generator=torch.Generator().manual_seed(1))
    up = tiled_apply_2d(z, lambda t, k: F.interpolate(t, scale_factor=(1, 8, 8)), 4, 2, 8)
    assert torch.allclose(up, F.interpolate(z, scale_factor=(1, 8, 8)), atol=1e-6)
    assert tile_spans(104, 32, 16) == [(0, 32), (16, 48), (32, 64), (48, 80), (64, 96), (72, 104)]


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
    # far from window edges the blend equals the full pass only approximately: bounded error
    assert (tiled - full).abs().mean() < (full.abs().mean())
    with pytest.raises(RuntimeError, match="cannot stream"):
        vae.decoder(z, state=StreamState())


@torch.no_grad()
def test_strided_causal_conv_streams_frame_by_frame():
    """At layer level any chunking works, including chunks too short to emit an output."""
    from videovae.layers import TemporalConv3d

    torch.manual_seed(0)
    conv = TemporalConv3d(3, 5, 3, stride=(2, 2, 2), spatial_padding=(1, 1))
    x = torch.randn(1, 3, 11, 8, 8)
    full = conv(x)
    state = StreamState()
    outs = [conv(x[:, :, i:i + 1], state) for i in range(11)]
    assert [o.shape[2] for o in outs] == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert all(o.shape[1:2] + o.shape[3:] == full.shape[1:2] + full.shape[3:] for o in outs)
    assert (torch.cat(outs, dim=2) - full).abs().max() <= TOL

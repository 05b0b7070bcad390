"""The `ktc` family: the shared family properties, plus what only group causal layers have."""

import pytest
import torch

from videovae import AutoencoderKTC
from videovae.metrics import psnr_per_frame
from videovae.models.layers import StreamState
from videovae.models.layers_ktc import GroupCausalConv3d, KTCDownsample, KTCUpsample

from family_mixin import FamilyTests
from helpers import TOL, chunked, photo_clip, random_video, tiny_vae

KTC_TINY = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4,
                latent_channels=8)


def tiny_ktc(seed=0, **kw):
    return tiny_vae(seed, arch="ktc", **kw)


class TestKTCFamily(FamilyTests):
    arch = "ktc"
    config = KTC_TINY
    # 6-latent tiles of this random tiny model measured 15.9 dB against the untiled output
    tiling_psnr_floor = 15.0

    @staticmethod
    def image_part(latents):
        return latents[:, : latents.shape[1] // 2]  # the keyframe half


@torch.no_grad()
def test_rms_norms_stream_exactly_tile_closely_and_stay_group_causal():
    """IV-VAE's RMS norms (no inflation, so not in the family class): statistics per pixel keep
    streaming exact and tiles closer than GroupNorm's."""
    vae = tiny_ktc(norm_type="rms")
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in vae.modules())
    x = random_video(t=14, h=16, w=16, seed=4)
    vae.set_chunk_sizes(encode_frames=400, decode_latents=100)
    ref = vae.encode(x).latent_dist.mean
    ref_dec = vae.decode(ref).sample
    lat = torch.cat(list(vae.stream_encode(chunked(x, [5, 4, 8]))), 2)
    assert (lat - ref).abs().max() <= TOL
    dec = torch.cat(list(vae.stream_decode(ref.split(1, 2))), 2)
    assert (dec - ref_dec).abs().max() <= TOL
    y = x.clone()
    y[:, :, 6] = -y[:, :, 6]  # group 2 (frames 5-8)
    lat2 = vae.encode(y).latent_dist.mean
    assert torch.equal(lat2[:, :, :2], ref[:, :, :2])
    assert (lat2[:, :, 2] - ref[:, :, 2]).abs().max() > 1e-4
    z = vae.encode(photo_clip(t=5, size=(48, 64))).latent_dist.mean
    untiled = vae.decode(z).sample
    vae.enable_tiling(tile_sample_size=32, tile_sample_overlap=16)
    tiled = vae.decode(z).sample
    # 4-latent tiles: measured 18.0 dB for this random model (with GroupNorm: 14.3 dB)
    assert psnr_per_frame(tiled.clamp(-1, 1), untiled.clamp(-1, 1)).min() > 17.0


@torch.no_grad()
def test_a_frame_sees_the_later_frames_of_its_group():
    """Group causal, not frame causal: changing frame t changes the temporal-half activations
    of the earlier frames of its group (first layer) and its latent, never an earlier group."""
    vae = tiny_ktc()
    x = random_video(t=9, h=16, w=16)
    base_feat = vae.encoder.conv_in(x)
    base_lat = vae.encode(x).latent_dist.mean
    for t, (g, start) in {4: (1, 1), 7: (2, 5), 8: (2, 5)}.items():
        y = x.clone()
        y[:, :, t] = -y[:, :, t]
        feat = vae.encoder.conv_in(y)
        c = feat.shape[1] // 2
        assert torch.equal(feat[:, :, :start], base_feat[:, :, :start]), t
        # the keyframe half is per frame: only frame t moves; the temporal half sees frame t-1
        # (frame t's left neighbour) too, which lies in t's group
        assert torch.equal(feat[:, :c, start:t], base_feat[:, :c, start:t]), t
        assert (feat[:, c:, t - 1] - base_feat[:, c:, t - 1]).abs().max() > 1e-4, t
        lat = vae.encode(y).latent_dist.mean
        assert torch.equal(lat[:, :, :g], base_lat[:, :, :g]), t
        assert (lat[:, :, g] - base_lat[:, :, g]).abs().max() > 1e-4, t


@torch.no_grad()
def test_group_causal_conv_streams_group_by_group():
    torch.manual_seed(0)
    conv = GroupCausalConv3d(3, 5, 3, group_size=4)
    x = torch.randn(2, 3, 13, 8, 8)
    full = conv(x)
    # group 1 (frames 1-4) sees frame 0 and itself, not group 2
    y = x.clone()
    y[:, :, 5:] = 0
    assert torch.equal(conv(y)[:, :, :5], full[:, :, :5])
    # frame 0 alone is a 3-tap conv over [f0, f0, 0]: an image conv on one frame
    f0 = x[:, :, :1]
    ref = torch.nn.functional.conv3d(torch.cat([f0, f0, torch.zeros_like(f0)], 2), conv.weight,
                                     conv.bias, padding=(0, 1, 1))
    assert (full[:, :, :1] - ref).abs().max() <= TOL
    for sizes in ([1, 4, 4, 4], [5, 8], [1, 12], [9, 4]):
        state = StreamState()
        outs = [conv(c, state) for c in chunked(x, sizes)]
        assert [o.shape[2] for o in outs] == sizes
        assert (torch.cat(outs, 2) - full).abs().max() <= TOL, sizes
    state = StreamState()
    conv(x[:, :, :5], state)
    with pytest.raises(ValueError, match="not whole groups of 4"):
        conv(x[:, :, 5:8], state)


@torch.no_grad()
def test_temporal_resamplers_stream_and_keep_each_groups_first_frame():
    torch.manual_seed(0)
    down, up = KTCDownsample(4, temporal=True), KTCUpsample(4, temporal=True)
    x = torch.randn(1, 8, 9, 8, 8)
    d = down(x)
    assert d.shape[2] == 5
    # the keyframe half keeps frames 0, 1, 3, 5, 7 (after the spatial conv, which is per frame)
    spatial = down.conv(torch.nn.functional.pad(x, (0, 1, 0, 1)))[:, :4]
    assert torch.equal(d[:, :4], spatial[:, :, [0, 1, 3, 5, 7]])
    u = up(d)
    assert u.shape[2] == 9
    for mod, inp, sizes in ((down, x, [5, 4]), (down, x, [1, 8]), (up, d, [3, 2]),
                            (up, d, [1, 2, 2])):
        state = StreamState()
        out = torch.cat([mod(c, state) for c in chunked(inp, sizes)], 2)
        assert (out - mod(inp)).abs().max() <= TOL, (type(mod).__name__, sizes)


@pytest.mark.parametrize("bad,message", [
    ({"latent_channels": 5}, "latent_channels must be even"),
    ({"norm_type": "batch"}, "norm_type must be one of"),
    ({"temporal_downsample": (True,)}, "temporal_downsample needs 3"),
    ({"latents_mean": [0.0] * 4}, "latents_mean has 4 values for 8"),
], ids=["odd_latents", "norm_type", "levels", "stats"])
def test_bad_configs(bad, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderKTC(**{**KTC_TINY, **bad})


def test_image_vae_pairing_hooks():
    vae = tiny_ktc()
    z = torch.randn(2, 8, 3, 2, 2)
    assert torch.equal(vae.image_latents(z), z[:, :4])
    z_img = torch.randn(2, 4, 3, 2, 2)
    both = vae.latents_from_image(z_img)
    assert both.shape == (2, 8, 3, 2, 2)
    assert torch.equal(both[:, :4], z_img) and torch.equal(both[:, 4:], z_img)
    assert vae.image_reg_mapping == "key"

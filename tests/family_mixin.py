"""Properties every model family must have (diffusers' habit: one mixin, run by each family's
test file, `tests/models/test_autoencoder_<arch>.py`). A family's test class sets:

    arch                  its key in `videovae.models.FAMILIES`
    config                the family's one tiny test config (keyword arguments); every test
                          that builds a model of this family reads it (`helpers.tiny_vae`)
    tiling_psnr_floor     measured lower bound (dB) of tiled vs untiled decode on a photo clip
    not_applicable        {property: skip reason} for the shared properties (`PROPERTIES`) that
                          do not hold for this family; the rest must hold

and may override `image_part(latents)`: the part of the video latents that must equal the image
VAE's latents right after inflation (all of them unless the family says otherwise).
`tests/test_family_table.py` checks that every family has such a class and that it is complete.
"""

import random

import pytest
import torch

from videovae import load_model
from videovae.frames import num_latent_frames
from videovae.io.latent_file import config_hash
from videovae.metrics import psnr_per_frame
from videovae.models import family_class

from helpers import INFLATE_TOL, TOL, chunked, photo_clip, random_video, tiny_image_vae

# The shared properties, by name; a family's `not_applicable` names those that do not hold for it.
PROPERTIES = {
    "causality": "changing a frame changes nothing in earlier latent groups or frames",
    "streaming": "chunked encode/decode with carried caches equals one full pass",
    "frame_counts": "any frame count and odd sizes round-trip (padding = repeating frames)",
    "tiling": "spatial tiles: exact with one tile, close (measured floor) with several",
    "slicing": "batch slicing equals the batched pass",
    "save_load": "save_pretrained -> load_model keeps config, class and outputs (fp32/16/bf16)",
    "inflation": "inflated from an image VAE, one frame and still clips equal the image VAE's",
    "input_checks": "bad shapes, dtypes, sizes and empty inputs give readable ValueErrors",
    "training": "training hooks: freezing, last decoder layer, gradient checkpointing",
}


def _zc(vae):
    return vae.config.latent_channels


def _s(vae):
    return vae.spatial_compression_ratio


# Bad inputs every family refuses with a readable ValueError: case -> (call, message pattern).
BAD_INPUTS = {
    "4d_video": (lambda v: v.encode(torch.zeros(1, 3, 16, 16)),
                 lambda v: r"\(B, 3, T, H, W\).*T=1"),
    "wrong_channels": (lambda v: v.encode(torch.zeros(1, 4, 1, 16, 16)),
                       lambda v: "has 4 channels"),
    "integer_pixels": (lambda v: v.encode(torch.zeros(1, 3, 1, 16, 16, dtype=torch.uint8)),
                       lambda v: "float"),
    "size_not_a_multiple": (lambda v: v.encode(torch.zeros(1, 3, 1, _s(v) + 4, 16)),
                            lambda v: f"multiples of {_s(v)}"),
    "no_frames": (lambda v: v.encode(torch.zeros(1, 3, 0, 16, 16)), lambda v: "no frames"),
    "0_255_pixels": (lambda v: v.encode(torch.full((1, 3, 1, 16, 16), 200.0)),
                     lambda v: r"values span \[200, 200\]"),
    "nan_pixels": (lambda v: v.encode(torch.full((1, 3, 1, 16, 16), float("nan"))),
                   lambda v: "NaN"),
    "wrong_latent_channels": (lambda v: v.decode(torch.zeros(1, _zc(v) + 1, 1, 2, 2)),
                              lambda v: rf"latents must be \(B, {_zc(v)}"),
    "4d_latents": (lambda v: v.decode(torch.zeros(1, _zc(v), 2, 2)),
                   lambda v: "one latent frame per image"),
    "nan_latents": (lambda v: v.decode(torch.full((1, _zc(v), 1, 2, 2), float("inf"))),
                    lambda v: "infinite"),
    "4d_forward": (lambda v: v(torch.zeros(1, 3, 16, 16)), lambda v: r"\(B, 3, T, H, W\)"),
    "empty_stream": (lambda v: list(v.stream_encode([])), lambda v: "no frames"),
    "stream_changes_size": (lambda v: list(v.stream_encode([
        random_video(t=1, h=16, w=16), random_video(t=2, h=16 + _s(v), w=16)])),
        lambda v: "differs"),
    "decode_timestep": (lambda v: v.decode(torch.zeros(1, _zc(v), 1, 2, 2), torch.zeros(1)),
                        lambda v: "no timestep conditioning"),
}


def family_property(name):
    """Mark a mixin test as checking the shared property `name` (skipped where not applicable)."""
    assert name in PROPERTIES, name

    def deco(fn):
        fn.family_property = name
        return fn
    return deco


class FamilyTests:
    arch = None
    config = None
    tiling_psnr_floor = None
    not_applicable: dict = {}

    @pytest.fixture(autouse=True)
    def _skip_what_does_not_apply(self, request):
        prop = getattr(request.function, "family_property", None)
        if prop in self.not_applicable:
            pytest.skip(f"{self.arch}: {prop} does not apply: {self.not_applicable[prop]}")

    # ------------------------------------------------------------------ helpers
    def make(self, seed=0, **kw):
        torch.manual_seed(seed)
        return family_class(self.arch)(**{**self.config, **kw}).eval()

    @staticmethod
    def ratios(vae):
        return vae.temporal_compression_ratio, vae.spatial_compression_ratio

    @staticmethod
    def image_part(latents):
        return latents

    @staticmethod
    def group_of(t, r):
        """Latent group of frame t, and the first frame of that group."""
        g = num_latent_frames(t + 1, r) - 1
        return g, max(r * g - r + 1, 0)

    # ------------------------------------------------------------------ shapes
    @torch.no_grad()
    def test_shapes_and_ratios(self):
        vae = self.make()
        r, s = self.ratios(vae)
        assert (vae.config.temporal_compression_ratio, vae.config.spatial_compression_ratio) == (
            r, s)
        x = random_video(b=2, t=1 + 4 * r, h=4 * s, w=6 * s)
        post = vae.encode(x).latent_dist
        z = vae.config.latent_channels
        assert post.mean.shape == (2, z, 5, 4, 6)
        assert post.kl().shape == (2,)
        assert post.sample(torch.Generator().manual_seed(0)).shape == post.mean.shape
        assert vae.decode(post.mode()).sample.shape == x.shape
        assert vae.decode(post.mode(), return_dict=False)[0].shape == x.shape

    # ------------------------------------------------------------------ causality
    @family_property("causality")
    @torch.no_grad()
    def test_group_causality(self):
        """Changing frame t changes nothing in earlier groups (latents and reconstruction), and
        changes its own latent group and so the frames of its group that precede t."""
        vae = self.make()
        r, s = self.ratios(vae)
        x = random_video(t=1 + 3 * r, h=2 * s, w=2 * s)
        base_lat = vae.encode(x).latent_dist.mean
        base = vae(x).sample
        for t in range(x.shape[2]):
            y = x.clone()
            y[:, :, t] = -y[:, :, t]
            lat = vae.encode(y).latent_dist.mean
            g, start = self.group_of(t, r)
            assert torch.equal(lat[:, :, :g], base_lat[:, :, :g]), t
            assert (lat[:, :, g] - base_lat[:, :, g]).abs().max() > 1e-4, t
            out = vae(y).sample
            assert torch.equal(out[:, :, :start], base[:, :, :start]), t
            changed = (out[:, :, start:t + 1] - base[:, :, start:t + 1]).abs().amax(
                dim=(0, 1, 3, 4))
            assert (changed > 1e-6).all(), (t, changed)

    @family_property("causality")
    @torch.no_grad()
    def test_decoder_is_causal_in_latent_groups(self):
        vae = self.make()
        r, _ = self.ratios(vae)
        zc = vae.config.latent_channels
        z = torch.randn(1, zc, 5, 2, 2, generator=torch.Generator().manual_seed(1))
        base = vae.decode(z).sample
        for m in range(5):
            z2 = z.clone()
            z2[:, :, m] += 1.0
            out = vae.decode(z2).sample
            start = max(r * m - r + 1, 0)
            assert torch.equal(out[:, :, :start], base[:, :, :start]), m
            assert (out[:, :, start] - base[:, :, start]).abs().max() > 1e-4, m

    # ------------------------------------------------------------------ streaming
    @family_property("streaming")
    @torch.no_grad()
    def test_stream_equals_full_pass_for_group_chunkings(self):
        vae = self.make()
        vae.set_chunk_sizes(encode_frames=400, decode_latents=100)  # one full pass
        rng = random.Random(0)
        x_all = random_video(t=22, h=16, w=16, seed=7)
        for t in range(1, 23):
            x = x_all[:, :, :t]
            ref = vae.encode(x).latent_dist.mean
            ref_dec = vae.decode(ref).sample
            chunkings = {"1+4": [1] + [4] * t, "5+8": [5] + [8] * t,
                         "random": [1 + 4 * rng.randint(0, 2)] + [4 * rng.randint(1, 3)
                                                                  for _ in range(t)]}
            for name, sizes in chunkings.items():
                lat = torch.cat(list(vae.stream_encode(chunked(x, sizes))), dim=2)
                assert lat.shape == ref.shape, (t, name)
                assert (lat - ref).abs().max() <= TOL, (t, name)
                lsizes = [rng.randint(1, 3) for _ in range(ref.shape[2])]
                dec = torch.cat(list(vae.stream_decode(chunked(ref, lsizes))), dim=2)
                assert dec.shape == ref_dec.shape, (t, name)
                assert (dec - ref_dec).abs().max() <= TOL, (t, name)

    @family_property("streaming")
    @torch.no_grad()
    def test_stream_sampling_is_reproducible(self):
        vae = self.make()
        x = random_video(t=9, h=16, w=16)

        def sampled(seed):
            return torch.cat(list(vae.stream_encode(
                x.split(4, 2), sample_posterior=True,
                generator=torch.Generator().manual_seed(seed))), 2)

        mode = torch.cat(list(vae.stream_encode(x.split(4, 2))), 2)
        assert torch.equal(sampled(0), sampled(0))
        assert not torch.equal(sampled(0), sampled(1)) and not torch.equal(sampled(0), mode)

    @family_property("streaming")
    @torch.no_grad()
    def test_internal_chunking_equals_full_pass(self):
        vae = self.make()
        x = random_video(t=37, h=16, w=16, seed=2)
        vae.set_chunk_sizes(encode_frames=400, decode_latents=100)
        post = vae.encode(x).latent_dist
        full = vae.decode(post.mean).sample
        vae.set_chunk_sizes(encode_frames=4, decode_latents=1)
        post2 = vae.encode(x).latent_dist
        assert (post2.mean - post.mean).abs().max() <= TOL
        assert (post2.logvar - post.logvar).abs().max() <= TOL
        assert (vae.decode(post.mean).sample - full).abs().max() <= TOL
        with pytest.raises(ValueError, match=f"multiple of {vae.temporal_compression_ratio}"):
            vae.set_chunk_sizes(encode_frames=vae.temporal_compression_ratio + 2)

    # ------------------------------------------------------------------ frame counts and sizes
    @family_property("frame_counts")
    @torch.no_grad()
    def test_every_frame_count_and_odd_size_round_trips(self):
        vae = self.make()
        r, _ = self.ratios(vae)
        zc = vae.config.latent_channels
        for t in range(1, 18):
            x = random_video(t=t, h=36, w=52, seed=t)
            assert vae(x).sample.shape == x.shape, t
            lat = vae.encode(x[..., :32, :48]).latent_dist.mean
            assert lat.shape[2] == num_latent_frames(t, r) == 1 + (t + r - 2) // r
            assert vae.decode(lat, num_frames=t).sample.shape[2] == t
        with pytest.raises(ValueError, match="num_frames=3 does not fit 3 latent"):
            vae.decode(torch.zeros(1, zc, 3, 2, 2), num_frames=3)
        with pytest.raises(ValueError, match="num_frames=0 does not fit 1 latent"):
            vae.decode(torch.zeros(1, zc, 1, 2, 2), num_frames=0)

    @family_property("frame_counts")
    @torch.no_grad()
    def test_padding_equals_repeating_the_last_frame(self):
        vae = self.make()
        x = random_video(t=6, h=16, w=16)
        padded = torch.cat([x, x[:, :, -1:].expand(-1, -1, 3, -1, -1)], dim=2)
        assert torch.equal(vae.encode(x).latent_dist.mean, vae.encode(padded).latent_dist.mean)

    # ------------------------------------------------------------------ tiling
    @family_property("tiling")
    @torch.no_grad()
    def test_tiling_exact_with_one_tile_and_close_otherwise(self):
        vae = self.make()
        x = photo_clip()
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
        # per-tile statistics make tiles differ; the floor is measured per family
        assert psnr_per_frame(dec.clamp(-1, 1), ref.clamp(-1, 1)).min() > self.tiling_psnr_floor
        streamed = torch.cat(list(vae.stream_encode(x.split(4, 2))), 2)
        assert (streamed - lat).abs().max() <= TOL
        sdec = torch.cat(list(vae.stream_decode(ref_lat.split(1, 2))), 2)
        assert (sdec - dec).abs().max() <= TOL
        vae.disable_tiling()
        assert torch.equal(vae.decode(ref_lat).sample, ref)
        with pytest.raises(ValueError, match=f"multiples of {vae.spatial_compression_ratio}"):
            vae.enable_tiling(tile_sample_size=50)

    # ------------------------------------------------------------------ save / load
    @family_property("save_load")
    @torch.no_grad()
    def test_save_load_and_registry(self, tmp_path):
        zc = self.config["latent_channels"]
        vae = self.make(seed=3, scaling_factor=0.5, latents_mean=[0.1] * zc,
                        latents_std=[2.0] * zc)
        x = random_video(t=5, h=16, w=16)
        vae.save_pretrained(tmp_path)
        assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
        loaded = load_model(tmp_path)
        assert type(loaded) is type(vae) and loaded.arch == self.arch
        assert loaded.config.scaling_factor == 0.5 and list(loaded.config.latents_std) == [2.0] * zc
        # two instances: equal weights, but CPU kernels may differ in the last bits (1e-5)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                      vae.state_dict().values(), strict=True))
        assert (loaded(x).sample - vae(x).sample).abs().max() <= TOL
        assert (loaded.encode(x).latent_dist.logvar - vae.encode(x).latent_dist.logvar
                ).abs().max() <= TOL
        assert config_hash(loaded) == config_hash(vae)
        # the hash names the class: a look-alike class with the same config hashes differently
        lookalike = type("Other", (), {"config": vae.config})()
        assert config_hash(lookalike) != config_hash(vae)

    # ------------------------------------------------------------------ inflation
    @family_property("inflation")
    @torch.no_grad()
    def test_inflation_reproduces_the_image_vae(self, tmp_path):
        image_vae = tiny_image_vae(widths=(16, 32, 32, 32), groups=8)
        image_vae.save_pretrained(tmp_path / "image_vae")
        video = family_class(self.arch).from_image_vae(tmp_path / "image_vae", arch=self.arch)
        assert video.arch == self.arch
        video.eval()
        x = random_video(t=1, h=16, w=24, seed=3)
        ref = image_vae.encode(x[:, :, 0]).latent_dist
        ref_rec = image_vae.decode(ref.mode()).sample
        post = video.encode(x).latent_dist
        assert (self.image_part(post.mean)[:, :, 0] - ref.mean).abs().max() < INFLATE_TOL
        assert (self.image_part(post.logvar)[:, :, 0] - ref.logvar).abs().max() < INFLATE_TOL
        assert (video.decode(post.mode()).sample[:, :, 0] - ref_rec).abs().max() < INFLATE_TOL
        still = x.expand(-1, -1, 9, -1, -1)
        post = video.encode(still).latent_dist
        assert post.mean.shape[2] == 3
        assert (self.image_part(post.mean) - ref.mean[:, :, None]).abs().max() < INFLATE_TOL
        rec = video.decode(post.mode()).sample
        assert rec.shape[2] == 9
        assert (rec - ref_rec[:, :, None]).abs().max() < INFLATE_TOL

    # ------------------------------------------------------------------ errors
    @family_property("input_checks")
    @pytest.mark.parametrize("case", sorted(BAD_INPUTS))
    def test_bad_input_errors(self, case):
        vae = self.make()
        call, pattern = BAD_INPUTS[case]
        with pytest.raises(ValueError, match=pattern(vae)):
            call(vae)

    # ------------------------------------------------------------------ training hooks
    @family_property("training")
    def test_training_hooks_and_gradient_checkpointing(self):
        vae = self.make().train()
        x = random_video(t=5, h=16, w=16)
        rec, post = vae(x, return_posterior=True)
        ((rec - x).abs().mean() + 1e-6 * post.kl().mean()).backward()
        grads = {n: p.grad.clone() for n, p in vae.named_parameters() if p.grad is not None}
        last = vae.last_decoder_layer()
        assert any(last is p for m in vae.decoder_modules() for p in m.parameters())
        assert last.grad is not None and last.grad.abs().sum() > 0
        vae.zero_grad()
        vae.enable_gradient_checkpointing()
        rec2, post2 = vae(x, return_posterior=True)
        ((rec2 - x).abs().mean() + 1e-6 * post2.kl().mean()).backward()
        for n, p in vae.named_parameters():
            if n in grads:
                assert torch.allclose(p.grad, grads[n], atol=1e-6, rtol=1e-4), n
        vae.set_trainable(encoder=False, decoder=True)
        enc = [p for m in vae.encoder_modules() for p in m.parameters()]
        dec = [p for m in vae.decoder_modules() for p in m.parameters()]
        assert enc and dec and not any(p.requires_grad for p in enc)
        assert all(p.requires_grad for p in dec)
        assert {id(p) for p in enc} | {id(p) for p in dec} == {id(p) for p in vae.parameters()}

    # ------------------------------------------------------------------ slicing
    @family_property("slicing")
    @torch.no_grad()
    def test_slicing_equals_the_batched_pass(self):
        """`enable_slicing` runs a batch one sample at a time: same latents and pixels (within
        1e-5: a batch of one may take other CPU kernels than a batch of three)."""
        vae = self.make()
        x = random_video(b=3, t=6, h=16, w=16, seed=5)
        post = vae.encode(x).latent_dist
        dec = vae.decode(post.mode(), num_frames=6).sample
        vae.enable_slicing()
        assert vae.use_slicing
        post_s = vae.encode(x).latent_dist
        assert (post_s.mean - post.mean).abs().max() <= TOL
        assert (post_s.logvar - post.logvar).abs().max() <= TOL
        dec_s = vae.decode(post.mode(), num_frames=6).sample
        assert dec_s.shape == dec.shape and (dec_s - dec).abs().max() <= TOL
        # each sample alone equals its row of the batch
        one = vae.decode(post.mode()[1:2], num_frames=6).sample
        assert (one - dec[1:2]).abs().max() <= TOL
        vae.disable_slicing()
        assert not vae.use_slicing

    # ------------------------------------------------------------------ half precision
    @family_property("save_load")
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
    @torch.no_grad()
    def test_half_precision_save_load_round_trip(self, tmp_path, dtype):
        """A model saved in fp16/bf16 reloads with bit-identical weights in that dtype, and in
        fp32 as their exact upcast; its outputs stay close to the fp32 model's."""
        ref = self.make(seed=4)
        half = self.make(seed=4).to(dtype)
        half.save_pretrained(tmp_path)
        loaded = load_model(tmp_path, dtype=dtype)
        assert type(loaded) is type(ref)
        for (name, a), b in zip(half.state_dict().items(), loaded.state_dict().values(),
                                  strict=True):
            assert b.dtype == dtype and torch.equal(a, b), name
        upcast = load_model(tmp_path)  # fp32 by default
        for (name, a), b in zip(half.state_dict().items(), upcast.state_dict().values(),
                                  strict=True):
            assert b.dtype == torch.float32 and torch.equal(a.float(), b), name
        x = random_video(t=5, h=16, w=16, seed=6)
        out = loaded(x).sample
        assert out.dtype == dtype and torch.isfinite(out).all()
        # rounding the weights and activations to 8-11 bits: a bound, not equality
        assert (out.float() - ref(x).sample).abs().max() < (0.1 if dtype == torch.bfloat16
                                                            else 0.02)

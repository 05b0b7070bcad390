"""Every supported diffusers video pipeline, built from tiny random components around each model
family (64x64, 9 frames, 2 steps): the right frame count and size; the decoder network receives
exactly `denormalize_latents` (of the toolkit's model) of the latents the pipeline denoised; the
transformer sees exactly `normalize_latents` of the encoded conditioning; a saved pipeline
reloads in a fresh process with the same output."""

import json
import subprocess
import sys
import warnings

import pytest
import torch

from helpers import normalization, tiny_vae

pytest.importorskip("transformers", reason="diffusers' pipelines need it (the dev extras)")

from videovae.integrations.diffusers import guard_frame_counts
from videovae.integrations.tiny_pipelines import PIPELINES, build_pipeline
from videovae.latents import denormalize_latents, normalize_latents
from videovae.models import families

TOL = 1e-5
# every normalization with scaling_factor != 1, and 4 and 16 latent channels
CASES = [("scale", 4), ("shift", 16), ("per_channel", 16)]
CONDITIONED = ("cogvideox_i2v", "wan_v2v", "ltx_i2v", "svd")


def make_vae(arch="cv", z=4, norm="scale"):
    """A tiny model (the VAE dominates the run time of these pipelines) of family `arch`."""
    return tiny_vae(arch=arch, latent_channels=z, **normalization(norm, z))


def generator():
    return torch.Generator().manual_seed(0)


class Spy:
    """Records what a pipeline passes to `decode`, what reaches the decoder network, what
    `encode` returned, the final latents and the conditioning latents the transformer sees."""

    def __init__(self, pipe, name):
        self.pipe, self.name = pipe, name
        self.decode_in, self.network_in, self.encoded, self.cond = [], [], [], []
        self.final = None
        vae = pipe.vae
        decode, tile, encode = vae.decode, vae._decode_tile, vae.encode

        def spy_decode(z, *args, **kwargs):
            self.decode_in.append(z.clone())
            return decode(z, *args, **kwargs)

        def spy_tile(z, state):
            self.network_in.append(z.clone())
            return tile(z, state)

        def spy_encode(x, *args, **kwargs):
            out = encode(x, *args, **kwargs)
            post = out.latent_dist
            for how in ("sample", "mode"):
                method = getattr(post, how)

                def record(*a, _f=method, **k):
                    got = _f(*a, **k)
                    self.encoded.append((x.clone(), post, got))
                    return got
                setattr(post, how, record)
            return out

        vae.decode, vae._decode_tile, vae.encode = spy_decode, spy_tile, spy_encode
        if name == "cogvideox_i2v":  # (latents, image latents (B, F, Z, h, w))
            prepare = pipe.prepare_latents

            def spy_prepare(*args, **kwargs):
                out = prepare(*args, **kwargs)
                self.cond.append(out[1][:, 0])
                return out
            pipe.prepare_latents = spy_prepare
        elif name == "wan_v2v":  # the clean latents, before noise is added
            add_noise = pipe.scheduler.add_noise

            def spy_add_noise(clean, *args):
                self.cond.append(clean.clone())
                return add_noise(clean, *args)
            pipe.scheduler.add_noise = spy_add_noise
        elif name == "svd":  # the UNet input: (B, F, [latents, image latents], h, w)
            z = vae.config.latent_channels
            pipe.unet.register_forward_pre_hook(
                lambda m, args: self.cond.append(args[0][:, :, z:].clone()))

    def callback(self, pipe, step, t, kwargs):
        if step == pipe.num_timesteps - 1:
            self.final = kwargs["latents"].clone()
        return kwargs

    def __call__(self, **kwargs):
        return self.pipe(**kwargs, generator=generator(), callback_on_step_end=self.callback,
                         callback_on_step_end_tensor_inputs=["latents"]).frames

    def final_latents(self, num_frames=9):
        """The last step's latents as (B, Z, F, h, w)."""
        lat, pipe = self.final, self.pipe
        if self.name.startswith("ltx"):  # packed tokens
            f, s = 1 + (num_frames - 1) // 4, 64 // 8
            return pipe._unpack_latents(lat, f, s, s, pipe.transformer_spatial_patch_size,
                                        pipe.transformer_temporal_patch_size)
        if self.name.startswith("cogvideox") or self.name == "svd":  # (B, F, Z, h, w)
            return lat.transpose(1, 2)
        return lat

    def conditioning(self, final):
        """The transformer-space conditioning latents, as (B, Z, F', h, w)."""
        if self.name == "ltx_i2v":  # frame 0 is kept as the conditioning
            return final[:, :, :1]
        (cond,) = self.cond[:1]
        if self.name == "cogvideox_i2v":
            return cond[:, :, None]
        if self.name == "svd":
            assert all(torch.equal(c, cond) for c in self.cond)
            assert all(torch.equal(cond[:, i], cond[:, 0]) for i in range(cond.shape[1]))
            return cond[:, 0, :, None]
        return cond


def spied_run(name, vae, **build):
    """Build pipeline `name` around `vae`, run it with a `Spy`: (spy, frames)."""
    pipe, kwargs = build_pipeline(name, vae, **build)
    pipe.set_progress_bar_config(disable=True)
    spy = Spy(pipe, name)
    return spy, spy(**kwargs)


def close(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= TOL * max(1.0, b.abs().max().item()), err


@pytest.mark.parametrize("arch", families())
@pytest.mark.parametrize("norm,z", CASES)
@pytest.mark.parametrize("name", PIPELINES)
@torch.no_grad()
def test_pipeline_sees_the_toolkit_latents(arch, name, norm, z):
    vae = make_vae(arch, z, norm)
    spy, frames = spied_run(name, vae)
    assert frames.shape == (1, 9, 3, 64, 64)
    final = spy.final_latents()
    assert final.shape == (1, z, 3, 8, 8)
    # the decoder network decodes the toolkit's denormalization of the denoised latents ...
    close(torch.cat(spy.network_in, dim=2), denormalize_latents(final, vae.config))
    # ... which is what the pipeline passed to decode, in the prepared model's convention
    (decoded,) = spy.decode_in
    close(decoded, denormalize_latents(final, spy.pipe.vae.config))
    if name not in CONDITIONED:
        assert not spy.encoded
        return
    # the conditioning the transformer sees is the toolkit's normalization of the encoding
    (x, post, got), = spy.encoded
    eps = (got - post.mean) / post.std  # 0 where the pipeline takes the mode
    raw = vae.encode(x).latent_dist
    expected = normalize_latents(raw.mean + raw.std * eps, vae.config)
    close(spy.conditioning(final), expected[:, :, :1] if name != "wan_v2v" else expected)


@torch.no_grad()
def test_without_for_pipeline_the_check_fails():
    """The model passed as is: HunyuanVideo ignores the shift, LTX image-to-video normalizes the
    image without scaling_factor. The assertions above would catch both."""
    vae = make_vae(norm="shift")
    spy, _ = spied_run("hunyuan_video", vae, prepare=False)
    err = torch.cat(spy.network_in, 2) - denormalize_latents(spy.final_latents(), vae.config)
    assert torch.allclose(err, torch.full_like(err, -0.3), atol=1e-5)  # the missing shift
    vae = make_vae(norm="per_channel")
    spy, _ = spied_run("ltx_i2v", vae, prepare=False)
    final = spy.final_latents()
    close(torch.cat(spy.network_in, 2), denormalize_latents(final, vae.config))  # decode: fine
    (x, post, got), = spy.encoded
    expected = normalize_latents(got, vae.config)[:, :, :1]
    assert (spy.conditioning(final) - expected).abs().max() > 0.1  # missing scaling_factor


@pytest.mark.parametrize("name", ["animatediff", "svd"])
@pytest.mark.parametrize("frames", [11, 1])
@torch.no_grad()
def test_video_pipelines_return_any_frame_count(name, frames):
    spy, out = spied_run(name, make_vae(), num_frames=frames)
    assert out.shape == (1, frames, 3, 64, 64)
    assert spy.final_latents().shape[2] == 1 + -(-(frames - 1) // 4)


@torch.no_grad()
def test_guard_warns_where_a_pipeline_drops_frames():
    pipe, kwargs = build_pipeline("hunyuan_video", make_vae(), num_frames=11)
    pipe.set_progress_bar_config(disable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = pipe(**kwargs, generator=generator()).frames  # silently 9 frames
    assert out.shape[1] == 9
    guard_frame_counts(pipe)
    with pytest.warns(UserWarning, match=r"num_frames=11 is not 1 \+ 4k.*return 9.*9 or 13"):
        pipe(**kwargs, generator=generator())
    guard_frame_counts(pipe, strict=True)
    with pytest.raises(ValueError, match="9 or 13"):
        pipe(**kwargs, generator=generator())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe(**{**kwargs, "num_frames": 9}, generator=generator())
    # video-to-video: the pipeline would size its noise for 9 frames, the model encode 13
    pipe, kwargs = build_pipeline("wan_v2v", make_vae(), num_frames=11)
    with pytest.raises(ValueError, match="the video has 11 frames.*pass 9 or 13"):
        guard_frame_counts(pipe)(**kwargs, generator=generator())
    pipe, _ = build_pipeline("svd", make_vae())  # takes any count: nothing to guard
    assert guard_frame_counts(pipe) is pipe and "prepare_latents" not in vars(pipe)


RELOAD = """
import json, sys, torch
from pathlib import Path
from diffusers import DiffusionPipeline
import videovae.integrations.pipelines as ours
from videovae.runtime import setup_cpu

setup_cpu()
torch.set_num_threads(1)
for d in sorted(Path(sys.argv[1]).iterdir()):
    index = json.loads((d / "model_index.json").read_text())
    left_out = {k: None for k, v in index.items() if v == [None, None]}  # text encoders
    pipe = getattr(ours, index["_class_name"], DiffusionPipeline).from_pretrained(d, **left_out)
    pipe.set_progress_bar_config(disable=True)
    kwargs = torch.load(d / "call.pt", weights_only=False)
    frames = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).frames
    torch.save(frames, d / "frames.pt")
    (d / "vae_config.json").write_text(json.dumps(dict(pipe.vae.config)))
"""


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory):
    """Each pipeline (16 channels, per-channel statistics) saved, and loaded and run again in a
    fresh process: {(arch, name): (frames here, frames there, vae config here, there)}."""
    root = tmp_path_factory.mktemp("pipelines")
    here = {}
    for arch in families():
        for name in PIPELINES:
            vae = make_vae(arch, 16, "per_channel")
            pipe, kwargs = build_pipeline(name, vae)
            pipe.set_progress_bar_config(disable=True)
            with torch.no_grad():
                frames = pipe(**kwargs, generator=generator()).frames
            d = root / f"{arch}-{name}"
            pipe.save_pretrained(d)
            torch.save(kwargs, d / "call.pt")
            here[(arch, name)] = (frames, json.loads(json.dumps(dict(pipe.vae.config))))
    subprocess.run([sys.executable, "-c", RELOAD, str(root)], check=True)
    return {key: (*here[key], torch.load(root / f"{key[0]}-{key[1]}" / "frames.pt"),
                  json.loads((root / f"{key[0]}-{key[1]}" / "vae_config.json").read_text()))
            for key in here}


@pytest.mark.slow  # a second process
@pytest.mark.parametrize("arch", families())
@pytest.mark.parametrize("name", PIPELINES)
def test_saved_pipeline_reloads_in_a_fresh_process(reloaded, arch, name):
    frames, config, frames_there, config_there = reloaded[(arch, name)]
    assert frames_there.shape == frames.shape == (1, 9, 3, 64, 64)
    # the same weights; reloaded (memory-mapped) transformers round differently in the last
    # bits (~1e-6 here; diffusers' own save/load tests allow 1e-4)
    assert (frames_there - frames).abs().max() <= 1e-4
    assert public(config_there) == public(config)


def public(config):
    return {k: v for k, v in config.items() if not k.startswith("_")}


def test_pipeline_demo_tool_writes_the_video(tmp_path):
    import argparse
    import importlib.util
    from pathlib import Path

    from videovae.io.video import VideoReader

    path = Path(__file__).parents[2] / "tools" / "pipeline_demo.py"
    spec = importlib.util.spec_from_file_location("pipeline_demo", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "ltx.mp4"
    args = dict(pipeline="ltx", pipeline_dir=None, model=None, arch="cv", latent_channels=4,
                prompt="", image=None, frames=9, size="64", steps=2, fps=8.0, seed=0,
                device="cpu", output=str(out))
    tool.main(argparse.Namespace(**args))
    reader = VideoReader(out)
    assert (reader.num_frames, reader.height, reader.width) == (9, 64, 64)

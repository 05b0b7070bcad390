"""The `wan` family: diffusers' AutoencoderKLWan wrapped as a toolkit family. The shared family
properties, plus: streamed equals upstream's own encode/decode, upstream folders load (and
image-VAE and unsupported folders get errors saying what to do), the saved folder is upstream's
format, checkpointed gradients equal unchecked ones through the carried caches, and the
latent-preserving decoder fine-tune."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan

from videovae import load_model
from videovae.errors import ModelLoadError
from videovae.frames import pad_frames
from videovae.models import family_class

from family_mixin import FamilyTests
from helpers import TOL, chunked, photo_clip, random_video, reset_accelerate_state

ROOT = Path(__file__).resolve().parents[2]
# Wan 2.1's layout (4x8x8, three levels of 2x, non-residual), at toy widths
WAN_TINY = dict(base_dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1, latent_channels=4)
# Wan 2.2 TI2V's layout: residual blocks, 2x2 patches (4x16x16)
WAN22_TINY = dict(base_dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1, z_dim=8,
                  is_residual=True, patch_size=2, decoder_base_dim=16)
# Qwen-Image's VAE: Wan 2.1's design in diffusers' AutoencoderKLQwenImage
QWEN_TINY = dict(WAN_TINY, upstream_format="AutoencoderKLQwenImage")


class TestWanFamily(FamilyTests):
    arch = "wan"
    config = WAN_TINY
    # 48-px tiles of this random tiny model measured 26.4 dB against the untiled output
    tiling_psnr_floor = 24.0
    not_applicable = {"inflation": "a Wan VAE is loaded from its own folder, not inflated from "
                                   "an image VAE (videovae.convert.INFLATERS lacks it)"}


def tiny_wan(seed=0, **kw):
    torch.manual_seed(seed)
    return family_class("wan")(**{**WAN_TINY, **kw}).eval()


def upstream_wan(seed=0, **kw):
    """A tiny upstream model, built by diffusers alone (with statistics for its channels)."""
    torch.manual_seed(seed)
    cfg = {**WAN_TINY, **kw}
    z = cfg["z_dim"] = cfg.pop("latent_channels")
    cfg["dim_mult"] = list(cfg["dim_mult"])  # upstream needs a list
    cfg.setdefault("latents_mean", [0.1 * i for i in range(z)])
    cfg.setdefault("latents_std", [1.0 + 0.25 * i for i in range(z)])
    return AutoencoderKLWan(**cfg).eval()


# ---------------------------------------------------------------------------------- vs upstream
@pytest.mark.parametrize("config", [WAN_TINY, WAN22_TINY, QWEN_TINY],
                         ids=["wan2.1", "wan2.2", "qwen-image"])
@torch.no_grad()
def test_streamed_equals_upstream_for_every_frame_count(config):
    """encode / decode / stream_encode / stream_decode equal upstream's full pass (which runs
    its own 1 + 4 + 4 ... chunking) for T = 1..21; frames beyond 1 + 4k are padded (upstream
    drops them); decode is upstream's before its clamp."""
    torch.manual_seed(0)
    vae = family_class("wan")(**config).eval()
    up = vae.upstream
    s = vae.spatial_compression_ratio
    rng = random.Random(0)
    x_all = random_video(t=21, h=2 * s, w=2 * s, seed=1)
    worst, beyond = 0.0, 0.0
    for t in range(1, 22) if config is WAN_TINY else (1, 5, 8, 13):
        x = x_all[:, :, :t]
        ref = up.encode(pad_frames(x, 4)).latent_dist
        ref_dec = up.decode(ref.mean).sample
        post = vae.encode(x).latent_dist
        dec = vae.decode(post.mean).sample
        sizes = [1 + 4 * rng.randint(0, 2)] + [4 * rng.randint(1, 3) for _ in range(t)]
        streamed = torch.cat(list(vae.stream_encode(chunked(x, sizes))), dim=2)
        lsizes = [rng.randint(1, 3) for _ in range(ref.mean.shape[2])]
        sdec = torch.cat(list(vae.stream_decode(chunked(ref.mean, lsizes))), dim=2)
        for ours, theirs in ((post.mean, ref.mean), (post.logvar, ref.logvar),
                             (streamed, ref.mean), (dec.clamp(-1, 1), ref_dec),
                             (sdec.clamp(-1, 1), ref_dec)):
            assert ours.shape == theirs.shape, t
            worst = max(worst, (ours - theirs).abs().max().item())
        assert vae.decode(post.mean, num_frames=t).sample.shape[2] == t
        beyond = max(beyond, dec.abs().max().item())
    assert worst <= TOL, worst  # measured 1.7e-6 (wan2.1)
    assert beyond > 1.0  # not clamped: training sees the gradient beyond [-1, 1]


@torch.no_grad()
def test_two_streams_interleaved_keep_their_own_caches():
    vae = tiny_wan()
    a, b = random_video(t=13, h=16, w=16, seed=2), random_video(t=13, h=16, w=16, seed=3)
    got = {0: [], 1: []}
    streams = [vae.stream_encode(a.split(4, 2)), vae.stream_encode(b.split(4, 2))]
    for pair in zip(*streams, strict=True):
        for i, z in enumerate(pair):
            got[i].append(z)
    for i, x in enumerate((a, b)):
        ref = vae.upstream.encode(x).latent_dist.mean
        assert (torch.cat(got[i], 2) - ref).abs().max() <= TOL


# ---------------------------------------------------------------------------------- loading
@torch.no_grad()
def test_an_upstream_folder_loads_as_the_family(tmp_path):
    up = upstream_wan(seed=5, latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 2.0, 0.5, 1.0])
    up.save_pretrained(tmp_path / "wan")
    vae = load_model(tmp_path / "wan")
    assert type(vae).__name__ == "AutoencoderWan" and vae.arch == "wan"
    assert isinstance(vae.upstream, AutoencoderKLWan)
    assert (vae.temporal_compression_ratio, vae.spatial_compression_ratio) == (4, 8)
    cfg = vae.config
    assert cfg.latent_channels == cfg.z_dim == 4
    assert list(cfg.latents_std) == [1.5, 2.0, 0.5, 1.0] and cfg.scaling_factor == 1.0
    assert cfg.shift_factor is None
    theirs = up.state_dict()
    assert all(torch.equal(t, theirs[k]) for k, t in vae.upstream.state_dict().items())
    x = random_video(t=9, h=16, w=24)
    assert (vae.encode(x).latent_dist.mean - up.encode(x).latent_dist.mean).abs().max() <= TOL


@torch.no_grad()
def test_a_qwen_image_folder_loads_and_saves_as_qwen_image(tmp_path):
    torch.manual_seed(6)
    up = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                latents_mean=[0.2] * 4, latents_std=[1.5] * 4).eval()
    up.save_pretrained(tmp_path / "qwen")
    vae = load_model(tmp_path / "qwen")
    assert vae.arch == "wan" and vae.config.upstream_format == "AutoencoderKLQwenImage"
    assert type(vae.upstream) is AutoencoderKLQwenImage and vae.config.in_channels == 3
    x = random_video(t=9, h=16, w=16)
    assert (vae.encode(x).latent_dist.mean - up.encode(x).latent_dist.mean).abs().max() <= TOL
    vae.save_pretrained(tmp_path / "again")
    cfg = json.loads((tmp_path / "again" / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderKLQwenImage" and cfg["input_channels"] == 3
    again = AutoencoderKLQwenImage.from_pretrained(tmp_path / "again")
    theirs = up.state_dict()
    assert all(torch.equal(t, theirs[k]) for k, t in again.state_dict().items())
    assert load_model(tmp_path / "again").config == vae.config


def test_default_statistics_are_wan_2_1s():
    with torch.device("meta"):
        vae = family_class("wan")()
        ref = AutoencoderKLWan()
    assert vae.config.z_dim == 16 and vae.config.latents_mean == ref.config.latents_mean
    assert vae.config.latents_std == ref.config.latents_std
    assert vae.temperal_downsample == list(ref.config.temperal_downsample)


@pytest.mark.parametrize("class_name,pattern", [
    ("AutoencoderKL", r"image VAE \(AutoencoderKL\).*videovae inflate --image-vae"),
    ("AutoencoderKLCogVideoX", r"AutoencoderKLCogVideoX.*supported: .*AutoencoderKLWan"),
])
def test_other_folders_say_what_to_do(tmp_path, class_name, pattern):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": class_name}))
    with pytest.raises(ModelLoadError, match=pattern):
        load_model(tmp_path)


def test_config_errors():
    with pytest.raises(ValueError, match="z_dim=4 and latent_channels=8 disagree"):
        family_class("wan")(**{**WAN_TINY, "z_dim": 4, "latent_channels": 8})
    with pytest.raises(ValueError, match="scale_factor_spatial=16 disagrees"):
        family_class("wan")(**WAN_TINY, scale_factor_spatial=16)
    with pytest.raises(ValueError, match="temperal_downsample needs 3 entries"):
        family_class("wan")(**WAN_TINY, temperal_downsample=(True, True))


@torch.no_grad()
def test_saved_folder_is_upstreams_format(tmp_path):
    vae = tiny_wan(seed=2, latents_mean=[0.5] * 4, latents_std=[2.0] * 4)
    vae.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderKLWan" and cfg["z_dim"] == 4
    assert "scaling_factor" not in cfg  # Wan's convention: nothing upstream does not know
    again = AutoencoderKLWan.from_pretrained(tmp_path).eval()
    assert again.config.latents_mean == [0.5] * 4
    mine = vae.upstream.state_dict()
    assert all(torch.equal(t, mine[k]) for k, t in again.state_dict().items())
    x = random_video(t=5, h=16, w=16)
    assert (again.encode(x).latent_dist.mean - vae.encode(x).latent_dist.mean
            ).abs().max() <= TOL


# ---------------------------------------------------------------------------------- training
def _loss_and_grads(vae, x):
    vae.zero_grad()
    rec, post = vae(x, return_posterior=True)
    ((rec - x).abs().mean() + 1e-3 * post.kl().mean()).backward()
    return {n: p.grad.clone() for n, p in vae.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunks", [(400, 100), (4, 1)], ids=["one_pass", "chunked"])
def test_gradient_checkpointing_gives_the_same_gradients(chunks):
    """Through carried caches too (the Wan2.1 #430 failure): chunks of 4 frames / 1 latent
    frame, each step recomputed in the backward pass with the caches it first saw."""
    vae = tiny_wan(seed=1).train()
    vae.set_chunk_sizes(*chunks)
    x = random_video(t=13, h=16, w=16, seed=4)
    plain = _loss_and_grads(vae, x)
    vae.enable_gradient_checkpointing()
    calls = []
    for owner in (vae.upstream.encoder, vae.upstream.decoder):
        func = owner._gradient_checkpointing_func
        owner._gradient_checkpointing_func = (
            lambda *a, _f=func: calls.append(1) or _f(*a))
    checked = _loss_and_grads(vae, x)
    assert calls, "no step was checkpointed"
    assert plain.keys() == checked.keys() and len(plain) == len(list(vae.parameters()))
    worst = max((plain[n] - checked[n]).abs().max().item() for n in plain)
    assert worst <= TOL, worst


@pytest.mark.slow  # trains 20 steps and starts a second Python
def test_decoder_fine_tune_keeps_the_encoder_and_saves_upstreams_format(tmp_path):
    """`train.init_from_pretrained` on an upstream folder with `train.train_encoder: false`:
    every encoder weight stays bit-identical, the training loss falls, and OUT/final is an
    AutoencoderKLWan folder that diffusers loads without videovae, encoding as before."""
    from videovae.training.config import load_train_config
    from videovae.training.trainer import train

    orig = upstream_wan(seed=3)
    orig.save_pretrained(tmp_path / "wan")
    out = tmp_path / "run"
    try:
        final = train(load_train_config(
            str(ROOT / "configs" / "train" / "wan_decoder_tiny_cpu.yaml"),
            [f"train.init_from_pretrained={tmp_path / 'wan'}", f"train.output_dir={out}",
             "data.num_workers=0", "train.checkpoint_every=0"]))
    finally:
        reset_accelerate_state()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 20
    # one new random clip per step: noisy (measured 0.58 -> 0.46 over the first / last five)
    assert sum(losses[-5:]) < sum(losses[:5]), losses
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderKLWan"
    assert (cfg["latents_mean"], cfg["latents_std"]) == (orig.config.latents_mean,
                                                         orig.config.latents_std)
    clip = random_video(t=9, h=16, w=16, seed=8)
    torch.save(clip, tmp_path / "clip.pt")
    script = (
        "import sys, torch\n"
        "from diffusers import AutoencoderKLWan\n"
        f"m = AutoencoderKLWan.from_pretrained({str(final)!r}).eval()\n"
        f"x = torch.load({str(tmp_path / 'clip.pt')!r}, weights_only=True)\n"
        "with torch.no_grad():\n"
        "    z = m.encode(x).latent_dist.mean\n"
        "    m.decode(z)\n"
        f"torch.save({{k: v for k, v in m.state_dict().items()}}, {str(tmp_path / 'w.pt')!r})\n"
        f"torch.save(z, {str(tmp_path / 'z.pt')!r})\n"
        "assert not any(name.startswith('videovae') for name in sys.modules)\n")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    tuned = torch.load(tmp_path / "w.pt", weights_only=True)
    before = orig.state_dict()
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    assert encoder and all(torch.equal(tuned[k], before[k]) for k in encoder)
    assert any(not torch.equal(tuned[k], before[k]) for k in before if k.startswith("decoder."))
    with torch.no_grad():
        z = orig.encode(clip).latent_dist.mean
    assert (torch.load(tmp_path / "z.pt", weights_only=True) - z).abs().max() <= TOL
    # the decoder learned: a photo clip it never saw reconstructs better (measured L1 0.60 ->
    # 0.33 through the same, untouched latents)
    tuned_vae = AutoencoderKLWan.from_pretrained(final).eval()
    x = photo_clip(t=9, size=(32, 32), photo="coffee")
    with torch.no_grad():
        errors = [(m(x).sample - x).abs().mean().item() for m in (orig, tuned_vae)]
    assert errors[1] < 0.8 * errors[0], errors

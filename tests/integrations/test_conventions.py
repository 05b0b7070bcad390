"""What every family exposes to diffusers pipelines, and `for_pipeline`'s conventions, on the
model alone (no pipeline): derived names, the LTX attributes, the same normalized latents in
every convention, save/load, decode's signature, frame counts."""

import json
import warnings

import pytest
import torch

from videovae import load_model
from videovae.data.latent_stats import measure_latent_stats
from videovae.integrations.diffusers import (
    check_num_frames,
    for_pipeline,
    pipeline_convention,
    valid_num_frames,
)
from videovae.io.latent_file import config_hash
from videovae.latents import denormalize_latents, normalize_latents
from videovae.models import families

from helpers import normalization, random_video, tiny_vae

TOL = 1e-5
NORMS = ("scale", "shift", "per_channel")


def close(a, b, tol=TOL):
    assert a.shape == b.shape
    assert (a - b).abs().max() <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("arch", families())
def test_derived_names_follow_the_config_and_ignore_stale_values(arch, tmp_path):
    vae = for_pipeline(tiny_vae(arch=arch, latent_channels=16), "wan")  # Wan's names readable
    t, s = vae.temporal_compression_ratio, vae.spatial_compression_ratio
    c = vae.config
    assert (c.scale_factor_temporal, c.scale_factor_spatial, c.z_dim) == (t, s, 16)
    assert c.timestep_conditioning is False and c.invert_scale_latents is False
    assert 2 ** (len(c.block_out_channels) - 1) == s
    assert 2 ** sum(vae.temperal_downsample) == t and 2 ** len(vae.temperal_downsample) == s
    vae.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["z_dim"] == 16
    cfg.update(timestep_conditioning=True)  # stale or edited
    if not getattr(type(vae), "upstream_class", None):  # in an upstream format they are settings
        cfg.update(z_dim=3, scale_factor_temporal=2)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_model(tmp_path)
    assert (loaded.config.z_dim, loaded.config.scale_factor_temporal) == (16, t)
    assert (loaded.config["z_dim"], loaded.config["scale_factor_spatial"]) == (16, s)
    assert loaded.config.timestep_conditioning is False
    assert config_hash(loaded) == config_hash(vae)


@pytest.mark.parametrize("norm", NORMS)
def test_ltx_attributes_denormalize_like_the_toolkit(norm):
    vae = tiny_vae(latent_channels=4, **normalization(norm, 4))
    assert vae.latents_mean.shape == vae.latents_std.shape == (4,)
    z = torch.randn(2, 4, 3, 2, 2)
    view = (1, -1, 1, 1, 1)
    ltx = (z * vae.latents_std.view(view) / vae.config.scaling_factor
           + vae.latents_mean.view(view))
    close(ltx, denormalize_latents(z, vae.config))


@pytest.mark.parametrize("arch", families())
@pytest.mark.parametrize("pipeline", ["wan", "ltx", "hunyuan_video", "cogvideo"])
@pytest.mark.parametrize("norm", NORMS)
@torch.no_grad()
def test_for_pipeline_keeps_the_normalized_latents(arch, pipeline, norm, tmp_path):
    """The prepared model, with its convention's own formula, encodes to the same z_norm and
    decodes z_norm to the same video; it survives save/load; the original is untouched."""
    vae = tiny_vae(arch=arch, latent_channels=4, **normalization(norm, 4))
    before = dict(vae.config)
    prepared = for_pipeline(vae, pipeline)
    assert dict(vae.config) == before
    x = random_video(t=5, h=16, w=16)
    post, ref = prepared.encode(x).latent_dist, vae.encode(x).latent_dist
    z_norm = normalize_latents(ref.mode(), vae.config)
    cfg = prepared.config
    if pipeline_convention(pipeline) == "mean_std":
        assert cfg.scaling_factor == 1.0 and not cfg.get("absorb_normalization")
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
        close((post.mode() - mean) / std, z_norm)  # Wan's normalization
        to_decode = z_norm * std + mean
    else:
        assert bool(cfg.get("absorb_normalization")) == (norm != "scale")
        close(post.mode() * cfg.scaling_factor, z_norm)  # what these pipelines do
        to_decode = z_norm / cfg.scaling_factor
    close(normalize_latents(post.mode(), cfg), z_norm)
    # the posterior moves with the mean: a sample normalizes like the original's
    eps = torch.randn_like(ref.mean)
    close(normalize_latents(post.mean + post.std * eps, cfg),
          normalize_latents(ref.mean + ref.std * eps, vae.config))
    close(prepared.decode(to_decode).sample, vae.decode(ref.mode()).sample)
    prepared.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert dict(loaded.config).get("absorb_normalization") == cfg.get("absorb_normalization")
    close(loaded.encode(x).latent_dist.mode(), post.mode())  # another instance: within 1e-5
    assert config_hash(loaded) == config_hash(prepared)
    # preparing again, for another pipeline, starts from the same constants
    again = for_pipeline(prepared, "wan")
    close(normalize_latents(again.encode(x).latent_dist.mode(), again.config), z_norm)


def test_absorbing_changes_the_config_hash_and_refuses_measuring():
    vae = tiny_vae(latent_channels=4, **normalization("shift", 4))
    absorbed = for_pipeline(vae, "hunyuan_video")
    assert absorbed.config.absorb_normalization is True
    assert config_hash(absorbed) != config_hash(vae)
    assert config_hash(for_pipeline(absorbed, "wan")) == config_hash(vae)
    plain = for_pipeline(tiny_vae(latent_channels=4), "hunyuan_video")
    assert plain.config.absorb_normalization is False  # scale only: nothing to absorb
    with pytest.raises(ValueError, match="absorb_normalization"):
        measure_latent_stats(absorbed, "unused")


def test_latent_files_of_an_absorbing_model_round_trip(clip, tmp_path):
    from videovae.files import decode_file, encode_file
    from videovae.io.latent_file import load_latents
    from videovae.io.video import VideoReader

    path, _ = clip
    vae = tiny_vae(latent_channels=4, **normalization("per_channel", 4))
    absorbed = for_pipeline(vae, "cogvideo")
    for name, model in (("plain", vae), ("absorbed", absorbed)):
        encode_file(model, path, tmp_path / f"{name}.safetensors", normalize=True,
                    progress=False)
        decode_file(model, tmp_path / f"{name}.safetensors", tmp_path / f"{name}.mp4",
                    crf=0, progress=False)
    plain, meta = load_latents(tmp_path / "plain.safetensors")
    same, meta_absorbed = load_latents(tmp_path / "absorbed.safetensors")
    assert meta_absorbed["absorb_normalization"] is True and meta["absorb_normalization"] is None
    close(same, plain)
    a, b = (VideoReader(tmp_path / f"{n}.mp4").read_all().astype(int)
            for n in ("absorbed", "plain"))
    # two models whose outputs agree within 1e-5 (other kernels may flip a rounding), through
    # lossless YUV: measured max 1 level, mean 0.00004; a wrong normalization is tens of levels
    assert a.shape == b.shape and abs(a - b).max() <= 4 and abs(a - b).mean() < 0.05


def test_conventions_by_name_class_and_errors():
    pytest.importorskip("transformers", reason="diffusers' pipelines need it (the dev extras)")
    from diffusers import AnimateDiffPipeline, WanVideoToVideoPipeline

    from videovae.integrations.pipelines import VideoVAEStableVideoDiffusionPipeline

    assert pipeline_convention("wan") == pipeline_convention(WanVideoToVideoPipeline) == \
        "mean_std"
    assert pipeline_convention("LTXImageToVideoPipeline") == "mean_std"
    assert pipeline_convention("hunyuan_video") == pipeline_convention("CogVideoXPipeline") == \
        "scale"
    assert pipeline_convention(VideoVAEStableVideoDiffusionPipeline) == "toolkit"
    with pytest.raises(ValueError, match="VideoVAEAnimateDiffPipeline"):
        pipeline_convention(AnimateDiffPipeline)
    with pytest.raises(ValueError, match="no known latent convention"):
        pipeline_convention("StableDiffusionPipeline")
    with pytest.raises(ValueError, match="not a diffusers pipeline"):
        for_pipeline(tiny_vae(), "Nope")


@torch.no_grad()
def test_decode_signature_for_pipelines():
    vae = tiny_vae(latent_channels=4)
    z = vae.encode(random_video(t=9, h=16, w=16)).latent_dist.mode()
    full = vae.decode(z).sample
    assert torch.equal(vae.decode(z, None, return_dict=False)[0], full)  # LTX's call
    assert vae.decode(z, num_frames=7).sample.shape[2] == 7
    with pytest.raises(ValueError, match="no timestep conditioning.*num_frames= by keyword"):
        vae.decode(z, 7)
    with pytest.raises(ValueError, match="no timestep conditioning"):
        vae.decode(z, torch.tensor([0.05]), return_dict=False)
    with pytest.raises(ValueError, match="4D tensor.*videovae.integrations"):
        vae.decode(z[:, :, 0])


def test_frame_counts_pipelines_return():
    vae = tiny_vae()
    assert valid_num_frames(vae, 9) == (9,) and valid_num_frames(vae, 1) == (1,)
    assert valid_num_frames(vae, 11) == (9, 13) and valid_num_frames(vae, 10) == (9, 13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_num_frames(vae, 49)
    with pytest.warns(UserWarning, match="return 45 frames; ask for 45 or 49"):
        check_num_frames(vae, 48)
    with pytest.raises(ValueError, match="not 1 \\+ 4k"):
        check_num_frames(vae, 2, strict=True)


@pytest.mark.parametrize("norm", ["scale", "shift", "per_channel"])
def test_a_wan_pipeline_given_the_model_as_it_is_fails_at_once_in_one_line(norm):
    """Wan-style pipelines decode with the config's per-channel statistics and ignore
    scaling_factor: a model in another convention fails when the pipeline is built, saying to
    use for_pipeline (not "Could not infer dtype of NoneType" after all the denoising steps)."""
    pytest.importorskip("transformers", reason="diffusers' pipelines need it (the dev extras)")
    from videovae.integrations.tiny_pipelines import build_pipeline

    vae = tiny_vae(latent_channels=4, **normalization(norm, 4))
    assert vae.config["z_dim"] == 4  # saved and hashed as before; only the attribute refuses
    with pytest.raises(AttributeError, match=r"config.scale_factor_temporal .*for_pipeline\(vae, "
                                             r"'wan'\)"):
        build_pipeline("wan", vae, prepare=False)
    pipe, kwargs = build_pipeline("wan", vae)  # through for_pipeline: builds and runs
    with torch.no_grad():
        frames = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape[1] == 9 and torch.isfinite(frames).all()

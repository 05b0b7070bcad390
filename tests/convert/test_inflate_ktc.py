"""Inflating 4- and 16-channel SD-layout image VAEs (random weights) into the `ktc` family, from
diffusers folders and LDM single files."""

import pytest
import torch
from safetensors.torch import save_file

from videovae import AutoencoderKTC, VideoVAE, load_model
from videovae.cli import main as cli_main
from videovae.errors import ImageVAEError

from helpers import INFLATE_TOL as TOL
from helpers import random_video, tiny_image_vae
from ldm_keys import to_ldm_state_dict

SD_LIKE = dict(latent_channels=4, scaling_factor=0.18215)
SD3_LIKE = dict(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609,
                use_quant_conv=False, use_post_quant_conv=False)


def _image_vae(extra):
    return tiny_image_vae(widths=(8, 16, 16, 16), groups=4, **extra)


def _save_ldm_file(vae, path):
    sd = to_ldm_state_dict(vae.state_dict(), len(vae.config.block_out_channels),
                           "first_stage_model.")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


@torch.no_grad()
def _check_matches_image_vae(video, image_vae, h=16, w=24):
    """One frame and a still clip as the image VAE; on a moving clip the keyframe half of latent
    g is the image latent of group g's first frame, the temporal half that of its last frame,
    and the output frames are the image VAE's reconstructions of those frames."""
    z = image_vae.config.latent_channels
    assert video.config.latent_channels == 2 * z
    x = random_video(t=1, h=h, w=w, seed=3)
    ref = image_vae.encode(x[:, :, 0]).latent_dist
    ref_rec = image_vae.decode(ref.mode()).sample
    post = video.encode(x).latent_dist
    for half in (slice(0, z), slice(z, 2 * z)):
        assert (post.mean[:, half, 0] - ref.mean).abs().max() < TOL
        assert (post.logvar[:, half, 0] - ref.logvar).abs().max() < TOL
    assert (video.decode(post.mode()).sample[:, :, 0] - ref_rec).abs().max() < TOL
    still = video(x.expand(-1, -1, 9, -1, -1)).sample
    assert still.shape[2] == 9 and (still - ref_rec[:, :, None]).abs().max() < TOL

    clip = random_video(t=9, h=h, w=w, seed=5)
    post = video.encode(clip).latent_dist
    rec = video.decode(post.mode()).sample
    for g, (first, last) in enumerate([(0, 0), (1, 4), (5, 8)]):
        key_ref = image_vae.encode(clip[:, :, first]).latent_dist
        last_ref = image_vae.encode(clip[:, :, last]).latent_dist
        assert (post.mean[:, :z, g] - key_ref.mean).abs().max() < TOL, g
        assert (post.mean[:, z:, g] - last_ref.mean).abs().max() < TOL, g
        key_rec = image_vae.decode(key_ref.mode()).sample
        last_rec = image_vae.decode(last_ref.mode()).sample
        assert (rec[:, :, first] - key_rec).abs().max() < TOL, g
        for t in range(first + 1, last + 1):
            assert (rec[:, :, t] - last_rec).abs().max() < TOL, (g, t)


@pytest.mark.parametrize("extra", [SD_LIKE, SD3_LIKE], ids=["4ch", "16ch"])
def test_ktc_from_diffusers_folder_and_ldm_file(extra, tmp_path):
    image_vae = _image_vae(extra)
    image_vae.save_pretrained(tmp_path / "vae")
    _save_ldm_file(image_vae, tmp_path / "vae.safetensors")
    kind = "sd" if extra["latent_channels"] == 4 else "sd3"
    for source in (tmp_path / "vae", tmp_path / "vae.safetensors"):
        # a bare file does not say its GroupNorm groups (SD's 32 unless given)
        video = AutoencoderKTC.from_image_vae(source, image_vae_type=kind,
                                              norm_num_groups=4).eval()
        assert type(video) is AutoencoderKTC
        assert video.config.scaling_factor == pytest.approx(extra["scaling_factor"])
        assert video.config.shift_factor == pytest.approx(extra.get("shift_factor"))
        assert (video.quant_conv is None) == (not extra.get("use_quant_conv", True))
        _check_matches_image_vae(video, image_vae)


def test_the_family_class_inflates_into_its_own_family(tmp_path):
    _image_vae(SD_LIKE).save_pretrained(tmp_path / "vae")
    assert type(AutoencoderKTC.from_image_vae(tmp_path / "vae")) is AutoencoderKTC
    assert type(VideoVAE.from_image_vae(tmp_path / "vae")) is VideoVAE


def test_latent_statistics_cover_both_halves_and_bad_overrides(tmp_path):
    image_vae = _image_vae({**SD_LIKE, "latents_mean": [0.1, 0.2, 0.3, 0.4],
                            "latents_std": [1.0, 2.0, 3.0, 4.0]})
    image_vae.save_pretrained(tmp_path / "vae")
    video = AutoencoderKTC.from_image_vae(tmp_path / "vae")
    assert list(video.config.latents_mean) == [0.1, 0.2, 0.3, 0.4] * 2
    assert list(video.config.latents_std) == [1.0, 2.0, 3.0, 4.0] * 2
    with pytest.raises(ImageVAEError, match="latent_channels=4 disagrees.*latent_channels=8"):
        AutoencoderKTC.from_image_vae(tmp_path / "vae", latent_channels=4)
    with pytest.raises(ImageVAEError, match="norm_type=rms disagrees"):
        AutoencoderKTC.from_image_vae(tmp_path / "vae", norm_type="rms")
    with pytest.raises(ImageVAEError, match="block_out_channels"):
        AutoencoderKTC.from_image_vae(tmp_path / "vae", block_out_channels=[8, 8, 8, 8])
    # settings the image VAE does not fix are taken as given
    video = AutoencoderKTC.from_image_vae(tmp_path / "vae", temporal_downsample=[True, True,
                                                                                 False])
    assert video.temporal_compression_ratio == 4
    _check_matches_image_vae(video.eval(), image_vae)


def test_cli_inflate_ktc(tmp_path, capsys):
    image_vae = _image_vae(SD_LIKE)
    image_vae.save_pretrained(tmp_path / "vae")
    out = tmp_path / "ktc"
    assert cli_main(["inflate", "--image-vae", str(tmp_path / "vae"), "--arch", "ktc", "-o",
                     str(out)]) == 0
    assert "arch ktc" in capsys.readouterr().out
    video = load_model(out)
    assert type(video) is AutoencoderKTC
    _check_matches_image_vae(video, image_vae)
    # the arch may come from the config's model section
    cfg = tmp_path / "ktc.yaml"
    cfg.write_text("model:\n  arch: ktc\n")
    assert cli_main(["inflate", "--image-vae", str(tmp_path / "vae"), "--config", str(cfg),
                     "-o", str(tmp_path / "from_cfg")]) == 0
    assert load_model(tmp_path / "from_cfg").arch == "ktc"

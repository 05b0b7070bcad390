"""Inflating real-layout image VAEs (SD 1.x, SD3 16-channel; random weights) into video VAEs."""

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import save_file

from videovae import VideoVAE
from videovae.cli import main as cli_main
from videovae.errors import ImageVAEError

from helpers import INFLATE_TOL as TOL
from helpers import SD3_CONFIG, SD_CONFIG, random_video, tiny_image_vae
from ldm_keys import to_ldm_state_dict


def _save_ldm(vae, path, prefix="first_stage_model.", extra=None):
    sd = to_ldm_state_dict(vae.state_dict(), len(vae.config.block_out_channels), prefix)
    sd.update(extra or {})
    if str(path).endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"state_dict": sd}, str(path))
    return sd


@pytest.mark.parametrize("config", [SD_CONFIG, SD3_CONFIG], ids=["sd", "sd3"])
def test_reverse_key_table_round_trips_through_diffusers(config):
    extra = {k: config[k] for k in ("latent_channels", "use_quant_conv", "use_post_quant_conv")
             if k in config}
    vae = tiny_image_vae(widths=(8, 16, 16, 16), groups=8, **extra)
    ldm = to_ldm_state_dict(vae.state_dict(), 4, "first_stage_model.")
    assert any(".mid.attn_1.q.weight" in k for k in ldm)
    back = convert_ldm_vae_checkpoint(ldm, dict(vae.config))
    own = vae.state_dict()
    assert set(back) == set(own)
    for k, v in own.items():
        assert torch.equal(back[k].reshape(v.shape), v), k


def _check_matches_image_vae(video_vae, image_vae, h=32, w=32):
    x = random_video(t=1, h=h, w=w, seed=3)
    with torch.no_grad():
        ref = image_vae.encode(x[:, :, 0]).latent_dist
        ref_rec = image_vae.decode(ref.mode()).sample
        post = video_vae.encode(x).latent_dist
        rec = video_vae.decode(post.mode()).sample
        assert post.mean.shape[2] == 1 and rec.shape == x.shape
        assert (post.mean[:, :, 0] - ref.mean).abs().max() < TOL
        assert (post.logvar[:, :, 0] - ref.logvar).abs().max() < TOL
        assert (rec[:, :, 0] - ref_rec).abs().max() < TOL
        # a still clip of 9 frames: every latent frame is the image latent, every frame the
        # image VAE's reconstruction
        still = x.expand(-1, -1, 9, -1, -1)
        post = video_vae.encode(still).latent_dist
        assert post.mean.shape[2] == 3
        assert (post.mean - ref.mean[:, :, None]).abs().max() < TOL
        assert (post.logvar - ref.logvar[:, :, None]).abs().max() < TOL
        rec = video_vae.decode(post.mode()).sample
        assert rec.shape[2] == 9
        assert (rec - ref_rec[:, :, None]).abs().max() < TOL


def test_sd_from_diffusers_folder(sd_vae, tmp_path):
    sd_vae.save_pretrained(tmp_path / "vae")
    video = VideoVAE.from_image_vae(tmp_path / "vae").eval()
    assert video.config.scaling_factor == pytest.approx(0.18215)
    assert video.config.shift_factor is None
    assert list(video.config.block_out_channels) == [128, 256, 512, 512]
    _check_matches_image_vae(video, sd_vae)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_sd_from_ldm_single_file(sd_vae, tmp_path, suffix):
    path = tmp_path / f"sd_vae{suffix}"
    # a full-checkpoint-like file: the VAE under first_stage_model., plus a UNet key
    _save_ldm(sd_vae, path, extra={"model.diffusion_model.input_blocks.0.0.weight":
                                   torch.zeros(4, 4)})
    video = VideoVAE.from_image_vae(path).eval()
    assert video.config.scaling_factor == pytest.approx(0.18215)
    _check_matches_image_vae(video, sd_vae, h=24, w=40)


def test_sd3_16_channels_folder_and_file(sd3_vae, tmp_path):
    sd3_vae.save_pretrained(tmp_path / "pipe" / "vae")  # a pipeline folder with vae/
    video = VideoVAE.from_image_vae(tmp_path / "pipe").eval()
    assert video.config.latent_channels == 16
    assert video.config.scaling_factor == pytest.approx(1.5305)
    assert video.config.shift_factor == pytest.approx(0.0609)
    assert video.quant_conv is None and video.post_quant_conv is None
    _check_matches_image_vae(video, sd3_vae)

    path = tmp_path / "sd3_vae.safetensors"
    _save_ldm(sd3_vae, path, prefix="")
    video = VideoVAE.from_image_vae(path, image_vae_type="sd3").eval()
    assert video.config.shift_factor == pytest.approx(0.0609)
    _check_matches_image_vae(video, sd3_vae)


def test_all_3d_convs_still_reproduce_the_image_vae(sd_vae, tmp_path):
    sd_vae.save_pretrained(tmp_path / "vae")
    video = VideoVAE.from_image_vae(tmp_path / "vae", conv3d_layers="all").eval()
    assert video.encoder.down_blocks[0].resnets[0].conv2.weight.shape[2] == 3
    _check_matches_image_vae(video, sd_vae, h=16, w=16)


def _unet_file(tmp_path, sd_vae):
    path = tmp_path / "unet.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}, str(path))
    return path, {}


def _vae_file_missing_a_weight(tmp_path, sd_vae):
    path = tmp_path / "broken.safetensors"
    sd = _save_ldm(sd_vae, path)
    del sd["first_stage_model.decoder.up.0.block.1.conv2.weight"]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path, {}


def _unet_folder(tmp_path, sd_vae):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    return tmp_path / "unet", {}


def _widths_that_disagree(tmp_path, sd_vae):
    sd_vae.save_pretrained(tmp_path / "vae")
    return tmp_path / "vae", {"block_out_channels": [64, 128, 256, 256]}


def _channels_that_disagree(tmp_path, sd_vae):
    sd_vae.save_pretrained(tmp_path / "vae")
    return tmp_path / "vae", {"latent_channels": 16}


BAD_CHECKPOINTS = {  # case -> (make(tmp_path, sd_vae) -> (path, overrides), error pattern)
    "widths_disagree": (_widths_that_disagree, "block_out_channels"),
    "channels_disagree": (_channels_that_disagree, "latent_channels"),
    "unet_file": (_unet_file, "not an image VAE.*encoder.conv_in.weight"),
    "missing_weight": (_vae_file_missing_a_weight, "decoder.up_blocks.3.resnets.1.conv2.weight"),
    "unet_folder": (_unet_folder, "not an image VAE"),
    "nothing_there": (lambda tmp_path, sd_vae: (tmp_path / "nothing_here", {}), "not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoints_name_what_is_wrong(case, sd_vae, tmp_path):
    make, pattern = BAD_CHECKPOINTS[case]
    path, overrides = make(tmp_path, sd_vae)
    with pytest.raises(ImageVAEError, match=pattern):
        VideoVAE.from_image_vae(path, **overrides)


def test_cli_inflate_writes_model_and_fails_cleanly(sd_vae, tmp_path, capsys):
    sd_vae.save_pretrained(tmp_path / "vae")
    out = tmp_path / "video_vae"
    assert cli_main(["inflate", "--image-vae", str(tmp_path / "vae"), "-o", str(out),
                     "decoder_causal=true"]) == 0
    assert (out / "config.json").is_file()
    assert (out / "diffusion_pytorch_model.safetensors").is_file()
    video = VideoVAE.from_pretrained(out).eval()
    _check_matches_image_vae(video, sd_vae, h=16, w=16)

    bad = tmp_path / "bad_out"
    rc = cli_main(["inflate", "--image-vae", str(tmp_path / "vae"), "-o", str(bad),
                   "block_out_channels=[8,8,8,8]"])
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "block_out_channels" in err[0]
    assert not bad.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad_out")]
    rc = cli_main(["inflate", "--image-vae", str(tmp_path / "vae"), "-o", str(out)])
    assert rc != 0 and "exists" in capsys.readouterr().err


@pytest.mark.parametrize("widths, expected", [((8,), []), ((8, 16), [True]),
                                              ((8, 16, 16), [True, True]),
                                              ((8, 16, 16, 16), [True, False, True]),
                                              ((8, 8, 16, 16, 16), [True, False, True, False])])
def test_temporal_downsample_follows_the_number_of_levels(tmp_path, capsys, widths, expected):
    """Without temporal_downsample, an image VAE of any depth inflates (4x in time where there
    are two or more downsampling levels) and the log says which; the CLI writes it."""
    tiny_image_vae(widths=widths).save_pretrained(tmp_path / "vae")
    out = tmp_path / "video_vae"
    assert cli_main(["inflate", "--image-vae", str(tmp_path / "vae"), "-o", str(out)]) == 0
    video = VideoVAE.from_pretrained(out).eval()
    ratio = 2 ** sum(expected)
    assert list(video.config.temporal_downsample) == expected
    assert video.temporal_compression_ratio == ratio
    assert f"compression {ratio}x" in capsys.readouterr().out
    image_vae = tiny_image_vae(widths=widths)
    x = random_video(t=1 + ratio, h=16, w=16)
    with torch.no_grad():
        assert video.encode(x).latent_dist.mean.shape[2] == 2
        ref = image_vae.encode(x[:, :, 0]).latent_dist.mean
        assert (video.encode(x[:, :, :1]).latent_dist.mean[:, :, 0] - ref).abs().max() < TOL


def test_inflation_logs_the_derived_temporal_downsample(caplog):
    from videovae.convert import inflate_from_model

    caplog.set_level("INFO", logger="videovae")
    inflate_from_model(tiny_image_vae(widths=(8, 16)))
    assert "2-level image VAE: temporal_downsample=[True] (2x in time)" in caplog.text

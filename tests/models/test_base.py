"""What every family inherits from the base class (videovae/models/base.py): input checks
(NaN/Inf, pixel range, dtypes), loading a folder that is not there, `from_image_vae` and the
older class name."""


import pytest
import torch

from videovae.errors import ModelLoadError

from helpers import random_video, tiny_vae


@torch.no_grad()
def test_nonfinite_and_out_of_range_inputs_are_refused():
    vae = tiny_vae()
    x = random_video(t=5, h=16, w=16)
    bad = x.clone()
    bad[0, 1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="video with 1 NaN and 0 infinite values"):
        vae.encode(bad)
    with pytest.raises(ValueError, match="chunk with 1 NaN"):
        list(vae.stream_encode(bad.split(2, dim=2)))
    z = vae.encode(x).latent_dist.mode()
    z_bad = z.clone()
    z_bad[0, 0, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="latents with 0 NaN and 1 infinite"):
        vae.decode(z_bad)
    with pytest.raises(ValueError, match="latents with 0 NaN and 1 infinite"):
        list(vae.stream_decode([z_bad]))
    # frames in 0..255 are another scale, not pixels in [-1, 1]
    with pytest.raises(ValueError, match=r"values span \[0, 254\].*x / 127.5 - 1"):
        vae.encode((x + 1) * 127.5 // 1)
    vae.encode(x * 1.2)  # resampling overshoot is fine


def test_a_training_step_leaves_nonfinite_values_to_the_trainer():
    """In train mode with gradients on, NaN goes through (the trainer skips the step and counts
    it); the range check still applies."""
    vae = tiny_vae().train()
    x = random_video(t=5, h=16, w=16)
    x[0, 0, 0, 0, 0] = float("nan")
    assert torch.isnan(vae(x).sample).any()
    with pytest.raises(ValueError, match="values span"):
        vae(x.nan_to_num() * 255)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_cast_to_the_model_dtype(dtype):
    vae = tiny_vae()
    x = random_video(t=5, h=16, w=16)
    ref = vae.encode(x).latent_dist.mode()
    z = vae.encode(x.to(dtype)).latent_dist.mode()
    assert z.dtype == torch.float32
    assert (z - ref).abs().max() < (1e-5 if dtype == torch.float64 else 0.05)
    out = vae.decode(ref.to(dtype)).sample
    assert out.dtype == torch.float32 and out.shape == x.shape
    with pytest.raises(ValueError, match="float tensor"):
        vae.encode((x * 100).to(torch.int64))


def test_from_pretrained_of_a_missing_folder_fails_at_once(tmp_path, monkeypatch):
    from diffusers.models.modeling_utils import ModelMixin

    from videovae import VideoVAE

    # our own check answers before diffusers' loader, which would retry the hub for ~20 s
    # offline (not timed: a loaded machine would break a time bound)
    monkeypatch.setattr(ModelMixin, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("reached diffusers' loader")))
    for missing in ("nope_dir", str(tmp_path / "nope"), "./runs/nope"):
        with pytest.raises(ModelLoadError, match="no model folder at"):
            VideoVAE.from_pretrained(missing)
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="is a file"):
        VideoVAE.from_pretrained(tmp_path / "file.json")


def test_from_image_vae_builds_its_own_family_or_says_which_to_use(tmp_path):
    from videovae import AutoencoderCV, AutoencoderKTC, StreamingAutoencoder

    from helpers import tiny_image_vae

    tiny_image_vae().save_pretrained(tmp_path)
    assert type(AutoencoderKTC.from_image_vae(tmp_path)) is AutoencoderKTC
    assert type(StreamingAutoencoder.from_image_vae(tmp_path, arch="ktc")) is AutoencoderKTC
    # the older spelling still works, and says which class to call instead
    with pytest.warns(FutureWarning, match=r"returns another class; use videovae.family_class"):
        assert type(AutoencoderCV.from_image_vae(tmp_path, arch="ktc")) is AutoencoderKTC
    with pytest.raises(ValueError, match="needs arch="):
        StreamingAutoencoder.from_image_vae(tmp_path)


def test_the_older_class_name_loads_as_the_cv_family(tmp_path):
    """`VideoVAE` is the documented alias of `AutoencoderCV`: the same class, and folders whose
    config.json says `VideoVAE` (saved before the rename, like the shipped model) load as it."""
    import json

    from videovae import AutoencoderCV, VideoVAE, load_model

    assert VideoVAE is AutoencoderCV
    tiny_vae(seed=1).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderCV"
    cfg["_class_name"] = "VideoVAE"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert type(load_model(tmp_path)) is AutoencoderCV

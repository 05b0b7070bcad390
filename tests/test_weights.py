"""The models shipped in the package (`videovae/weights/default`, trained by
tools/train_default.py): they load by name everywhere a model is taken, they are the models
their training record describes, and the shipped image VAE inflates exactly."""

import json

import pytest
import torch

import videovae
from videovae import weights
from videovae.cli import main as cli
from videovae.convert import inflate_from_model, load_image_vae
from videovae.errors import ModelLoadError
from videovae.heldout import evaluate, held_out_clips, per_frame, video

RECORD = json.loads((weights.DEFAULT_DIR / "training.json").read_text())


@pytest.fixture(scope="module")
def shipped():
    return videovae.load_model("default"), load_image_vae("default")[0]


def test_shipped_models_load_by_name_in_fp32(shipped):
    vae, image_vae = shipped
    assert type(vae) is videovae.AutoencoderCV and next(vae.parameters()).dtype == torch.float32
    assert vae.config.latent_channels == image_vae.config.latent_channels == 16
    assert vae.config.scaling_factor == pytest.approx(RECORD["video"]["cv"]["scaling_factor"])
    for name, sub in (("default", "cv"), ("default-cv", "cv"), ("default-image-vae", "image_vae")):
        assert weights.default_model_dir(name) == weights.DEFAULT_DIR / sub
    on_disk = sum(p.stat().st_size for p in weights.DEFAULT_DIR.rglob("*.safetensors"))
    assert on_disk < 40e6  # fp16: a few MB per model


def test_shipped_models_are_the_ones_their_record_describes(shipped):
    # one held-out clip of the record's table, recomputed: the weights are the reported ones
    vae, image_vae = shipped
    name = next(iter(RECORD["held_out"]["clips"]))
    clip = {name: held_out_clips(RECORD["held_out"]["frames"],
                                 tuple(RECORD["held_out"]["size"]))[name]}
    rows = {r["name"]: r for r in RECORD["rows"]}
    for label, rec in (("image VAE per frame", per_frame(image_vae)),
                       ("cv fine-tuned", video(vae))):
        psnr = evaluate(label, rec, clip)["psnr"]
        assert abs(psnr - rows[label]["psnr_by_clip"][name]) < 0.1, label  # fp16 rounding


def test_shipped_image_vae_inflates_exactly(shipped):
    _, image_vae = shipped
    torch.manual_seed(0)
    x = torch.rand(1, 3, 1, 32, 48) * 2 - 1
    with torch.no_grad():
        ref = image_vae(x[:, :, 0]).sample
        vae = inflate_from_model(image_vae, "cv").eval()
        assert (vae(x).sample[:, :, 0] - ref).abs().max() <= 1e-4
        still = vae(x.expand(-1, -1, 5, -1, -1)).sample
    assert (still - ref[:, :, None]).abs().max() <= 1e-4


def test_commands_use_the_shipped_model_when_none_is_given(clip, tmp_path, capsys):
    path, _ = clip
    out = tmp_path / "z.safetensors"
    assert cli(["encode", str(path), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no --model given, using the shipped default model" in err
    assert str(weights.DEFAULT_DIR / "cv") in err
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert f.get_tensor("latents").shape[0] == 16

    for argv in (["latent-stats", "--data", str(path.parent), "--write"],
                 ["latent-stats", "--data", str(path.parent), "--write", "--model", "default"]):
        assert cli(argv) == 1
        assert "shipped model" in capsys.readouterr().err
    cfg = (weights.DEFAULT_DIR / "cv" / "config.json").read_text()
    assert json.loads(cfg)["scaling_factor"] == pytest.approx(
        RECORD["video"]["cv"]["scaling_factor"])


def test_a_missing_shipped_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "DEFAULT_DIR", tmp_path / "none")
    with pytest.raises(ModelLoadError, match="shipped model 'default' is missing"):
        videovae.load_model("default")
    with pytest.raises(ModelLoadError, match="unknown shipped model"):
        weights.default_model_dir("default-nope")


def test_training_minutes_count_every_image_vae_run_and_the_shipped_video_vae(tmp_path,
                                                                              monkeypatch):
    record = {"image_vae": {"wall_seconds": 600, "continued_from": {"wall_seconds": 1200}},
              "video": {"cv": {"wall_seconds": 300}, "ktc": {"wall_seconds": 9000}}}
    (tmp_path / "training.json").write_text(json.dumps(record))
    monkeypatch.setattr(weights, "DEFAULT_DIR", tmp_path)
    assert weights.training_minutes() == 35.0  # 10 + 20 + 5; ktc is not shipped


def test_shipped_image_vae_carries_its_own_constants_and_no_machine_paths(tmp_path, caplog):
    """The shipped image VAE's latent scaling is its own, measured (training.json), and
    inflating it copies that, not SD's 0.18215; no config names the training machine's path."""
    import logging

    from videovae.convert import inflate_image_vae

    own = RECORD["image_vae"]["scaling_factor"]
    assert abs(own - 0.18215) > 0.05
    with caplog.at_level(logging.INFO, logger="videovae.convert.inflate"):
        vae = inflate_image_vae("default", arch="cv")
    assert vae.config.scaling_factor == pytest.approx(own)
    assert "a custom image VAE" in caplog.text and "sd3" not in caplog.text
    for sub in ("cv", "image_vae"):
        cfg = json.loads((weights.DEFAULT_DIR / sub / "config.json").read_text())
        assert "_name_or_path" not in cfg, sub

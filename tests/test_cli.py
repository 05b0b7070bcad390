"""The command line itself: what a new user sees first (fast help, one-line errors), signals,
concurrent writers and file modes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from videovae.cli import main as cli

from helpers import tiny_vae

ROOT = Path(__file__).resolve().parents[1]


def _python(code, **kw):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, **kw)


def test_help_and_one_line_errors_do_not_import_torch(tmp_path):
    code = f"""
import sys
from videovae import cli
try:
    cli.main(["--help"])
except SystemExit as e:
    print("help-exit", e.code)
rc = cli.main(["decode", {str(tmp_path / "missing.safetensors")!r}, "--model", "m", "-o", "x.mp4"])
print("rc", rc)
print("heavy", sorted(m for m in ("torch", "diffusers", "numpy") if m in sys.modules))
"""
    res = _python(code)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "help-exit 0" in lines and "rc 1" in lines and "heavy []" in lines, res.stdout
    assert res.stderr.strip().splitlines() == [
        f"videovae decode: error: latent file not found: {tmp_path / 'missing.safetensors'}"]
    # no wall-clock bound (a loaded machine breaks it): "heavy []" shows nothing heavy loaded
    # the public names still import (lazily)
    import videovae
    from videovae import VideoVAE, load_model, pad_video  # noqa: F401

    assert hasattr(VideoVAE, "from_pretrained") and "families" in dir(videovae)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = videovae.nope


def test_help_defaults_match_the_code():
    from videovae.cli import HELP_DEFAULTS, IMAGE_VAE_TYPES
    from videovae.latents import KNOWN_IMAGE_VAES
    from videovae.models import StreamingAutoencoder

    base = sys.modules[StreamingAutoencoder.__module__]  # (whatever the module is named)
    assert HELP_DEFAULTS == {"chunk_frames": base.ENCODE_CHUNK_FRAMES,
                             "decode_chunk": base.DECODE_CHUNK_LATENTS,
                             "tile_overlap": base.TILE_SAMPLE_OVERLAP}
    assert IMAGE_VAE_TYPES == tuple(sorted(KNOWN_IMAGE_VAES))


def test_invalid_model_folders_name_the_file(tmp_path, clip, capsys):
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    bad_value = tmp_path / "bad_value"
    tiny_vae().save_pretrained(bad_value)
    cfg = (bad_value / "config.json").read_text()
    (bad_value / "config.json").write_text(cfg.replace('"norm_num_groups": 8',
                                                       '"norm_num_groups": 7'))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(cfg)
    out = tmp_path / "z.safetensors"
    for model, needle in ((bad_json, f"{bad_json / 'config.json'} is not valid json"),
                          (bad_value, f"cannot load the model at {bad_value}"),
                          (no_weights, f"{no_weights} has a config.json but no weights")):
        assert cli(["encode", str(clip[0]), "--model", str(model), "-o", str(out),
                    "--no-progress"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0].lower(), err
        assert not out.exists()


def test_nan_model_is_refused(tmp_path, clip, capsys):
    import torch

    vae = tiny_vae()
    with torch.no_grad():
        vae.decoder.conv_out.weight[0, 0, 0, 0, 0] = float("nan")
    vae.save_pretrained(tmp_path / "nan_model")
    out = tmp_path / "z.safetensors"
    assert cli(["encode", str(clip[0]), "--model", str(tmp_path / "nan_model"), "-o", str(out),
                "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite weights" in err[0] and "nan_model" in err[0], err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_sigterm_leaves_no_temporary_file(tmp_path, model_dir):
    from videovae.data.synthetic import load_photo, pan_zoom_clip
    from videovae.io.video import write_video

    src = tmp_path / "long.mp4"
    write_video(src, pan_zoom_clip(load_photo("astronaut"), 400, (64, 64), speed=1.0))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "long.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "videovae", "encode", str(src), "--model",
                             str(model_dir), "-o", str(out), "--chunk-frames", "4",
                             "--no-progress"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out_dir.iterdir()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert [p.name for p in out_dir.iterdir()][0].startswith(".long."), "no temporary seen"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "videovae: terminated"
    assert list(out_dir.iterdir()) == []


def test_two_writers_of_one_new_output_cannot_both_succeed(tmp_path, model_dir, clip, capsys,
                                                           monkeypatch):
    """The other writer finishes first, while this one is still encoding: this one must fail
    and leave the other's file alone (the exists check is repeated atomically at the end)."""
    import videovae.files as files

    out = tmp_path / "z.safetensors"
    real = files.save_latents

    def other_writer_finishes_first(path, *a, **k):
        out.write_bytes(b"the other encode's result")
        return real(path, *a, **k)

    monkeypatch.setattr(files, "save_latents", other_writer_finishes_first)
    assert cli(["encode", str(clip[0]), "--model", str(model_dir), "-o", str(out),
                "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out} already exists" in err[0], err
    assert out.read_bytes() == b"the other encode's result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.safetensors"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_honour_the_umask(tmp_path, model_dir, clip, umask):
    from helpers import tiny_image_vae

    tiny_image_vae().save_pretrained(tmp_path / "image_vae")
    old = os.umask(umask)
    try:
        assert cli(["encode", str(clip[0]), "--model", str(model_dir), "-o",
                    str(tmp_path / "z.safetensors"), "--no-progress"]) == 0
        assert cli(["inflate", "--image-vae", str(tmp_path / "image_vae"), "-o",
                    str(tmp_path / "video_vae")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "z.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "video_vae").stat().st_mode & 0o777 == 0o777 & ~umask
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):  # safetensors: 0600
        assert (tmp_path / "video_vae" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name

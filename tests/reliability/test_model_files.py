"""Model folders and image-VAE checkpoints that cannot be used: one line naming them, nothing
written; a pickled checkpoint never runs its code; a missing local folder fails at once; a
derived inflation setting is logged."""

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from videovae import VideoVAE, load_model

from helpers import tiny_image_vae

ROOT = Path(__file__).resolve().parents[2]
TRAIN_CONFIG = ROOT / "configs" / "train" / "tiny_cpu.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


def _no_config(model):
    (model / "config.json").unlink()
    return [re.escape(str(model)), "config.json"]


def _wrong_widths(model):
    cfg = json.loads((model / "config.json").read_text())
    cfg["block_out_channels"][-1] *= 2  # the weights have the other width
    (model / "config.json").write_text(json.dumps(cfg))
    return ["cannot load the model at", re.escape(str(model))]


def _missing(model):
    shutil.rmtree(model)
    return ["no model", re.escape(str(model))]


def _truncated_weights(model):
    w = model / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return ["cannot load the model at"]


def _zero_norm_groups(model):  # issue 19 item 19: was a ZeroDivisionError traceback
    cfg = json.loads((model / "config.json").read_text())
    cfg["norm_num_groups"] = 0
    (model / "config.json").write_text(json.dumps(cfg))
    return ["cannot load the model at", re.escape(str(model)), "norm_num_groups must be >= 1"]


def _weights_lack_a_tensor(model):  # issue 19 item 19: was "Tensor.item() ... meta tensors"
    from safetensors.torch import load_file, save_file

    w = model / "diffusion_pytorch_model.safetensors"
    state = load_file(w)
    del state["decoder.conv_out.weight"]
    save_file(state, w)
    return [re.escape(str(model)), "lacks 1 of the model's tensors", "decoder.conv_out.weight"]


@pytest.mark.parametrize("damage", [
    pytest.param(_zero_norm_groups, id="norm-num-groups-zero"),
    pytest.param(_weights_lack_a_tensor, id="weights-lack-a-tensor"),
    pytest.param(_no_config, id="no-config-json"),
    pytest.param(_wrong_widths, id="config-widths-disagree-with-weights"),
    pytest.param(_missing, id="folder-missing"),
    pytest.param(_truncated_weights, id="truncated-weights"),
])
def test_encode_refuses_a_broken_model_folder(tmp_path, model_dir, clip, run_cli, damage):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    patterns = damage(model)
    out = tmp_path / "z.safetensors"
    res = run_cli("encode", clip[0], "--model", model, "--no-progress", "-o", out)
    res.fails(*patterns, outputs=[out], keep=["model"])


# ----------------------------------------------------------------------------------------------
# A pickled checkpoint whose unpickling would run code


def _evil_ckpt(path: Path, marker: Path) -> Path:
    """A torch checkpoint whose unpickling creates `marker` (a __reduce__ payload)."""
    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('payload ran')",))

    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1), "x": Payload()}}, path)
    return path


def test_the_payload_runs_when_loaded_unsafely(tmp_path):
    """(So the marker checks below can fail.)"""
    ckpt = _evil_ckpt(tmp_path / "control.ckpt", tmp_path / "marker")
    torch.load(ckpt, weights_only=False)
    assert (tmp_path / "marker").exists()


def test_inflate_refuses_a_pickled_payload(tmp_path, run_cli):
    ckpt = _evil_ckpt(tmp_path / "vae.ckpt", tmp_path / "PWNED")
    out = tmp_path / "video_vae"
    res = run_cli("inflate", "--image-vae", ckpt, "-o", out)
    res.fails("vae.ckpt", outputs=[out], keep=["vae.ckpt"])
    assert not (tmp_path / "PWNED").exists()


def test_from_image_vae_refuses_a_pickled_payload(tmp_path):
    ckpt = _evil_ckpt(tmp_path / "vae.ckpt", tmp_path / "PWNED")
    with pytest.raises(Exception, match=r"vae\.ckpt") as e:  # (of any type)
        VideoVAE.from_image_vae(ckpt)
    assert not (tmp_path / "PWNED").exists()
    assert "vae.ckpt" in str(e.value).splitlines()[0], str(e.value)


def test_train_refuses_a_pickled_payload_as_init_from_image_vae(tmp_path, run_cli,
                                                                fresh_accelerate_state):
    ckpt = _evil_ckpt(tmp_path / "vae.ckpt", tmp_path / "PWNED")
    run = tmp_path / "run"
    res = run_cli("train", "--config", TRAIN_CONFIG, f"train.output_dir={run}",
                  "train.max_steps=2", "data.num_workers=0", "data.val_clips=1",
                  "data.val_num_frames=5", "data.val_resolution=[32,32]",
                  "data.sources=[{type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]",
                  f"train.init_from_image_vae={ckpt}", "model={}")
    res.fails("vae.ckpt", outputs=[tmp_path / "PWNED"], keep=["vae.ckpt", "run"])
    assert not (run / "final").exists()


# ----------------------------------------------------------------------------------------------
# Missing local folders and a derived inflation setting


@pytest.mark.parametrize("load, name", [
    pytest.param(VideoVAE.from_pretrained, "nope_dir", id="VideoVAE.from_pretrained"),
    pytest.param(load_model, "runs/nope", id="load_model"),
])
def test_a_missing_local_model_folder_fails_at_once_naming_it(tmp_path, monkeypatch, load, name):
    monkeypatch.chdir(tmp_path)
    path = name if load is VideoVAE.from_pretrained else str(tmp_path / name)
    start = time.perf_counter()
    with pytest.raises(Exception) as e:  # noqa: B017 - the case is the message and the time
        load(path)
    seconds = time.perf_counter() - start
    assert seconds < 3, seconds  # no hub retries
    assert path in str(e.value).splitlines()[0], str(e.value)


def test_inflate_logs_the_temporal_downsample_it_derives(tmp_path, run_cli, caplog):
    tiny_image_vae(widths=(8, 16, 16)).save_pretrained(tmp_path / "image_vae")
    caplog.set_level("INFO", logger="videovae")
    run_cli("inflate", "--image-vae", tmp_path / "image_vae", "-o", tmp_path / "video_vae").ok()
    logged = [r.getMessage() for r in caplog.records if "temporal_downsample" in r.getMessage()]
    assert logged and "3-level" in logged[0], caplog.text
    td = json.loads((tmp_path / "video_vae" / "config.json").read_text()).get(
        "temporal_downsample")
    assert td is not None and len(td) == 2, td

"""The Accelerate trainer on tiny CPU configs: exact resume, overfitting, non-finite steps,
inflation with latent regularization, two processes, CLI errors."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from videovae import VideoVAE
from videovae.data import StepBatches, build_sources, validation_clips
from videovae.data.synthetic import load_photo, pan_zoom_clip
from videovae.errors import VideoVAEError
from videovae.io.video import write_video as write_clip
from videovae.metrics import mean_psnr_ssim
from videovae.training.config import load_train_config
from videovae.training.losses import VAELoss

from helpers import launch_processes, reset_accelerate_state, tiny_image_vae, write_media

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = ["model.block_out_channels=[8,16,16,16]", "model.layers_per_block=1",
              "model.norm_num_groups=4"]
# one small synthetic clip per step: for the tests that are about the loop, not the data
SMALL_DATA = "data.sources=[{type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]"
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _overrides(out, steps, extra=()):
    return [*TINY_MODEL, f"train.output_dir={out}", f"train.max_steps={steps}",
            "train.log_every=1", "train.val_every=0", "train.checkpoint_every=3",
            "data.num_workers=0", "data.val_clips=1", "data.val_num_frames=5",
            "data.val_resolution=[32,32]", "optim.warmup_steps=2", "optim.lr=1e-3",
            *extra]


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _run(overrides):
    from videovae.training.trainer import train

    return train(load_train_config(str(ROOT / "configs" / "train" / "tiny_cpu.yaml"), overrides))


def test_resume_gives_the_same_losses(tmp_path):
    extra = ["loss.perceptual_weight=0.5", "loss.lpips_pretrained_trunk=false",
             "loss.disc_weight=0.5", "loss.disc_start=2", "loss.disc_channels=8",
             "loss.disc_layers=2", "loss.learn_logvar=true",
             "data.sources=[{type: synthetic, num_frames: 1, resolution: 32, batch_size: 2},"
             " {type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]"]
    full = tmp_path / "full"
    _run(_overrides(full, 6, extra))
    part = tmp_path / "part"
    _run(_overrides(part, 6, [*extra, "train.stop_at=3"]))  # a job stopped after step 3
    assert (part / "checkpoints" / "checkpoint-3").is_dir()
    assert not (part / "final").exists()
    _run(_overrides(part, 6, [*extra, "train.resume_from=latest"]))
    a = {m["step"]: m for m in _metrics(full)}
    b = {m["step"]: m for m in _metrics(part)}
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        for key in ("train/loss", "train/rec", "train/lpips", "train/g_loss", "train/d_loss"):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-5, abs=1e-7), (step, key)
    va = VideoVAE.from_pretrained(full / "final")
    vb = VideoVAE.from_pretrained(part / "final")
    for (n, p), q in zip(va.named_parameters(), vb.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), n


def test_overfit_lowers_reconstruction_loss(tmp_path):
    """One fixed clip, seen every step: the reconstruction loss must fall well below its start."""
    (tmp_path / "one").mkdir()
    write_clip(tmp_path / "one" / "clip.mp4",
               pan_zoom_clip(load_photo("astronaut"), 5, (32, 32), speed=2.0))
    out = tmp_path / "overfit"
    _run(_overrides(out, 50, ["optim.lr=3e-3", "train.ema_decay=0",
                              "data.sources=[{type: video, path: " + str(tmp_path / "one") +
                              ", num_frames: 5, resolution: 32, random_crop: false,"
                              " batch_size: 1}]"]))
    rec = [m["train/rec"] for m in _metrics(out)]
    first, last = np.mean(rec[:3]), np.mean(rec[-5:])
    assert last < 0.6 * first, (first, last)
    assert (out / "val").is_dir() and list((out / "val").glob("*.mp4"))
    # the final validation report is the final model's PSNR on the held-out validation clips
    report = json.loads(sorted((out / "val").glob("*.json"))[-1].read_text())
    cfg = load_train_config(str(ROOT / "configs" / "train" / "tiny_cpu.yaml"),
                            _overrides(out, 50))
    vae = VideoVAE.from_pretrained(out / "final").eval()
    with torch.no_grad():
        psnr = [mean_psnr_ssim(x, vae(x).sample)[0] for x in validation_clips(cfg.data)]
    assert report["step"] == 50 and report["psnr"] == pytest.approx(np.mean(psnr), abs=1e-4)


def _nan_loss_at(monkeypatch, bad_steps):
    """Make the generator loss NaN at the given 0-based step arguments (metrics step s + 1)."""
    real = VAELoss.generator_loss

    def flaky(self, x, x_hat, posterior, z, step, *a, **k):
        loss, logs = real(self, x, x_hat, posterior, z, step, *a, **k)
        return (loss * float("nan") if bad_steps(step) else loss), logs

    monkeypatch.setattr(VAELoss, "generator_loss", flaky)


def test_nonfinite_loss_is_skipped_and_counted(tmp_path, monkeypatch, caplog):
    _nan_loss_at(monkeypatch, lambda step: step == 1)
    out = tmp_path / "nan"
    _run(_overrides(out, 4, [SMALL_DATA]))
    m = _metrics(out)
    assert [r["step"] for r in m] == [1, 2, 3, 4]
    assert m[-1]["train/nonfinite_steps"] == 1
    assert all(np.isfinite(r["train/rec"]) for r in m if r["step"] != 2)
    assert m[1]["train/grad_norm"] is None  # valid JSON: null, not NaN
    # the warning names the step as metrics.jsonl does
    warned = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert warned and warned[0].startswith("step 2: non-finite"), warned
    assert (out / "final" / "config.json").is_file()


def test_divergence_stops_with_an_error_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                           monkeypatch, capsys):
    """Non-finite from step 3 on: steps 3, 4, 5 are skipped, the third in a row ends the run;
    checkpoint-2 is the last good one (none is written at step 4), no final model."""
    from videovae.cli import main as cli

    _nan_loss_at(monkeypatch, lambda step: step >= 2)
    out = tmp_path / "diverged"
    rc = cli(["train", "--config", str(ROOT / "configs/train/tiny_cpu.yaml"),
              *_overrides(out, 20, ["train.max_nonfinite_steps=3", "train.checkpoint_every=2",
                                    "train.checkpoints_total_limit=1", SMALL_DATA])])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"videovae train: error: training diverged at step 5: 3 non-finite steps "
                       f"in a row (train.max_nonfinite_steps=3); no model saved, the last good "
                       f"checkpoint is {out / 'checkpoints' / 'checkpoint-2'} (lower optim.lr, "
                       "or see train.max_nonfinite_steps)")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert not (out / "final").exists()
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3, 4, 5]


def test_a_model_with_nan_outputs_is_never_saved(tmp_path, monkeypatch, capsys):
    """Weights broken by an update whose loss was finite: the validation JSON stays valid JSON
    (null and a flag), the run fails and writes no final model."""
    from videovae.cli import main as cli
    from videovae.training.step import Stepper

    real = Stepper.update_autoencoder

    def breaks_weights(self, batches, step):
        result = real(self, batches, step)
        if step == 1:
            with torch.no_grad():
                self.vae.decoder.conv_out.bias.fill_(float("nan"))
        return result

    monkeypatch.setattr(Stepper, "update_autoencoder", breaks_weights)
    out = tmp_path / "nan_model"
    rc = cli(["train", "--config", str(ROOT / "configs/train/tiny_cpu.yaml"),
              *_overrides(out, 3, ["train.max_nonfinite_steps=0", "train.checkpoint_every=0",
                                   "train.ema_decay=0", SMALL_DATA])])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "training diverged at step 3: the final model's validation outputs are not " \
           "finite; no model saved" in err[-1], err
    assert not (out / "final").exists() and not (out / "checkpoints").exists()

    def no_nan(token):
        raise AssertionError(f"bare {token} in JSON")

    report = json.loads((out / "val" / "step-0000003.json").read_text(), parse_constant=no_nan)
    assert report["psnr"] is None and report["psnr_per_clip"] == [None] and report["nonfinite"]
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=no_nan)


def test_kill_while_writing_a_checkpoint_resumes_from_the_last_complete_one(tmp_path,
                                                                            monkeypatch, caplog):
    """The process dies at step 4 between the weights and the optimizer file of checkpoint-4,
    with checkpoints_total_limit=1: checkpoint-2 survives, `latest` resumes from it, and
    metrics.jsonl does not list the replayed steps twice. (That a resume is exact is
    test_resume_gives_the_same_losses.)"""
    import accelerate.checkpointing as ckpt

    class Killed(BaseException):
        pass

    real_save = ckpt.save

    def dies_after_the_weights(obj, f, *a, **k):
        if "checkpoint-4" in str(f) and Path(f).name == "optimizer.bin":
            assert (Path(f).parent / "model.safetensors").is_file()  # the weights came first
            Path(f).write_bytes(b"")  # the half-written file a SIGKILL leaves
            raise Killed
        return real_save(obj, f, *a, **k)

    out = tmp_path / "run"
    extra = ["train.checkpoints_total_limit=1", "train.checkpoint_every=2", "train.ema_decay=0",
             SMALL_DATA]
    monkeypatch.setattr(ckpt, "save", dies_after_the_weights)
    with pytest.raises(Killed):
        _run(_overrides(out, 4, extra))
    monkeypatch.undo()
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [".checkpoint-4.partial", "checkpoint-2"]
    assert (ckpts / ".checkpoint-4.partial" / "optimizer.bin").stat().st_size == 0
    assert (ckpts / "checkpoint-2" / "optimizer.bin").stat().st_size > 0
    before = _metrics(out)
    assert [r["step"] for r in before] == [1, 2, 3, 4]

    # the partial folder named explicitly: a readable error, nothing changed
    reset_accelerate_state()
    partial = ckpts / ".checkpoint-4.partial"
    with pytest.raises(VideoVAEError, match=f"cannot resume from {partial}: .*incomplete"):
        _run(_overrides(out, 4, [*extra, f"train.resume_from={partial}"]))
    assert _metrics(out) == before

    reset_accelerate_state()
    caplog.set_level("INFO", logger="videovae")
    _run(_overrides(out, 4, [*extra, "train.resume_from=latest"]))
    assert f"resumed from {ckpts / 'checkpoint-2'} at step 2" in caplog.text
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-4"]
    after = _metrics(out)
    assert [r["step"] for r in after] == [1, 2, 3, 4]
    assert after[:2] == before[:2]
    assert (out / "final" / "diffusion_pytorch_model.safetensors").is_file()


def test_latest_passes_over_a_checkpoint_folder_with_an_empty_file(tmp_path, caplog):
    """A `checkpoint-<step>` folder with a 0-byte optimizer file (what versions before the
    rename-on-complete rule left on a kill, or an interrupted copy): `latest` warns and takes
    the newest complete one; with none complete there is nothing to resume."""
    from videovae.training.checkpointing import resume_path

    for step, size in ((2, 10), (4, 10), (6, 0)):
        d = tmp_path / "checkpoints" / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"w" * 10)
        (d / "optimizer.bin").write_bytes(b"o" * size)
    assert resume_path("latest", tmp_path) == tmp_path / "checkpoints" / "checkpoint-4"
    assert "skipping incomplete checkpoint" in caplog.text and "optimizer.bin" in caplog.text
    for step in (2, 4):
        (tmp_path / "checkpoints" / f"checkpoint-{step}" / "optimizer.bin").write_bytes(b"")
    assert resume_path("latest", tmp_path) is None


def test_a_data_folder_of_only_corrupt_files_gives_the_reason(tmp_path, capsys):
    from videovae.cli import main as cli

    data = tmp_path / "corrupt"
    data.mkdir()
    for i in range(3):
        (data / f"bad{i}.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + b"x" * 100)
    out = tmp_path / "run"
    rc = cli(["train", "--config", str(ROOT / "configs/train/tiny_cpu.yaml"),
              *_overrides(out, 3, ["data.num_workers=1",
                                   "data.sources=[{name: clips, type: video, path: " + str(data) +
                                   ", num_frames: 5, resolution: 32}]"])])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"videovae train: error: source clips ({data}): 20 unreadable "
                              f"files in a row, the last {data}/bad"), err[-1]
    assert "cannot read" in err[-1] and "DataLoader" not in err[-1]
    assert not (out / "final").exists() and not (out / "checkpoints").exists()


def test_from_image_vae_with_regularization(tmp_path):
    tiny_image_vae().save_pretrained(tmp_path / "image_vae")
    out = tmp_path / "reg"
    _run([f"train.output_dir={out}", "train.max_steps=2", "train.val_every=0",
          "train.checkpoint_every=0", "data.num_workers=0", "data.val_clips=1",
          "data.val_num_frames=5", "data.val_resolution=[32,32]",
          f"train.init_from_image_vae={tmp_path / 'image_vae'}", "loss.reg_dec_weight=1.0",
          "loss.reg_enc_weight=0.5",
          "data.sources=[{type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]",
          "model={}"])
    m = _metrics(out)
    assert all("train/reg_dec" in r and "train/reg_enc" in r for r in m)
    vae = VideoVAE.from_pretrained(out / "final")
    assert list(vae.config.block_out_channels) == [8, 16, 16, 16]


def test_continue_a_model_folder_with_a_frozen_image_vae(tmp_path):
    """train.init_from_pretrained + train.image_vae: the regularization runs against the named
    image VAE (how the demo continues the shipped model); setting both starts is an error."""
    from videovae.convert import inflate_from_model
    from videovae.errors import ConfigError
    from videovae.training.build import build_models

    image_vae = tiny_image_vae()
    image_vae.save_pretrained(tmp_path / "image_vae")
    inflate_from_model(image_vae).save_pretrained(tmp_path / "start")
    common = [f"train.init_from_pretrained={tmp_path / 'start'}", "model={}",
              f"train.image_vae={tmp_path / 'image_vae'}", "loss.reg_dec_weight=1.0"]
    cfg = load_train_config(str(ROOT / "configs" / "train" / "tiny_cpu.yaml"), common)
    vae, frozen = build_models(cfg)
    start = VideoVAE.from_pretrained(tmp_path / "start")
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(),
                                                 start.state_dict().values(), strict=True))
    assert frozen is not None and not any(p.requires_grad for p in frozen.parameters())
    out = tmp_path / "run"
    _run([*common, f"train.output_dir={out}", "train.max_steps=2", "train.val_every=0",
          "train.checkpoint_every=0", "data.num_workers=0", "data.val_clips=1",
          "data.val_num_frames=5", "data.val_resolution=[32,32]", SMALL_DATA])
    assert all(r["train/reg_dec"] is not None for r in _metrics(out))
    both = load_train_config(str(ROOT / "configs" / "train" / "tiny_cpu.yaml"),
                             [*common, f"train.init_from_image_vae={tmp_path / 'image_vae'}"])
    with pytest.raises(ConfigError, match="both set"):
        build_models(both)


@pytest.mark.slow
def test_two_process_accelerate_launch(tmp_path):
    write_media(tmp_path / "data")
    out = tmp_path / "ddp"
    cmd = [*launch_processes(2), "-m", "videovae", "train",
           "--config", str(ROOT / "configs/train/tiny_cpu.yaml"),
           *_overrides(out, 3, [
               "data.sources=[{type: image, path: " + str(tmp_path / "data/images") +
               ", num_frames: 1, resolution: 32, batch_size: 2},"
               " {type: video, path: " + str(tmp_path / "data/videos") +
               ", num_frames: 5, resolution: 32, batch_size: 1}]"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "checkpoints" / "checkpoint-3" / "model.safetensors").is_file()
    assert (out / "checkpoints" / "checkpoint-3" / "random_states_1.pkl").is_file()
    assert (out / "final" / "diffusion_pytorch_model.safetensors").is_file()
    assert "on 2 process(es)" in res.stderr
    m = _metrics(out)
    assert len(m) == 3 and all(np.isfinite(r["train/loss"]) for r in m)  # main process only
    # the skipped-sample counter is the sum over both ranks of what their batches skipped
    # (batches are a pure function of (seed, rank, step), so replay them here)
    cfg = load_train_config(str(ROOT / "configs/train/tiny_cpu.yaml"), cmd[cmd.index("--config")
                                                                           + 2:])
    sources = build_sources(cfg.data)
    expected = sum(StepBatches(sources, cfg.train.seed, rank)[s]["skipped"]
                   for rank in (0, 1) for s in range(3))
    assert expected > 0 and m[-1]["train/skipped_samples"] == expected
    VideoVAE.from_pretrained(out / "final")


def test_train_cli_bad_config_is_one_line(tmp_path, capsys):
    from videovae.cli import main as cli

    assert cli(["train", "--config", str(tmp_path / "missing.yaml")]) != 0
    assert cli(["train", "--config", str(ROOT / "configs/train/tiny_cpu.yaml"),
                "optim.lr=fast"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not found" in err[0] and "optim.lr" in err[1]

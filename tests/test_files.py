"""The file-level commands (encode, decode, reconstruct, eval, latent-stats), bad input included."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_vae
from videovae.cli import main as cli
from videovae.data.synthetic import load_photo, pan_zoom_clip
from videovae.io.latent_file import load_latents
from videovae.io.video import VideoReader, frames_to_tensor, tensor_to_frames
from videovae.io.video import write_video as write_clip
from videovae.metrics import psnr_per_frame


def _no_partial(d, stem):
    return not [p for p in d.iterdir() if p.name.startswith(f".{stem}")]


# ----------------------------------------------------------------------------------------------
# Commands


def test_encode_decode_restore_count_size_fps(tmp_path, model_dir, clip):
    path, frames = clip
    lat = tmp_path / "pan.safetensors"
    assert cli(["encode", str(path), "--model", str(model_dir), "-o", str(lat),
                "--chunk-frames", "4", "--no-progress"]) == 0
    z, meta = load_latents(lat)
    assert z.shape == (4, 4, 5, 7)  # 11 frames -> padded to 13 -> 4 latents
    assert meta["num_frames"] == 11 and meta["fps"] == pytest.approx(12.5)
    # the streamed file equals a full-pass encode of the same frames
    vae = tiny_vae(seed=5)
    ref = vae.encode(frames_to_tensor(VideoReader(path).read_all())).latent_dist.mean[0]
    assert (z - ref).abs().max() < 1e-5

    out = tmp_path / "dec.mp4"
    assert cli(["decode", str(lat), "--model", str(model_dir), "-o", str(out),
                "--no-progress"]) == 0
    r = VideoReader(out)
    assert (r.num_frames, r.height, r.width) == (11, 40, 56)
    assert r.fps == pytest.approx(12.5)

    norm = tmp_path / "norm.safetensors"
    assert cli(["encode", str(path), "--model", str(model_dir), "-o", str(norm), "--normalize",
                "--no-progress"]) == 0
    zn, meta = load_latents(norm)
    assert meta["normalized"] and torch.allclose(zn, z * vae.config.scaling_factor, atol=1e-5)
    out2 = tmp_path / "dec2.mp4"
    assert cli(["decode", str(norm), "--model", str(model_dir), "-o", str(out2),
                "--no-progress"]) == 0
    a, b = VideoReader(out).read_all(), VideoReader(out2).read_all()
    assert np.abs(a.astype(int) - b).max() <= 2


def test_reconstruct_metrics_side_by_side_and_odd_sizes(tmp_path, model_dir):
    frames = pan_zoom_clip(load_photo("coffee"), 6, (36, 52))
    write_clip(tmp_path / "odd.mp4", frames, fps=10)
    out = tmp_path / "rec.mp4"
    assert cli(["reconstruct", str(tmp_path / "odd.mp4"), "--model", str(model_dir), "-o",
                str(out), "--metrics", str(tmp_path / "m.json"), "--side-by-side",
                "--tile", "32", "--tile-overlap", "16", "--no-progress"]) == 0
    r = VideoReader(out)
    assert (r.num_frames, r.height, r.width) == (6, 36, 52)
    sbs = VideoReader(tmp_path / "rec_side_by_side.mp4")
    assert (sbs.num_frames, sbs.height, sbs.width) == (6, 36, 104)
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["num_frames"] == 6 and len(m["psnr_per_frame"]) == 6 and len(m["ssim_per_frame"]) == 6
    # the streamed, tiled metrics equal a full in-memory pass over the decoded input frames
    vae = tiny_vae(seed=5)
    vae.enable_tiling(tile_sample_size=32, tile_sample_overlap=16)
    src = VideoReader(tmp_path / "odd.mp4").read_all()
    with torch.no_grad():
        rec = tensor_to_frames(vae(frames_to_tensor(src)).sample)
    ref = psnr_per_frame(frames_to_tensor(src), frames_to_tensor(rec))[0]
    assert np.allclose(m["psnr_per_frame"], ref.tolist(), atol=0.05), (m["psnr_per_frame"], ref)
    assert m["psnr_mean"] == pytest.approx(np.mean(m["psnr_per_frame"]))
    # 6 frames: the group firsts are frames 0, 1 and 5; positions 1..3 are frames 2..4
    p = m["psnr_per_frame"]
    first = (p[0] + p[1] + p[5]) / 3
    assert m["psnr_per_position"] == pytest.approx([first, p[2], p[3], p[4]])
    assert m["first_vs_rest_gap"] == pytest.approx(first - np.mean(p[2:5]))
    # encode + decode restore the odd size through the latent file's metadata
    lat = tmp_path / "odd.safetensors"
    assert cli(["encode", str(tmp_path / "odd.mp4"), "--model", str(model_dir), "-o", str(lat),
                "--no-progress"]) == 0
    z, meta = load_latents(lat)
    assert z.shape[-2:] == (5, 7) and (meta["padded_height"], meta["padded_width"]) == (4, 4)
    assert cli(["decode", str(lat), "--model", str(model_dir), "-o", str(tmp_path / "d.mp4"),
                "--no-progress"]) == 0
    d = VideoReader(tmp_path / "d.mp4")
    assert (d.num_frames, d.height, d.width) == (6, 36, 52)


@pytest.mark.parametrize("kind", ["image", "one_frame"])
def test_images_and_one_frame_videos_work(tmp_path, model_dir, kind):
    frame = pan_zoom_clip(load_photo("rocket"), 1, (24, 40))
    if kind == "image":
        src = tmp_path / "img.png"
        Image.fromarray(frame[0]).save(src)
    else:
        src = tmp_path / "one.mp4"
        write_clip(src, frame)
    lat = tmp_path / "z.safetensors"
    assert cli(["encode", str(src), "--model", str(model_dir), "-o", str(lat),
                "--no-progress"]) == 0
    assert load_latents(lat)[0].shape == (4, 1, 3, 5)
    out = tmp_path / "one_out.mp4"
    assert cli(["reconstruct", str(src), "--model", str(model_dir), "-o", str(out),
                "--no-progress"]) == 0
    assert VideoReader(out).num_frames == 1


def _fails(capsys, args, pattern, out_path):
    assert cli(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and pattern in err[0].lower(), err
    assert not out_path.exists()
    if out_path.parent.is_dir():
        assert _no_partial(out_path.parent, out_path.stem)


def test_bad_inputs_fail_cleanly(tmp_path, model_dir, clip, capsys, monkeypatch):
    m = ["--model", str(model_dir), "--no-progress"]
    out = tmp_path / "out.mp4"
    lat = tmp_path / "z.safetensors"
    _fails(capsys, ["reconstruct", str(tmp_path / "nope.mp4"), *m, "-o", str(out)],
           "not found", out)
    (tmp_path / "text.mp4").write_text("not a video")
    _fails(capsys, ["encode", str(tmp_path / "text.mp4"), *m, "-o", str(lat)], "cannot read", lat)
    import imageio_ffmpeg

    gen = imageio_ffmpeg.write_frames(str(tmp_path / "empty.mp4"), (32, 32), fps=10,
                                      macro_block_size=1, ffmpeg_log_level="quiet")
    gen.send(None)
    gen.close()
    _fails(capsys, ["encode", str(tmp_path / "empty.mp4"), *m, "-o", str(lat)], "no video stream",
           lat)
    data = clip[0].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    _fails(capsys, ["reconstruct", str(tmp_path / "cut.mp4"), *m, "-o", str(out)],
           "cannot read", out)
    _fails(capsys, ["reconstruct", str(tmp_path / "cut.mp4"), *m, "-o", str(out)], "cut.mp4",
           out)
    _fails(capsys, ["reconstruct", str(clip[0]), *m, "-o", str(tmp_path / "no_dir" / "o.mp4")],
           "does not exist", tmp_path / "no_dir" / "o.mp4")
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root ignores mode bits; make access() honour them
        real = os.access
        monkeypatch.setattr("videovae.io.atomic.os.access",
                            lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    _fails(capsys, ["reconstruct", str(clip[0]), *m, "-o", str(ro / "o.mp4")], "not writable",
           ro / "o.mp4")
    monkeypatch.undo()

    # latents from another model, and latent files without metadata
    assert cli(["encode", str(clip[0]), *m, "-o", str(lat)]) == 0
    other = tmp_path / "other_model"
    tiny_vae(seed=5, conv3d_layers="all").save_pretrained(other)
    _fails(capsys, ["decode", str(lat), "--model", str(other), "--no-progress", "-o", str(out)],
           "different model", out)
    from safetensors.torch import save_file

    save_file({"latents": torch.zeros(4, 2, 2, 2)}, str(tmp_path / "bare.safetensors"))
    _fails(capsys, ["decode", str(tmp_path / "bare.safetensors"), *m, "-o", str(out)],
           "lacks latent metadata", out)
    _fails(capsys, ["decode", str(lat), "--model", str(tmp_path / "no_model"), "-o", str(out)],
           "no model", out)
    # an existing output is kept unless --overwrite
    out.write_bytes(b"keep")
    assert cli(["decode", str(lat), *m, "-o", str(out)]) != 0
    assert out.read_bytes() == b"keep"
    assert cli(["decode", str(lat), *m, "-o", str(out), "--overwrite"]) == 0
    assert VideoReader(out).num_frames == 11


def test_eval_and_latent_stats(tmp_path, model_dir):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        write_clip(data / f"c{i}.mp4", pan_zoom_clip(load_photo("astronaut"), 9, (32, 32),
                                                      speed=1.0 + i))
    (data / "broken.mp4").write_text("not a video")
    report_path = tmp_path / "report.json"
    assert cli(["eval", "--model", str(model_dir), "--data", str(data), "-o", str(report_path),
                "--no-progress"]) == 0
    report = json.loads(report_path.read_text())
    assert report["files"] == 2 and report["frames"] == 18 and len(report["failed"]) == 1
    assert report["failed"][0]["file"].endswith("broken.mp4")
    # the data-set mean is the frame-weighted mean of each file's own reconstruction
    from videovae import load_model
    from videovae.files import reconstruct_file

    vae = load_model(model_dir)
    single = [reconstruct_file(vae, data / f"c{i}.mp4", None, progress=False) for i in range(2)]
    assert report["psnr_mean"] == pytest.approx(np.mean([r["psnr_mean"] for r in single]))
    assert [f["psnr"] for f in report["per_file"]] == [r["psnr_mean"] for r in single]

    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    assert cli(["latent-stats", "--model", str(model), "--data", str(data), "--clips", "4",
                "--num-frames", "5", "--resolution", "32", "--write", "--shift",
                "--no-progress", "-o", str(tmp_path / "stats.json")]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    from videovae import VideoVAE

    vae = VideoVAE.from_pretrained(model)
    assert vae.config.scaling_factor == pytest.approx(1 / stats["std"])
    assert vae.config.shift_factor == pytest.approx(stats["mean"])
    # the measured constants give unit-variance normalized latents on that data
    from videovae.latents import normalize_latents

    clip = frames_to_tensor(VideoReader(data / "c0.mp4").read_all()[:5])
    z = normalize_latents(vae.encode(clip).latent_dist.mode().detach(), vae.config)
    assert 0.5 < z.std().item() < 2.0

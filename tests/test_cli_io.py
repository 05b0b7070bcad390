"""Video IO, latent files and the encode / decode / reconstruct commands, bad input included."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_vae
from videovae.cli import main as cli
from videovae.latent_file import load_latents, save_latents
from videovae.synthetic import load_photo, moving_shapes_clip, pan_zoom_clip, write_clip
from videovae.video_io import VideoReader, VideoReadError, frames_to_tensor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    tiny_vae(seed=5).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    frames = pan_zoom_clip(load_photo("astronaut"), 11, (40, 56), speed=2.0)
    path = d / "pan.mp4"
    write_clip(path, frames, fps=12.5)
    return path, frames


def _no_partial(d, stem):
    return not [p for p in d.iterdir() if p.name.startswith(f".{stem}")]


# ----------------------------------------------------------------------------------------------
# IO


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_reader_and_writer_preserve_count_size_fps(clip, backend):
    path, frames = clip
    r = VideoReader(path, backend)
    assert (r.num_frames, r.height, r.width) == (11, 40, 56)
    assert r.fps == pytest.approx(12.5)
    chunks = list(r.iter_chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    got = np.concatenate(chunks)
    assert got.dtype == np.uint8 and got.shape == frames.shape
    assert np.abs(got.astype(float) - frames).mean() < 6  # H.264 at crf 10


def test_odd_size_gray_and_alpha_become_rgb(tmp_path):
    frames = moving_shapes_clip(5, (33, 47), seed=1)
    write_clip(tmp_path / "odd.mp4", frames)
    r = VideoReader(tmp_path / "odd.mp4")
    assert (r.num_frames, r.height, r.width) == (5, 33, 47)
    import imageio_ffmpeg

    gray = frames.mean(axis=3).astype(np.uint8)
    gen = imageio_ffmpeg.write_frames(str(tmp_path / "gray.mkv"), (47, 33), pix_fmt_in="gray",
                                      pix_fmt_out="gray", codec="ffv1", macro_block_size=1,
                                      ffmpeg_log_level="error")
    gen.send(None)
    for f in gray:
        gen.send(np.ascontiguousarray(f))
    gen.close()
    for backend in ("decord", "pyav"):
        got = VideoReader(tmp_path / "gray.mkv", backend).read_all()
        assert got.shape == (5, 33, 47, 3)
        assert np.array_equal(got[..., 0], gray) and np.array_equal(got[..., 1], gray)
    rgba = np.concatenate([frames[0], np.full((33, 47, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    img = VideoReader(tmp_path / "alpha.png").read_all()
    assert img.shape == (1, 33, 47, 3) and np.array_equal(img[0], frames[0])


def test_reader_errors(tmp_path, clip):
    with pytest.raises(FileNotFoundError, match="not found"):
        VideoReader(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("this is not a video")
    with pytest.raises(VideoReadError, match="cannot read"):
        VideoReader(tmp_path / "text.mp4")
    data = clip[0].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError):
        list(VideoReader(tmp_path / "cut.mp4").iter_chunks())


def test_latent_file_round_trip_and_errors(tmp_path, model_dir):
    vae = tiny_vae(seed=5)
    z = torch.randn(4, 3, 5, 7)
    save_latents(tmp_path / "z.safetensors", z, vae.config, num_frames=8, fps=30.0,
                 height=37, width=50, normalized=False)
    back, meta = load_latents(tmp_path / "z.safetensors")
    assert torch.equal(back, z)
    assert (meta["num_frames"], meta["height"], meta["width"], meta["fps"]) == (8, 37, 50, 30.0)
    assert (meta["padded_frames"], meta["padded_height"], meta["padded_width"]) == (1, 3, 6)
    from safetensors.torch import save_file

    save_file({"latents": z}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="lacks latent metadata: format, num_frames"):
        load_latents(tmp_path / "bare.safetensors")


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
    assert 0 < m["psnr_mean"] < 100 and -1 <= m["ssim_mean"] <= 1
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
    _fails(capsys, ["reconstruct", str(tmp_path / "cut.mp4"), *m, "-o", str(out)], "", out)
    _fails(capsys, ["reconstruct", str(clip[0]), *m, "-o", str(tmp_path / "no_dir" / "o.mp4")],
           "does not exist", tmp_path / "no_dir" / "o.mp4")
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root ignores mode bits; make access() honour them
        real = os.access
        monkeypatch.setattr("videovae.utils.os.access",
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
    assert 0 < report["psnr_mean"] < 100

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
    from videovae.latent_file import normalize_latents

    clip = frames_to_tensor(VideoReader(data / "c0.mp4").read_all()[:5])
    z = normalize_latents(vae.encode(clip).latent_dist.mode().detach(), vae.config)
    assert 0.5 < z.std().item() < 2.0

"""The file-level commands (encode, decode, reconstruct, eval, latent-stats), bad input included."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from videovae.cli import main as cli
from videovae.data.synthetic import load_photo, pan_zoom_clip
from videovae.io.latent_file import load_latents
from videovae.io.video import VideoReader, frames_to_tensor, tensor_to_frames
from videovae.io.video import write_video as write_clip
from videovae.metrics import group_position_stats, psnr_per_frame

from helpers import tiny_vae


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
    pooled = group_position_stats([r["psnr_per_frame"] for r in single])
    assert report["psnr_per_position"] == pytest.approx(pooled["per_position"])
    assert report["first_vs_rest_gap"] == pytest.approx(pooled["first_vs_rest_gap"])

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


# ----------------------------------------------------------------------------------------------
# Nothing silently lost, nothing hidden


def _rewrite_latents(src, dst, latents=None, **meta_changes):
    """Copy a latent file with other latents and/or metadata fields."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, z = dict(f.metadata()), f.get_tensor("latents")
    meta.update(meta_changes)
    save_file({"latents": z if latents is None else latents(z)}, str(dst), metadata=meta)


def _left(d):
    return sorted(p.name for p in d.iterdir())


def test_nonfinite_latents_are_refused_not_decoded_to_black(tmp_path, model_dir, clip, capsys):
    m = ["--model", str(model_dir), "--no-progress"]
    lat = tmp_path / "z.safetensors"
    assert cli(["encode", str(clip[0]), *m, "-o", str(lat)]) == 0

    def poison(z):
        z = z.clone()
        z[0, 1, 2, 3] = float("nan")
        z[1, 0, 0, 0] = float("inf")
        return z

    _rewrite_latents(lat, tmp_path / "nan.safetensors", latents=poison)
    out = tmp_path / "out.mp4"
    _fails(capsys, ["decode", str(tmp_path / "nan.safetensors"), *m, "-o", str(out)],
           "nan.safetensors: latents hold 1 nan and 1 infinite values", out)
    assert _left(tmp_path) == ["nan.safetensors", "z.safetensors"]


def test_wrong_output_names_and_metadata_fail_with_the_file_and_field(tmp_path, model_dir, clip,
                                                                      capsys):
    m = ["--model", str(model_dir), "--no-progress"]
    lat = tmp_path / "z.safetensors"
    assert cli(["encode", str(clip[0]), *m, "-o", str(lat)]) == 0
    _fails(capsys, ["decode", str(lat), *m, "-o", str(tmp_path / "x.safetensors")],
           ".safetensors is not a video format (use .mp4", tmp_path / "x.safetensors")
    _fails(capsys, ["encode", str(clip[0]), *m, "-o", str(tmp_path / "z.mp4")],
           ".mp4 is not a latent file (use .safetensors)", tmp_path / "z.mp4")
    out = tmp_path / "out.mp4"
    for field, value, needle in (
            ("height", "100000", "metadata height=100000 does not fit latents of height 5 "
                                 "(they decode to 33..40 pixels)"),
            ("fps", "0", "metadata fps=0 must be a positive number"),
            ("fps", "nan", "metadata fps=nan must be a positive number"),
            ("num_frames", "abc", "metadata num_frames='abc' is not an integer"),
            ("num_frames", "40", "metadata num_frames=40 does not fit its 4 latent frames")):
        bad = tmp_path / f"bad_{field}.safetensors"
        _rewrite_latents(lat, bad, **{field: value})
        _fails(capsys, ["decode", str(bad), *m, "-o", str(out)], f"{bad.name}: {needle}".lower(),
               out)
        bad.unlink()
    assert _left(tmp_path) == ["z.safetensors"]


def test_decode_and_reconstruct_keep_the_sample_aspect_ratio(tmp_path, model_dir):
    from fractions import Fraction

    import av
    import imageio_ffmpeg

    frames = pan_zoom_clip(load_photo("coffee"), 5, (32, 48))
    src = tmp_path / "anamorphic.mp4"
    gen = imageio_ffmpeg.write_frames(str(src), (48, 32), fps=10, macro_block_size=1,
                                      output_params=["-vf", "setsar=4/3"],
                                      ffmpeg_log_level="error")
    gen.send(None)
    for f in frames:
        gen.send(np.ascontiguousarray(f))
    gen.close()

    def sar(path):
        with av.open(str(path)) as c:
            return c.streams.video[0].sample_aspect_ratio

    assert sar(src) == Fraction(4, 3) and VideoReader(src).sample_aspect_ratio == (4, 3)
    m = ["--model", str(model_dir), "--no-progress"]
    lat = tmp_path / "z.safetensors"
    assert cli(["encode", str(src), *m, "-o", str(lat)]) == 0
    assert load_latents(lat)[1]["sample_aspect_ratio"] == (4, 3)
    assert cli(["decode", str(lat), *m, "-o", str(tmp_path / "dec.mp4")]) == 0
    assert cli(["reconstruct", str(src), *m, "-o", str(tmp_path / "rec.mp4")]) == 0
    assert sar(tmp_path / "dec.mp4") == sar(tmp_path / "rec.mp4") == Fraction(4, 3)
    square = tmp_path / "square.mp4"
    write_clip(square, frames)
    assert cli(["encode", str(square), *m, "-o", str(tmp_path / "sq.safetensors")]) == 0
    assert "sample_aspect_ratio" not in load_latents(tmp_path / "sq.safetensors")[1]


def _eval_data(root, n=3):
    root.mkdir()
    for i in range(n):
        write_clip(root / f"c{i}.mp4", pan_zoom_clip(load_photo("astronaut"), 5, (32, 32),
                                                     speed=1.0 + i))
    return root


def test_eval_records_any_failure_and_always_writes_its_report(tmp_path, model_dir, capsys,
                                                               monkeypatch):
    import videovae.files as files

    data = _eval_data(tmp_path / "data", n=2)
    real = files.reconstruct_file

    def out_of_memory_on_c0(vae, path, *a, **k):
        if path.name == "c0.mp4":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return real(vae, path, *a, **k)

    monkeypatch.setattr(files, "reconstruct_file", out_of_memory_on_c0)
    report = tmp_path / "report.json"
    m = ["--model", str(model_dir), "--data", str(data), "--no-progress"]
    assert cli(["eval", *m, "-o", str(report)]) == 0
    assert "1 files, 5 frames" in capsys.readouterr().out
    r = json.loads(report.read_text())
    assert r["complete"] and r["files_total"] == 2 and r["files"] == 1
    assert [f["file"] for f in r["failed"]] == [str(data / "c0.mp4")]
    assert r["failed"][0]["error"].startswith("out of memory (CUDA out of memory")
    assert "--tile" in r["failed"][0]["error"]

    # interrupted on the second file: the first is in the report, which says so
    def interrupted_on_c1(vae, path, *a, **k):
        if path.name == "c1.mp4":
            raise KeyboardInterrupt
        return real(vae, path, *a, **k)

    monkeypatch.setattr(files, "reconstruct_file", interrupted_on_c1)
    assert cli(["eval", *m, "-o", str(report), "--overwrite"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "videovae: interrupted"
    r = json.loads(report.read_text())
    assert not r["complete"] and r["files"] == 1 and r["failed"] == []
    assert _left(tmp_path) == ["data", "report.json"]

    # frames too large for the free memory: refused up front with the hint to tile; with tiles
    # of 16 pixels the same files fit
    monkeypatch.setattr(files, "reconstruct_file", real)
    monkeypatch.setattr(files, "available_memory", lambda device: 2**20)
    assert cli(["eval", *m, "-o", str(report), "--overwrite"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the 2 files" in err[0], err
    assert "32x32 frames need at least 2.1 MiB per chunk, 1.0 MiB is free; use --tile 16" in err[0]
    r = json.loads(report.read_text())
    assert r["files"] == 0 and len(r["failed"]) == 2 and r["psnr_mean"] is None
    assert all("use --tile 16" in f["error"] for f in r["failed"])
    assert cli(["eval", *m, "-o", str(report), "--overwrite", "--tile", "16",
                "--tile-overlap", "8", "--max-files", "1"]) == 0  # (tiny tiles are slow)
    assert json.loads(report.read_text())["files"] == 1


def test_latent_stats_write_changes_config_json_only(tmp_path, model_dir):
    import shutil

    data = _eval_data(tmp_path / "data", n=1)
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    (model / "NOTES.md").write_text("my notes")
    (model / "extra").mkdir()
    (model / "extra" / "samples.txt").write_text("keep me")
    weights = model / "diffusion_pytorch_model.safetensors"
    before = (weights.read_bytes(), weights.stat().st_ino)
    assert cli(["latent-stats", "--model", str(model), "--data", str(data), "--clips", "1",
                "--num-frames", "5", "--resolution", "32", "--write", "--no-progress"]) == 0
    assert _left(model) == ["NOTES.md", "config.json", "diffusion_pytorch_model.safetensors",
                            "extra"]
    assert (model / "NOTES.md").read_text() == "my notes"
    assert (model / "extra" / "samples.txt").read_text() == "keep me"
    assert (weights.read_bytes(), weights.stat().st_ino) == before
    config = json.loads((model / "config.json").read_text())
    old = json.loads((model_dir / "config.json").read_text())
    assert config["scaling_factor"] != old["scaling_factor"]
    assert {k: v for k, v in config.items() if k != "scaling_factor"} == \
        {k: v for k, v in old.items() if k != "scaling_factor"}

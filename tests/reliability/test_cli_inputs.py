"""Videos and images as input to encode, reconstruct and eval: files that cannot be read are
refused with one line naming them and leave nothing behind; unusual but valid ones (odd sizes,
one frame, grayscale, alpha) work."""

import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videovae.io.latent_file import load_latents
from videovae.io.video import VideoReader

pytestmark = pytest.mark.usefixtures("one_thread")


def _frames_of(path):
    r = VideoReader(path)
    return r.num_frames, r.height, r.width


def _png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG header declaring a huge image, with almost no pixel data."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _missing(d):
    return d / "nope.mp4"


def _empty(d):
    (d / "empty.mp4").write_bytes(b"")
    return d / "empty.mp4"


def _text(d):
    (d / "notes.mp4").write_text("this is not a video\n" * 20)
    return d / "notes.mp4"


def _no_frames(d):
    import imageio_ffmpeg

    gen = imageio_ffmpeg.write_frames(str(d / "hollow.mp4"), (32, 32), fps=10,
                                      macro_block_size=1, ffmpeg_log_level="quiet")
    gen.send(None)
    gen.close()
    return d / "hollow.mp4"


def _directory(d):
    (d / "clip.mp4").mkdir()
    return d / "clip.mp4"


def _png_bomb(d):
    (d / "bomb.png").write_bytes(_png_declaring(100_000, 100_000))  # ~500 bytes
    return d / "bomb.png"


@pytest.mark.parametrize("make, patterns, max_seconds", [
    pytest.param(_missing, ["video not found", "nope.mp4"], None, id="missing"),
    pytest.param(_empty, ["cannot read|no frames|no video", "empty.mp4"], None, id="0-byte"),
    pytest.param(_text, ["cannot read", "notes.mp4"], None, id="text-renamed-mp4"),
    pytest.param(_no_frames, ["no video stream|no frames|cannot read", "hollow.mp4"], None,
                 id="container-without-frames"),
    pytest.param(_directory, ["is a directory"], None, id="directory"),
    pytest.param(_png_bomb, ["bomb.png", "cannot read|exceed|too large|limit"], 30,
                 id="png-declaring-100000x100000"),
])
def test_encode_refuses_what_is_not_a_readable_video(tmp_path, model_dir, run_cli, make, patterns,
                                                     max_seconds):
    src = make(tmp_path)
    keep = [src.name] if src.exists() else []
    out = tmp_path / "z.safetensors"
    res = run_cli("encode", src, "--model", model_dir, "--no-progress", "-o", out)
    res.fails(*patterns, outputs=[out], keep=keep)
    if max_seconds is not None:  # refused from the header, nothing decoded
        assert res.seconds < max_seconds, res.seconds


def test_odd_size_encodes_and_decodes_to_its_size(tmp_path, model_dir, run_cli, make_video):
    src = make_video(tmp_path / "odd.mp4", 7, (37, 53))
    assert _frames_of(src) == (7, 37, 53)
    m = ["--model", model_dir, "--no-progress"]
    run_cli("encode", src, *m, "-o", tmp_path / "odd.safetensors").ok()
    run_cli("decode", tmp_path / "odd.safetensors", *m, "-o", tmp_path / "dec.mp4").ok()
    assert _frames_of(tmp_path / "dec.mp4") == (7, 37, 53)


def test_odd_size_reconstructs_with_metrics(tmp_path, model_dir, run_cli, make_video):
    src = make_video(tmp_path / "odd.mp4", 7, (37, 53))
    run_cli("reconstruct", src, "--model", model_dir, "--no-progress", "-o", tmp_path / "rec.mp4",
        "--metrics", tmp_path / "m.json").ok()
    assert _frames_of(tmp_path / "rec.mp4") == (7, 37, 53)
    assert len(json.loads((tmp_path / "m.json").read_text())["psnr_per_frame"]) == 7


def test_one_frame_video_encodes_to_one_latent_frame_and_decodes(tmp_path, model_dir, run_cli,
                                                                 make_video):
    src = make_video(tmp_path / "one.mp4", 1, (24, 40))
    m = ["--model", model_dir, "--no-progress"]
    run_cli("encode", src, *m, "-o", tmp_path / "z.safetensors").ok()
    assert tuple(load_latents(tmp_path / "z.safetensors")[0].shape) == (4, 1, 3, 5)
    run_cli("decode", tmp_path / "z.safetensors", *m, "-o", tmp_path / "dec.mp4").ok()
    assert _frames_of(tmp_path / "dec.mp4") == (1, 24, 40)


def test_grayscale_video_reconstructs(tmp_path, model_dir, run_cli):
    import av
    import imageio_ffmpeg

    src = tmp_path / "gray.mkv"  # (FFmpeg's libx264 may lack gray; FFV1 stores it as such)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=s=48x32:d=1:r=9", "-c:v", "ffv1", "-pix_fmt", "gray", str(src)],
                   check=True, timeout=60)
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "gray"
    run_cli("reconstruct", src, "--model", model_dir, "--no-progress", "-o",
        tmp_path / "rec.mp4").ok()
    assert _frames_of(tmp_path / "rec.mp4") == (9, 32, 48)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_alpha_png_encode(tmp_path, model_dir, run_cli, mode):
    pix = (np.arange(24 * 40) % 251).astype(np.uint8).reshape(24, 40)
    image = Image.fromarray(pix, "L") if mode == "L" else \
        Image.fromarray(np.stack([pix] * 4, -1), "RGBA")
    image.save(tmp_path / "image.png")
    run_cli("encode", tmp_path / "image.png", "--model", model_dir, "--no-progress", "-o",
        tmp_path / "z.safetensors").ok()
    assert tuple(load_latents(tmp_path / "z.safetensors")[0].shape) == (4, 1, 3, 5)


def _memory_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return 0


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    """An mp4 that declares 8192x8192 frames (one flat frame: ~200 KB on disk)."""
    import imageio_ffmpeg

    if _memory_available() > 128 * 2**30:  # (its chunk needs 136 GiB with this model)
        pytest.skip("this machine has the memory to encode 8192x8192 frames")

    path = tmp_path_factory.mktemp("huge") / "huge.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
                    "-i", "color=c=gray:s=8192x8192:d=1:r=1", "-frames:v", "1", "-c:v",
                    "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
                   check=True, timeout=120)
    return path


def test_frames_too_large_for_memory_are_refused_up_front(tmp_path, model_dir, run_cli, huge):
    out = tmp_path / "z.safetensors"
    res = run_cli("encode", huge, "--model", model_dir, "--no-progress", "-o", out)
    res.fails("8192x8192", r"--tile \d+", outputs=[out])
    assert res.seconds < 60, res.seconds


# ----------------------------------------------------------------------------------------------
# eval over a folder: one bad file is reported, not fatal


@pytest.fixture(scope="module")
def eval_clips(tmp_path_factory, make_video):
    d = tmp_path_factory.mktemp("eval_clips")
    return [make_video(d / f"c{i}.mp4", 5, (32, 32), speed=1.0 + i) for i in range(2)]


def test_eval_reports_a_huge_file_with_a_tile_hint_and_evaluates_the_rest(tmp_path, model_dir,
                                                                         run_cli, eval_clips, huge):
    data = tmp_path / "data"
    data.mkdir()
    for p in [*eval_clips, huge]:
        shutil.copy(p, data / p.name)
    run_cli("eval", "--model", model_dir, "--no-progress", "--data", data, "-o",
        tmp_path / "report.json").ok()
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["files"] == 2 and [Path(f["file"]).name for f in r["failed"]] == \
        ["huge.mp4"], r["failed"]
    assert "--tile" in r["failed"][0]["error"], r["failed"][0]["error"]


def test_eval_of_only_corrupt_files_fails_and_still_writes_its_report(tmp_path, model_dir, run_cli):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        (data / f"bad{i}.mp4").write_text("not a video")
    res = run_cli("eval", "--model", model_dir, "--no-progress", "--data", data, "-o",
              tmp_path / "report.json")
    res.fails("none of the 2 files", "cannot read")
    r = json.loads((tmp_path / "report.json").read_text())
    assert len(r["failed"]) == 2 and r["files"] == 0, r

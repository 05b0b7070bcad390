"""Videos and images from the wild, and a writer that must not publish a broken video (issue 19:
items 3, 11-17 and the new user's SAR and decord-stderr findings; case ids of
reliability_probe_turn3.md in the test names' comments)."""

import contextlib
import logging
import os
import re
import struct
import subprocess
import sys
import threading
from fractions import Fraction

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image, ImageOps

from videovae.errors import VideoReadError
from videovae.io.atomic import atomic_output
from videovae.io.listing import list_files
from videovae.io.video import (
    VideoReader,
    VideoWriteError,
    VideoWriter,
    _has_decord,
    _native_stderr_into,
    write_video,
)


def ffmpeg(*args):
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *map(str, args)],
                   check=True)


def ffmpeg_rgb(path, shape):
    """What ffmpeg itself displays (it applies the display matrix): uint8 frames."""
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f",
                          "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True)
    return np.frombuffer(out.stdout, np.uint8).reshape(shape)


def noise(t, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def need(backend):
    if backend == "decord" and not _has_decord():
        pytest.skip("decord is not installed")


# ----------------------------------------------------------------------------------------------
# item 3 / B06: ffmpeg's failures are errors, and the atomic output keeps the old file


@pytest.fixture
def full_disk(tmp_path):
    """A 48 KB tmpfs (root only; skipped where mounting is not permitted)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)],
                              capture_output=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_while_ffmpeg_writes_keeps_the_old_video(full_disk):  # B06
    old = full_disk / "old.mp4"
    write_video(old, noise(2))
    before = old.read_bytes()
    with pytest.raises(VideoWriteError, match="old.mp4: no space left on device"):
        with atomic_output(old, overwrite=True) as tmp, \
                VideoWriter(tmp, 10, 32, 32, crf=0, name=old) as writer:
            for i in range(12):  # about 3 KB a frame: the trailer no longer fits
                writer.write(noise(4, seed=i + 1))
    assert old.read_bytes() == before and [p.name for p in full_disk.iterdir()] == ["old.mp4"]


def fake_ffmpeg(tmp_path, script):
    exe = tmp_path / "ffmpeg"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)
    return str(exe)


@pytest.mark.parametrize("case, message", [
    ("dev_full", "out.mp4: no space left on device"),  # the disk is full from the first byte
    ("ffmpeg_fails_at_the_end", "ffmpeg could not write .*out.mp4: Error writing trailer: bad"),
    ("ffmpeg_dies_at_once", "ffmpeg could not write .*out.mp4: Unknown encoder"),
    ("muxer_refuses_the_rate", "ffmpeg could not write .*out.mp4: .*muxer"),
])
def test_writer_raises_when_ffmpeg_fails(tmp_path, monkeypatch, case, message):  # item 3
    out, fps = tmp_path / "out.mp4", 10
    if case == "dev_full":
        out.symlink_to("/dev/full")
    elif case == "ffmpeg_fails_at_the_end":
        exe = fake_ffmpeg(tmp_path, "cat > /dev/null\n"
                          "echo '[out#0/mp4 @ 0x1] Error writing trailer: bad' >&2\nexit 1\n")
        monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: exe)
    elif case == "ffmpeg_dies_at_once":
        exe = fake_ffmpeg(tmp_path, "echo \"Unknown encoder 'libx264'\" >&2\nexit 8\n")
        monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: exe)
    else:  # a real non-zero exit: mp4 cannot store one frame per 100000 s
        fps = 1e-5
    with pytest.raises(VideoWriteError, match=message):
        with VideoWriter(out, fps, 32, 32) as writer:
            for i in range(50):  # enough to fill the pipe when ffmpeg is gone
                writer.write(noise(4, seed=i))


def test_writer_stops_ffmpeg_quietly_when_the_caller_fails(tmp_path):
    with pytest.raises(KeyError):
        with VideoWriter(tmp_path / "x.mp4", 10, 32, 32) as writer:
            writer.write(noise(2))
            raise KeyError("model failed")
    assert writer._proc is None


# ----------------------------------------------------------------------------------------------
# item 11 / A01, B10: frames as displayed, whichever the backend


@pytest.fixture(scope="module")
def raw_48x32(tmp_path_factory):
    d = tmp_path_factory.mktemp("rotation")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=48x32:r=10", "-frames:v", 9, "-pix_fmt", "yuv420p",
           "-vf", "setsar=8/9", d / "raw.mp4")
    return d / "raw.mp4"


@pytest.mark.parametrize("backend, rotation", [
    ("decord", 90), ("decord", 270), ("pyav", 90), ("pyav", 270), ("pyav", 180), ("auto", 90),
    ("auto", 180)])
def test_display_matrix_is_applied_by_every_backend(raw_48x32, tmp_path, backend, rotation):
    need(backend)  # A01
    phone = tmp_path / f"phone{rotation}.mp4"
    ffmpeg("-display_rotation", rotation, "-i", raw_48x32, "-c", "copy", phone)
    upright = rotation in (90, 270)
    shape = (9, 48, 32, 3) if upright else (9, 32, 48, 3)
    r = VideoReader(phone, backend)
    got = r.read_all()
    assert (r.num_frames, r.height, r.width) == shape[:3] and got.shape == shape
    assert np.abs(got.astype(int) - ffmpeg_rgb(phone, shape)).mean() < 1
    assert np.array_equal(r.read_frames([2, 7]), got[[2, 7]])
    assert r.sample_aspect_ratio == ((9, 8) if upright else (8, 9))  # the pixel turns too


@pytest.mark.parametrize("suffix, orientation", [(".jpg", 6), (".jpg", 8), (".jpg", 3),
                                                 (".png", 6)])
def test_exif_orientation_is_applied(tmp_path, suffix, orientation):  # B10
    stored = Image.fromarray(np.kron(noise(1, 4, 6)[0], np.ones((8, 8, 1), np.uint8)))  # 32x48
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"phone{suffix}"
    stored.save(path, exif=exif)
    with Image.open(path) as im:
        shown = np.array(ImageOps.exif_transpose(im).convert("RGB"))
    r = VideoReader(path)
    assert (r.height, r.width) == shown.shape[:2] == ((32, 48) if orientation == 3 else (48, 32))
    assert np.array_equal(r.read_all()[0], shown)


# ----------------------------------------------------------------------------------------------
# items 12, 13 / A11, B09: animated images, 16-bit images


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
@pytest.mark.parametrize("durations, repeats, fps", [
    ([100] * 5, [1] * 5, 10.0),
    ([100, 200, 100, 300, 100], [1, 2, 1, 3, 1], 10.0),  # kept timing: frames repeated
    ([40, 1000, 40], [1, 1, 1], 3 / 1.08),  # too many repeats: the average rate
])
def test_animated_images_are_read_frame_by_frame(tmp_path, fmt, durations, repeats, fps):
    frames = noise(len(durations), seed=3)  # A11
    path = tmp_path / f"anim.{fmt.lower()}"
    first, *rest = [Image.fromarray(f) for f in frames]
    first.save(path, format=fmt, save_all=True, append_images=rest, duration=durations,
               loop=0, lossless=True)
    r = VideoReader(path)
    assert r.backend == "animation" and r.num_frames == sum(repeats)
    assert r.fps == pytest.approx(fps)
    assert np.array_equal(r.read_all(), np.repeat(frames, repeats, axis=0))
    assert [len(c) for c in r.iter_chunks(4)] == [4] * (sum(repeats) // 4) + (
        [sum(repeats) % 4] if sum(repeats) % 4 else [])
    assert np.array_equal(r.read_frames([0, sum(repeats) - 1]), r.read_all()[[0, -1]])


def test_animated_webp_of_the_probe(tmp_path):  # A11 as reported: 9 frames, not 1
    path = tmp_path / "anim.webp"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=32x32:r=10", "-frames:v", 9, "-c:v", "libwebp_anim",
           path)
    r = VideoReader(path)
    assert (r.num_frames, r.fps) == (9, 10.0) and r.read_all().shape == (9, 32, 32, 3)


@pytest.mark.parametrize("suffix, mode", [(".png", "I;16"), (".png", "I;16B"), (".tif", "I;16")])
def test_16_bit_images_are_scaled_to_8_bits(tmp_path, suffix, mode):  # B09
    ramp = np.linspace(0, 65535, 32).round().astype(np.uint16)[None].repeat(32, 0)
    path = tmp_path / f"deep{suffix}"
    order = ">u2" if mode.endswith("B") else "<u2"
    Image.frombytes(mode, (32, 32), ramp.astype(order).tobytes()).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
    got = VideoReader(path).read_all()[0]
    assert np.abs(got.astype(int) - (ramp / 257).round()[..., None]).max() <= 1
    assert got[:, 0].max() == 0 and got[:, -1].min() == 255


# ----------------------------------------------------------------------------------------------
# item 14 / A13: a header that would make decord abort the process


@pytest.fixture(scope="module")
def huge_avi(tmp_path_factory):
    """9 MJPEG frames whose headers declare 2,000,000,000 (no index): decord's bad_alloc."""
    d = tmp_path_factory.mktemp("avi")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=32x32:r=10", "-frames:v", 9, "-c:v", "mjpeg",
           d / "ok.avi")
    data = bytearray((d / "ok.avi").read_bytes())
    struct.pack_into("<I", data, data.find(b"avih") + 24, 2_000_000_000)
    struct.pack_into("<I", data, data.find(b"strh") + 40, 2_000_000_000)
    k = data.find(b"idx1")
    data[k:k + 4] = b"JUNK"
    (d / "huge.avi").write_bytes(data)
    return d / "huge.avi"


def test_implausible_frame_count_is_counted_with_pyav(huge_avi):  # A13
    r = VideoReader(huge_avi, "pyav")
    assert (r.num_frames, r.fps) == (9, 10.0) and r.read_all().shape == (9, 32, 32, 3)


@pytest.mark.slow
@pytest.mark.parametrize("backend, expected", [
    ("auto", r"pyav 9 \(9, 32, 32, 3\)"),
    ("decord", r"VideoReadError: .*huge.avi: its header declares 2000000000 frames in 13\d\d\d "
               r"bytes, which would crash decord; use --backend pyav \(or auto\)")])
def test_implausible_frame_count_never_aborts_the_process(huge_avi, backend, expected):
    need(backend)  # A13, A13b: a subprocess, since the failure is an abort
    code = ("import sys\nfrom videovae.io.video import VideoReader\n"
            "try:\n    r = VideoReader(sys.argv[1], sys.argv[2])\n"
            "    print(r.backend, r.num_frames, r.read_all().shape)\n"
            "except Exception as e:\n    print(type(e).__name__ + ':', e)\n")
    done = subprocess.run([sys.executable, "-c", code, str(huge_avi), backend],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-500:]
    assert re.fullmatch(expected, done.stdout.strip()), done.stdout


# ----------------------------------------------------------------------------------------------
# item 15 / A16, A17: only regular files


def _open_without_blocking(path, flags):
    with contextlib.suppress(OSError):
        os.close(os.open(path, flags | os.O_NONBLOCK))


@pytest.mark.parametrize("kind", ["fifo", "fifo_with_writer", "device"])
def test_non_regular_files_are_refused_at_once(tmp_path, clip, kind):
    path = tmp_path / "pipe.mp4"  # A16, A17
    writer = None
    if kind == "device":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    if kind == "fifo_with_writer":
        def feed():
            with contextlib.suppress(OSError), open(path, "wb") as f:
                f.write(clip[0].read_bytes())
        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
    result = {}

    def read():
        try:
            VideoReader(path)
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    hung = reader.is_alive()
    if kind != "device":  # release whoever still waits on the FIFO
        _open_without_blocking(path, os.O_WRONLY)
        _open_without_blocking(path, os.O_RDONLY)
    if writer is not None:
        writer.join(10)
    assert not hung, "the reader blocked on a non-regular file"
    assert isinstance(result.get("error"), VideoReadError)
    what = "a device" if kind == "device" else "a pipe (FIFO)"
    assert str(result["error"]) == (f"{path} is {what}, not a regular file: save the video to a "
                                    "file first")


# ----------------------------------------------------------------------------------------------
# item 16 / A19: the source's timing


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi"])
@pytest.mark.parametrize("fps, rate", [(1 / 3600, Fraction(1, 3600)),
                                       (30000 / 1001, Fraction(30000, 1001)),
                                       (12.5, Fraction(25, 2))])
def test_writer_keeps_the_frame_rate(tmp_path, suffix, fps, rate):  # A19
    path = tmp_path / f"v{suffix}"
    with VideoWriter(path, fps, 32, 32) as writer:
        writer.write(noise(3))
    assert VideoReader(path, "pyav").fps == pytest.approx(float(rate), rel=1e-9)
    assert writer.rate == rate


def test_time_lapse_round_trip_keeps_its_fps(tmp_path):  # A19 as reported
    src = tmp_path / "timelapse.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=32x32:r=1", "-frames:v", 5, "-r", "1/3600",
           "-pix_fmt", "yuv420p", src)
    r = VideoReader(src)
    write_video(tmp_path / "dec.mp4", r.read_all(), fps=r.fps)
    back = VideoReader(tmp_path / "dec.mp4")
    assert (back.num_frames, back.fps) == (5, pytest.approx(1 / 3600, rel=1e-9))


def test_writer_says_what_the_container_changed(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="videovae.io.video"):
        write_video(tmp_path / "fast.mkv", noise(3), fps=100000)  # Matroska counts in ms
    assert "the .mkv container cannot store 100000 fps; the video plays at" in caplog.text
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(VideoWriteError, match="fps must be a positive number"):
            VideoWriter(tmp_path / "x.mp4", bad, 32, 32)


# ----------------------------------------------------------------------------------------------
# the new user's findings: exact sample aspect ratio, no raw decord lines


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi"])
@pytest.mark.parametrize("sar", [(128, 117), (40, 33), (8, 9)])
def test_sample_aspect_ratio_is_written_exactly(tmp_path, suffix, sar):
    path = tmp_path / f"v{suffix}"
    with VideoWriter(path, 10, 32, 32, sample_aspect_ratio=sar) as writer:
        writer.write(noise(2))
    assert VideoReader(path, "pyav").sample_aspect_ratio == sar  # not 93:85 for 128:117


@pytest.mark.parametrize("backend", ["auto", "decord"])
@pytest.mark.parametrize("content", ["text", "zip"])
def test_unreadable_files_print_no_native_lines(tmp_path, capfd, backend, content):
    need(backend)
    path = tmp_path / "video.mp4"
    path.write_bytes(b"not a video at all\n" if content == "text" else b"PK\x03\x04" + bytes(300))
    with pytest.raises(VideoReadError, match=f"cannot read {path} as a video"):
        VideoReader(path, backend)
    err = capfd.readouterr().err
    assert "ERROR opening" not in err and "moov atom" not in err and err == ""


def test_decord_failures_print_nothing(raw_48x32, capfd):
    need("decord")  # PyAV reads this 48x32 file; decord 0.6 fails on it: falls back, quietly
    r = VideoReader(raw_48x32)
    assert r.read_all().shape == (9, 32, 48, 3)
    assert capfd.readouterr().err == ""


def test_native_stderr_is_captured_and_restored(capfd):
    said = []
    with _native_stderr_into(said):
        os.write(2, b"[17:11:47] video_reader.cc:83: ERROR opening: x.mp4\n")
    os.write(2, b"after\n")
    assert said == ["[17:11:47] video_reader.cc:83: ERROR opening: x.mp4\n"]
    assert capfd.readouterr().err == "after\n"


# ----------------------------------------------------------------------------------------------
# item 17 / B08: symlinked folders in a data folder


def test_symlinked_folders_are_followed_once(tmp_path, caplog):
    data, other = tmp_path / "data", tmp_path / "other"
    (data / "real" / "deeper").mkdir(parents=True)
    other.mkdir()
    for p in (data / "real" / "a.mp4", data / "real" / "deeper" / "d.mp4", other / "b.mp4",
              tmp_path / "c.mp4"):
        p.write_bytes(b"x")
    (data / "linked").symlink_to(other)  # followed
    (data / "c.mp4").symlink_to(tmp_path / "c.mp4")  # a linked file, taken as before
    (data / "loop").symlink_to(data)  # a loop: must not hang
    (data / "real" / "up").symlink_to("..")  # another loop, relative
    (data / "alias").symlink_to(data / "real")  # a folder already listed: no duplicates
    (data / "broken").symlink_to(tmp_path / "nowhere")
    with caplog.at_level(logging.WARNING, logger="videovae.io.listing"):
        files = list_files(data)
    assert [p.relative_to(data).as_posix() for p in files] == [
        "c.mp4", "linked/b.mp4", "real/a.mp4", "real/deeper/d.mp4"]
    for name in ("alias", "loop", "real/up"):
        assert f"skipping {data / name}: it links to a folder already listed" in caplog.text

"""Long commands (encode, decode, reconstruct, eval, latent-stats, extract, learnability) as a user
meets them on real videos (issue 19): what a stop signal does, what the progress bar counts,
whether `reconstruct` is `encode` then `decode`, what a failing video writer publishes, how slow
frame rates are printed, and what `eval` keeps in memory.
"""

import errno
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import videovae.files as files
from videovae import load_model
from videovae.io.video import VideoReader, tensor_to_frames, write_video

from helpers import photo_clip

HANG_GUARD_S = 60  # only against a hung process: no assertion on how fast a command is


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob(".*"))


def _clips(folder: Path, n: int, frames: int, size=(32, 32)) -> Path:
    folder.mkdir()
    for i in range(n):
        write_video(folder / f"c{i}.mp4",
                    tensor_to_frames(photo_clip(frames, size, photo="astronaut", speed=1 + i)),
                    fps=10)
    return folder


def _wait_for(proc: subprocess.Popen, marker: str, count: int = 1) -> list[str]:
    """stderr lines up to the `count`-th one holding `marker` (the process is then under way)."""
    seen = []
    deadline = time.monotonic() + HANG_GUARD_S * 4
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if sum(marker in ln for ln in seen) == count:
            return seen
    raise AssertionError(f"no {marker!r} line before the process ended: {''.join(seen)[-3000:]}")


def _stop(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"still running {HANG_GUARD_S} s after the signal: "
                             f"{err[-3000:]}") from None
    return proc.returncode, err


# ----------------------------------------------------------------------------------------------
# SIGTERM / SIGINT: stop within seconds, nothing half-written, eval's partial report


@pytest.mark.slow
def test_eval_stops_on_sigterm_and_writes_its_partial_report(tmp_path, model_dir, start_process):
    data = _clips(tmp_path / "data", 8, 21)
    out = tmp_path / "out"
    out.mkdir()
    report = out / "report.json"
    proc = start_process("eval", "--model", model_dir, "--data", data, "-o", report,
                         "--no-progress")
    _wait_for(proc, "reconstructed", 2)  # (the first file is in the report: the second ended)
    rc, err = _stop(proc, signal.SIGTERM)
    assert rc == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == "videovae: terminated"
    r = json.loads(report.read_text())
    assert r["complete"] is False and r["files_total"] == 8, r
    assert 1 <= r["files"] < 8 and r["failed"] == [], r
    assert _temporaries(out) == []


# A command stuck in one long native step (a convolution over large frames can take minutes on a
# CPU, and Python raises KeyboardInterrupt only between bytecodes): here the N-th encoder chunk
# runs key derivations of several minutes each that, like torch's kernels, release the GIL (and
# go on if the signal came just before one started, so the step never ends by itself).
STUCK = """
import hashlib, sys
from videovae.cli import main
from videovae.models import StreamingAutoencoder

real, calls = StreamingAutoencoder._encode_chunk, []

def encode_chunk(self, x, state):
    calls.append(1)
    if len(calls) == int(sys.argv[1]):
        said = False
        while True:
            try:
                if not said:  # (said inside the try: the signal may come as soon as it is said)
                    said = True
                    print("STUCK", file=sys.stderr, flush=True)
                hashlib.pbkdf2_hmac("sha256", b"videovae", b"salt", 10**9)
            except KeyboardInterrupt:
                pass
    return real(self, x, state)

StreamingAutoencoder._encode_chunk = encode_chunk
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("command, sig", [("eval", signal.SIGTERM),
                                          ("reconstruct", signal.SIGINT),
                                          ("latent-stats", signal.SIGTERM)])
def test_a_command_stuck_in_native_code_still_stops(tmp_path, model_dir, start_process, command,
                                                    sig):
    """Before: the command ran on until the native step ended (minutes, here ~7); now it is cut
    short a few seconds after the signal, with the same cleanup as an interrupt."""
    data = _clips(tmp_path / "data", 3, 17)  # 17 frames: one encoder chunk per file
    out = tmp_path / "out"
    out.mkdir()
    m = ["--model", model_dir, "--no-progress"]
    if command == "eval":  # stuck on the second file
        args = [2, "eval", *m, "--data", data, "-o", out / "report.json"]
    elif command == "reconstruct":  # stuck on the second chunk, while ffmpeg writes
        clip = _clips(tmp_path / "long", 1, 33) / "c0.mp4"
        args = [2, "reconstruct", clip, *m, "-o", out / "rec.mp4", "--metrics",
                out / "rec.json", "--side-by-side"]
    else:
        args = [2, "latent-stats", *m, "--data", data, "--clips", 3, "--num-frames", 5,
                "--resolution", 32, "-o", out / "stats.json"]
    proc = start_process(*args, code=STUCK)
    _wait_for(proc, "STUCK")
    if command == "reconstruct":
        assert _temporaries(out), "the outputs' temporaries were not there yet"
    rc, err = _stop(proc, sig)
    assert rc == 128 + sig, err[-3000:]
    assert err.strip().splitlines()[-1] == ("videovae: terminated" if sig == signal.SIGTERM
                                            else "videovae: interrupted")
    assert "stopped without finishing it" in err
    assert _temporaries(out) == []
    if command == "eval":
        r = json.loads((out / "report.json").read_text())
        assert r["complete"] is False and r["files"] == 1 and r["files_total"] == 3, r
        assert r["per_file"][0]["file"].endswith("c0.mp4")
    else:
        assert sorted(p.name for p in out.iterdir()) == []


FORKED_WORKER = """
import os, signal, sys, time
from videovae.runtime import stop_on_signals

with stop_on_signals(grace=0.5):
    pid = os.fork()  # (as a DataLoader worker is started)
    if pid == 0:
        signal.signal(signal.SIGTERM, lambda *a: None)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(2)
print("still running")
"""


@pytest.mark.slow
def test_a_forked_workers_signal_does_not_stop_the_parent(run_process):
    """The signal wakeup socket is shared with a forked child: a worker's SIGTERM must not be
    taken for the command's own."""
    r = run_process(code=FORKED_WORKER)
    assert r.rc == 0 and r.out.strip() == "still running", r.err[-3000:]


def test_an_interrupt_a_library_swallowed_still_stops_the_command(tmp_path, model_dir, clip,
                                                                  run_cli, monkeypatch):
    """A KeyboardInterrupt raised inside a callback or destructor is only printed: the stop is
    still seen between chunks (exit 143, temporary removed)."""
    real = files.frames_to_tensor
    calls = []

    def signal_swallowed(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            try:
                signal.raise_signal(signal.SIGTERM)
            except BaseException:  # noqa: BLE001 - what a careless library does
                pass
        return real(*a, **k)

    monkeypatch.setattr(files, "frames_to_tensor", signal_swallowed)
    monkeypatch.setattr("videovae.runtime.STOP_GRACE_S", 600.0)  # (no forced stop of pytest)
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("encode", clip[0], "--model", model_dir, "-o", out / "z.safetensors",
                "--chunk-frames", 4, "--no-progress")
    assert r.rc == 143, r.err[-3000:]
    assert r.lines[-1] == "videovae: terminated"
    assert len(calls) == 2 and list(out.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Progress counts frames processed by the model


class _Bar:
    """A tqdm stand-in recording, at each update, the model calls made so far."""
    made: list["_Bar"] = []
    calls: dict = {}

    def __init__(self, iterable=None, total=None, disable=False, **kw):
        self.iterable, self.total, self.disable, self.n, self.events = \
            iterable, total, disable, 0, []
        _Bar.made.append(self)

    def __iter__(self):  # (a bar over an iterable)
        for x in self.iterable:
            yield x
            self.update(1)

    def update(self, k=1):
        self.n += k
        self.events.append((self.n, dict(_Bar.calls)))

    def set_postfix_str(self, *a, **k):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize("command", ["encode", "decode", "reconstruct", "eval"])
def test_progress_reaches_the_total_only_when_the_model_is_done(tmp_path, model_dir, clip,
                                                                  monkeypatch, command):
    """Before: encode counted frames read (100 % before the last chunks were encoded) and eval
    counted files (0/3 until the first file ended). Now every bar counts frames the model has
    processed, eval's over all files, and moves inside each file."""
    vae = load_model(model_dir)
    vae.set_chunk_sizes(encode_frames=4, decode_latents=1)  # several chunks per clip
    _Bar.made, _Bar.calls = [], {"encode": 0, "decode": 0}
    for name in ("encode", "decode"):
        real = getattr(vae, f"_{name}_chunk")

        def counted(*a, _real=real, _name=name, **k):
            _Bar.calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(vae, f"_{name}_chunk", counted)
    if command == "decode":
        lat = tmp_path / "z.safetensors"
        files.encode_file(vae, clip[0], lat, progress=False)
        _Bar.calls.update(encode=0, decode=0)
    monkeypatch.setattr(files, "tqdm", _Bar)
    total = 11
    if command == "encode":
        files.encode_file(vae, clip[0], tmp_path / "z.safetensors")
    elif command == "decode":
        files.decode_file(vae, lat, tmp_path / "d.mp4")
    elif command == "reconstruct":
        files.reconstruct_file(vae, clip[0], tmp_path / "r.mp4")
    else:
        data = _clips(tmp_path / "data", 2, 7)
        (data / "broken.mp4").write_text("not a video")
        total = 14
        files.evaluate_files(vae, data)
    bar, = [b for b in _Bar.made if not b.disable]
    assert bar.total == total and bar.n == total, (bar.total, bar.n)
    final = dict(_Bar.calls)
    first_full = next(calls for n, calls in bar.events if n >= total)
    assert first_full == final, f"100 % at {first_full} model calls of {final}"
    assert len({n for n, _ in bar.events if 0 < n < total}) >= 2, bar.events


# ----------------------------------------------------------------------------------------------
# reconstruct = encode then decode


def test_reconstruct_equals_encode_then_decode(tmp_path, model_dir):
    """Before: reconstruct decoded the latents in other pieces than decode (the encoder's chunks
    of 5, 4, 4, ... latents split by --decode-chunk, against 4, 4, 4, ...); the float rounding
    differed, a pixel here and there rounded to another level, and x264 made that 0.5 levels
    on average, 12 at most. Now both decode the same pieces: the same pixels, the same file."""
    src = tmp_path / "src.mp4"
    write_video(src, tensor_to_frames(photo_clip(33, (64, 96), photo="astronaut")), fps=10)
    vae = load_model(model_dir)  # one instance, default chunks: 17 + 16 frames, 4 latents a step
    files.reconstruct_file(vae, src, tmp_path / "rec.mp4", progress=False)
    files.encode_file(vae, src, tmp_path / "z.safetensors", progress=False)
    files.decode_file(vae, tmp_path / "z.safetensors", tmp_path / "dec.mp4", progress=False)
    rec = VideoReader(tmp_path / "rec.mp4").read_all().astype(int)
    dec = VideoReader(tmp_path / "dec.mp4").read_all().astype(int)
    assert rec.shape == dec.shape == (33, 64, 96, 3)
    diff = np.abs(rec - dec)
    assert diff.max() <= 1, f"mean {diff.mean():.3f}, max {diff.max()} levels"


def test_latent_pieces_are_regrouped_as_decode_splits_them():
    chunks = [torch.zeros(1, 2, n, 1, 1) + i for i, n in enumerate([5, 4, 4, 1])]
    pieces = list(files._regroup(iter(chunks), 4))
    assert [p.shape[2] for p in pieces] == [4, 4, 4, 2]
    assert torch.equal(torch.cat(pieces, dim=2), torch.cat(chunks, dim=2))


# ----------------------------------------------------------------------------------------------
# A video writer that fails (a full disk): named as the user's output; nothing published


@pytest.fixture
def full_disk_ffmpeg(tmp_path, monkeypatch):
    """ffmpeg as it behaves on a full disk: it reads every frame, then fails on the trailer."""
    import imageio_ffmpeg

    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\ncat > /dev/null\necho '[out#0/mp4 @ 0x5581] Error writing "
                    "trailer: No space left on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(fake))


def test_a_failing_writer_names_the_output_and_keeps_the_old_file(tmp_path, model_dir,
                                                                   latent_file, run_cli,
                                                                   full_disk_ffmpeg):
    """Before: the error named the hidden temporary (.old.abc123.tmp.mp4)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.mp4").write_bytes(b"the user's video")
    r = run_cli("decode", latent_file, "--model", model_dir, "-o", out / "old.mp4",
                "--overwrite", "--no-progress")
    line = r.fails(re.escape(f"cannot write {out / 'old.mp4'}: no space left on device"),
                   keep=["old.mp4"])
    assert ".tmp" not in line
    assert (out / "old.mp4").read_bytes() == b"the user's video"
    assert sorted(p.name for p in out.iterdir()) == ["old.mp4"]


@pytest.mark.parametrize("failing", ["video", "metrics"])
def test_reconstruct_publishes_nothing_when_an_output_fails(tmp_path, model_dir, clip, run_cli,
                                                            monkeypatch, request, failing):
    """Before: the metrics JSON was published before the videos' writers were closed, so it
    appeared while the videos were refused. Now nothing is published unless every output is
    complete, and the error names the output that failed."""
    if failing == "video":
        request.getfixturevalue("full_disk_ffmpeg")
    else:
        real = Path.write_text

        def disk_full_for_json(self, *a, **k):
            if self.name.startswith(".rec.") and self.name.endswith(".json"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, *a, **k)

        monkeypatch.setattr(Path, "write_text", disk_full_for_json)
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("reconstruct", clip[0], "--model", model_dir, "-o", out / "rec.mp4",
                "--metrics", out / "rec.json", "--side-by-side", "--no-progress")
    named = r"rec(_side_by_side)?\.mp4" if failing == "video" else r"rec\.json"
    r.fails(f"cannot write {re.escape(str(out))}/{named}: no space left on device",
            outputs=[out / "rec.mp4", out / "rec.json", out / "rec_side_by_side.mp4"])


# ----------------------------------------------------------------------------------------------
# Slow frame rates are printed readably


def test_decode_prints_a_time_lapse_rate_readably(tmp_path, model_dir, run_cli):
    """Before: 'at 0.000 fps' for a time-lapse at one frame per hour (the file itself was
    right)."""
    src = tmp_path / "timelapse.mp4"
    write_video(src, tensor_to_frames(photo_clip(5, (32, 32))), fps=1 / 3600)
    m = ["--model", model_dir, "--no-progress"]
    run_cli("encode", src, *m, "-o", tmp_path / "z.safetensors").ok()
    r = run_cli("decode", tmp_path / "z.safetensors", *m, "-o", tmp_path / "d.mp4").ok()
    assert "at 0.000278 fps (one frame every 3600 s)" in r.out, r.out
    assert "0.000 fps" not in r.out + r.err
    assert VideoReader(tmp_path / "d.mp4").fps == pytest.approx(1 / 3600)


@pytest.mark.parametrize("rate, text", [(30000 / 1001, "29.97 fps"), (25, "25 fps"),
                                        (12.5, "12.5 fps"),
                                        ("1/3600", "0.000278 fps (one frame every 3600 s)"),
                                        (0.5, "0.5 fps (one frame every 2 s)")])
def test_fps_text(rate, text):
    assert files.fps_text(rate) == text


# ----------------------------------------------------------------------------------------------
# eval's memory: one file's streamed reconstruction, whatever the clip length or file count


def test_metrics_are_computed_one_frame_at_a_time(tmp_path, model_dir, monkeypatch):
    """Before: PSNR and SSIM were computed on a whole decoded chunk (16 frames by default): at
    1080p that is a dozen float maps of 16 frames, gigabytes. Now one frame at a time."""
    seen = []
    real = files.ssim_per_frame

    def ssim(a, b):
        seen.append(a.shape[2])
        return real(a, b)

    monkeypatch.setattr(files, "ssim_per_frame", ssim)
    data = _clips(tmp_path / "data", 1, 33)
    report = files.evaluate_files(load_model(model_dir), data, progress=False)
    assert report["frames"] == 33 and len(seen) == 33 and set(seen) == {1}, seen


MEASURE = """
import re, sys
from videovae.cli import main
rc = main(sys.argv[1:])
hwm = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
print("HWM_KB", hwm)
sys.exit(rc)
"""


@pytest.mark.slow
def test_eval_memory_does_not_grow_with_clip_length_or_file_count(tmp_path, model_dir,
                                                                  run_process):
    """Peak resident memory of eval: one 33-frame clip against three clips 3x longer (chunks of
    the same shapes: 17 + 16 + ... frames). Measured: within 1-2 %."""
    short = _clips(tmp_path / "short", 1, 33, (64, 64))
    long = _clips(tmp_path / "long", 3, 97, (64, 64))
    peaks = {}
    for name, data in (("short", short), ("long", long)):
        r = run_process("eval", "--model", model_dir, "--data", data, "--no-progress",
                        code=MEASURE).ok()
        peaks[name] = int(r.out.split("HWM_KB")[-1]) / 1024
    assert peaks["long"] <= peaks["short"] * 1.10 + 20, peaks

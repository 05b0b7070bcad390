"""Reliability probe: bad inputs and operator faults against the CLI, the Python API and the
trainer, as a user (and an unlucky operator) would meet them.

Each case runs the real thing (mostly `python -m videovae ...` in a subprocess, with tiny models
and inputs made here) and checks the exit code, the error line and what is left on disk. The
result is a table of id, category, case, expected, observed and PASS/FAIL, printed and written as
Markdown and JSON. The exit status is non-zero when any case fails.

    python tools/probe_reliability.py -o probe_reliability   # -> probe_reliability.md / .json
    python tools/probe_reliability.py --only 13,64-66 --keep  # a few cases, keep the work dir

Runs in a few minutes on a CPU (run it with `nice` and OMP_NUM_THREADS=1 on a busy machine).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's videovae, also in the subprocesses (PYTHONPATH)

PY = sys.executable
TRAIN_CONFIG = ROOT / "configs" / "train" / "tiny_cpu.yaml"
TINY = {"block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 4,
        "latent_channels": 4}
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
# what FFmpeg and decord print straight to stderr from C ("[mov,mp4,... @ 0x...] moov atom not
# found", "[14:51:15] /github/.../video_reader.cc:83: ERROR opening ..."): noted, not failed
# a tqdm progress bar (training shows one; it is drawn with \r, so log lines can follow it)
PROGRESS = re.compile(r"^[\w ]*:\s*\d+%\|[^|]*\|\s*\d+/\d+ \[[^\]]*\]")
NATIVE_NOISE = re.compile(r"^\[[^\]]*(@ 0x[0-9a-f]+|\d\d:\d\d:\d\d)\] ")


# ----------------------------------------------------------------------------------------------
# Cases and the runner


class Fail(Exception):
    """A case's expectation did not hold; the message is what was observed."""


def check(ok, observed: str) -> None:
    if not ok:
        raise Fail(observed)


@dataclass
class Case:
    id: str
    category: str
    case: str
    expected: str
    fn: Callable
    observed: str = ""
    passed: bool = False
    seconds: float = 0.0


CASES: list[Case] = []


def case(category: str, description: str, expected: str):
    def deco(fn):
        CASES.append(Case(f"{len(CASES) + 1:02d}", category, description, expected, fn))
        return fn
    return deco


@dataclass
class Result:
    """A finished command: exit code, output and wall time."""
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        """stderr lines with progress bars taken out."""
        out = []
        for ln in self.err.splitlines():  # (splits at \r too)
            while PROGRESS.match(ln):
                ln = PROGRESS.sub("", ln, count=1)
            if ln.strip():  # (a cleared bar leaves spaces before the next line)
                out.append(ln.strip())
        return out

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.lines if re.match(r"^videovae [\w-]+: error: ", ln)]

    @property
    def other_lines(self) -> list[str]:
        """stderr lines that are neither log records, native decoder noise nor the error."""
        return [ln for ln in self.lines if not LOG_LINE.match(ln)
                and not NATIVE_NOISE.match(ln) and ln not in self.error_lines]

    @property
    def noise(self) -> str:
        n = sum(bool(NATIVE_NOISE.match(ln)) for ln in self.lines)
        return f" [+{n} line(s) of FFmpeg/decord noise on stderr before it]" if n else ""


class Ctx:
    """The work folder, the environment of the subprocesses, shared inputs (made on demand)."""

    def __init__(self, work: Path):
        self.w = work
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                    "TOKENIZERS_PARALLELISM": "false"}
        self._n = 0

    def short(self, text: str) -> str:
        return text.replace(str(self.w), "$W").strip()

    def fresh(self, name: str) -> Path:
        """A new empty folder for one case."""
        self._n += 1
        d = self.w / f"{self._n:02d}_{name}"
        d.mkdir()
        return d

    # -- commands
    def cli(self, *args, prefix=(), timeout=300, **kw) -> Result:
        cmd = [*prefix, PY, "-m", "videovae", *map(str, args)]
        start = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=self.w,
                           timeout=timeout, check=False, **kw)
        return Result(p.returncode, p.stdout, p.stderr, time.perf_counter() - start)

    def popen(self, *args, code: str | None = None, **kw) -> subprocess.Popen:
        cmd = [PY, "-c", code, *map(str, args)] if code else \
            [PY, "-m", "videovae", *map(str, args)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env, cwd=self.w, **kw)

    def python(self, code: str, timeout=300) -> Result:
        start = time.perf_counter()
        p = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=self.env,
                           cwd=self.w, timeout=timeout, check=False)
        return Result(p.returncode, p.stdout, p.stderr, time.perf_counter() - start)

    def m(self, model=None) -> list:
        return ["--model", model or self.model, "--no-progress"]

    # -- shared inputs
    @functools.cached_property
    def model(self) -> Path:
        return save_tiny_model(self.w / "model", seed=0)

    @functools.cached_property
    def vae(self):
        from videovae import load_model

        return load_model(self.model)

    @functools.cached_property
    def clip(self) -> Path:
        """9 frames, 32x32, 12.5 fps."""
        return video(self.w / "clip.mp4", 9, (32, 32), fps=12.5)

    @functools.cached_property
    def lat(self) -> Path:
        from videovae.files import encode_file

        path = self.w / "clip.safetensors"
        encode_file(self.vae, self.clip, path, progress=False)
        return path

    @functools.cached_property
    def long_clip(self) -> Path:
        """400 frames of 64x64: long enough to be interrupted."""
        return video(self.w / "long.mp4", 400, (64, 64))

    @functools.cached_property
    def long_lat(self) -> Path:
        from videovae.files import encode_file

        path = self.w / "long.safetensors"
        encode_file(self.vae, self.long_clip, path, progress=False)
        return path

    @functools.cached_property
    def huge(self) -> Path:
        """An mp4 that declares 8192x8192 frames (one flat frame: 200 KB on disk)."""
        import imageio_ffmpeg

        path = self.w / "huge.mp4"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
                        "-i", "color=c=gray:s=8192x8192:d=1:r=1", "-frames:v", "1", "-c:v",
                        "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
                       check=True, timeout=120)
        return path

    @functools.cached_property
    def eval_clips(self) -> list[Path]:
        d = self.w / "eval_clips"
        d.mkdir()
        return [video(d / f"c{i}.mp4", 5, (32, 32), speed=1.0 + i) for i in range(2)]


def once(fn):
    """Run `fn(ctx)` once for the cases that share it; its exception, too, is kept."""
    memo = {}

    @functools.wraps(fn)
    def wrapper(ctx):
        if fn not in memo:
            try:
                memo[fn] = (fn(ctx), None)
            except Exception as e:  # noqa: BLE001
                memo[fn] = (None, e)
        value, error = memo[fn]
        if error is not None:
            raise error
        return value
    return wrapper


def run_cases(ctx: Ctx, cases: list[Case]) -> None:
    for c in cases:
        start = time.perf_counter()
        try:
            c.observed = ctx.short(c.fn(ctx) or "as expected")
            c.passed = True
        except Fail as e:
            c.observed = ctx.short(str(e))
        except Exception as e:  # noqa: BLE001 - a probe crash is a failed case, not a stop
            tb = traceback.format_exc().strip().splitlines()
            where = tb[-3].strip() if len(tb) >= 3 else ""
            c.observed = ctx.short(f"probe error: {type(e).__name__}: {e} ({where})")
        c.seconds = time.perf_counter() - start
        print(f"{c.id} {'PASS' if c.passed else 'FAIL'} {c.seconds:6.1f}s  {c.case}: "
              f"{c.observed[:160]}", flush=True)


# ----------------------------------------------------------------------------------------------
# Inputs


def api_error(fn, *args, none: str = "no error") -> str:
    """Call `fn(*args)`, which must raise: 'ExceptionType: first line of the message'."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - any error type is an answer the case then checks
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    raise Fail(none)


def save_tiny_image_vae(path: Path, widths=(8, 16, 16, 16)) -> Path:
    """A tiny SD-layout image VAE (diffusers folder), seeded."""
    import torch
    from diffusers import AutoencoderKL

    from videovae.convert import sd_vae_config

    torch.manual_seed(0)
    AutoencoderKL(**sd_vae_config(widths, 1, norm_num_groups=4)).save_pretrained(path)
    return path


def save_tiny_model(path: Path, seed=0, **kw) -> Path:
    import torch

    from videovae.models.registry import family_class

    torch.manual_seed(seed)
    family_class("cv")(**{**TINY, **kw}).eval().save_pretrained(path)
    return path


def video(path: Path, frames: int, size, fps=10.0, speed=2.0) -> Path:
    from videovae.data.synthetic import load_photo, pan_zoom_clip
    from videovae.io.video import write_video

    write_video(path, pan_zoom_clip(load_photo("astronaut"), frames, size, speed=speed), fps=fps)
    return path


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG header declaring a huge image, with almost no pixel data."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def rewrite_latents(src: Path, dst: Path, latents=None, **meta_changes) -> Path:
    """A copy of a latent file with other latents and/or metadata fields."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, z = dict(f.metadata()), f.get_tensor("latents")
    meta.update({k: str(v) for k, v in meta_changes.items()})
    save_file({"latents": z if latents is None else latents(z.clone())}, str(dst), metadata=meta)
    return dst


def frames_of(path: Path):
    from videovae.io.video import VideoReader

    r = VideoReader(path)
    return r.num_frames, r.height, r.width


# ----------------------------------------------------------------------------------------------
# Checks shared by the cases


def leftovers(d: Path, keep=()) -> list[str]:
    """Names in `d` other than `keep` (temporaries, partial outputs)."""
    return sorted(p.name for p in d.iterdir() if p.name not in keep)


def expect_error(res: Result, *patterns: str, outputs=(), rc=1, keep=()) -> str:
    """rc, one readable error line (log records aside) matching every regex, no traceback, no
    output and nothing else left beside each output."""
    first = res.error_lines[0] if res.error_lines else res.err.strip()[-300:]
    check(res.rc == rc, f"rc={res.rc} (expected {rc}): {first}")
    check("Traceback" not in res.err, f"traceback: {res.err.strip()[-300:]}")
    check(len(res.error_lines) == 1, f"{len(res.error_lines)} error lines: {res.err[-300:]}")
    check(not res.other_lines, f"extra stderr lines: {res.other_lines[:3]}")
    line = res.error_lines[0]
    for pat in patterns:
        check(re.search(pat, line, re.IGNORECASE), f"error line lacks /{pat}/: {line}")
    for out in map(Path, outputs):
        check(not out.exists(), f"output left behind: {out}; {line}")
        if out.parent.is_dir():
            left = leftovers(out.parent, keep)
            check(not left, f"left beside the output: {left}; {line}")
    return f"rc={res.rc}: {line}{res.noise}"


def expect_ok(res: Result) -> None:
    check(res.rc == 0, f"rc={res.rc}: {res.err.strip()[-300:]}")


# ----------------------------------------------------------------------------------------------
# Videos and images as input


@case("input", "encode a missing video", "rc 1, 'video not found' naming it, no output")
def _missing_video(ctx):
    d = ctx.fresh("missing")
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", d / "nope.mp4", *ctx.m(), "-o", out),
                        "video not found", "nope.mp4", outputs=[out])


@case("input", "encode an empty (0-byte) .mp4", "rc 1, 'cannot read' naming it, no output")
def _empty_video(ctx):
    d = ctx.fresh("empty")
    (d / "empty.mp4").write_bytes(b"")
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", d / "empty.mp4", *ctx.m(), "-o", out),
                        "cannot read|no frames|no video", "empty.mp4", outputs=[out],
                        keep=["empty.mp4"])


@case("input", "encode a text file renamed .mp4", "rc 1, 'cannot read' naming it, no output")
def _text_video(ctx):
    d = ctx.fresh("text")
    (d / "notes.mp4").write_text("this is not a video\n" * 20)
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", d / "notes.mp4", *ctx.m(), "-o", out),
                        "cannot read", "notes.mp4", outputs=[out], keep=["notes.mp4"])


@case("input", "reconstruct a truncated mp4 (first half of the file)",
      "rc 1, 'cannot read'/'truncated' naming it, no output")
def _truncated_video(ctx):
    d = ctx.fresh("truncated")
    data = ctx.clip.read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])
    out = d / "out.mp4"
    return expect_error(ctx.cli("reconstruct", d / "cut.mp4", *ctx.m(), "-o", out),
                        "cannot read|truncated|corrupt", "cut.mp4", outputs=[out],
                        keep=["cut.mp4"])


@case("input", "encode an mp4 container with no frames", "rc 1, 'no video stream' / 'no frames'")
def _no_frames(ctx):
    import imageio_ffmpeg

    d = ctx.fresh("noframes")
    gen = imageio_ffmpeg.write_frames(str(d / "hollow.mp4"), (32, 32), fps=10,
                                      macro_block_size=1, ffmpeg_log_level="quiet")
    gen.send(None)
    gen.close()
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", d / "hollow.mp4", *ctx.m(), "-o", out),
                        "no video stream|no frames|cannot read", "hollow.mp4", outputs=[out],
                        keep=["hollow.mp4"])


@case("input", "a directory given as the video", "rc 1, 'is a directory', no output")
def _dir_video(ctx):
    d = ctx.fresh("dirvideo")
    (d / "clip.mp4").mkdir()
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", d / "clip.mp4", *ctx.m(), "-o", out),
                        "is a directory", outputs=[out], keep=["clip.mp4"])


@case("input", "PNG 'bomb': 500 bytes declaring 100000x100000 pixels",
      "rc 1 within 30 s, one line naming the file, nothing decoded or written")
def _png_bomb(ctx):
    d = ctx.fresh("bomb")
    (d / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    out = d / "z.safetensors"
    res = ctx.cli("encode", d / "bomb.png", *ctx.m(), "-o", out)
    obs = expect_error(res, "bomb.png", "cannot read|exceed|too large|limit", outputs=[out],
                       keep=["bomb.png"])
    check(res.seconds < 30, f"took {res.seconds:.1f}s: {obs}")
    return f"{obs} ({res.seconds:.1f}s)"


@case("input", "odd size 37x53 (7 frames): encode then decode",
      "rc 0 both; decoded video is 7 frames of 37x53")
def _odd_size(ctx):
    d = ctx.fresh("odd")
    src = video(d / "odd.mp4", 7, (37, 53))
    check(frames_of(src) == (7, 37, 53), f"input is {frames_of(src)}")
    expect_ok(ctx.cli("encode", src, *ctx.m(), "-o", d / "odd.safetensors"))
    expect_ok(ctx.cli("decode", d / "odd.safetensors", *ctx.m(), "-o", d / "dec.mp4"))
    got = frames_of(d / "dec.mp4")
    check(got == (7, 37, 53), f"decoded (frames, h, w) = {got}")
    return f"rc 0, 0; decoded (frames, h, w) = {got}"


@case("input", "odd size 37x53: reconstruct with --metrics",
      "rc 0; output 7x37x53; metrics JSON with 7 per-frame PSNRs")
def _odd_reconstruct(ctx):
    d = ctx.fresh("odd_rec")
    src = video(d / "odd.mp4", 7, (37, 53))
    res = ctx.cli("reconstruct", src, *ctx.m(), "-o", d / "rec.mp4", "--metrics", d / "m.json")
    expect_ok(res)
    got = frames_of(d / "rec.mp4")
    m = json.loads((d / "m.json").read_text())
    check(got == (7, 37, 53) and len(m["psnr_per_frame"]) == 7, f"{got}, metrics {m}")
    return f"rc 0; {got}; PSNR {m['psnr_mean']:.2f} dB over {len(m['psnr_per_frame'])} frames"


@case("input", "1-frame video: encode then decode", "rc 0; latents T'=1; decoded 1 frame")
def _one_frame(ctx):
    from videovae.io.latent_file import load_latents

    d = ctx.fresh("one_frame")
    src = video(d / "one.mp4", 1, (24, 40))
    expect_ok(ctx.cli("encode", src, *ctx.m(), "-o", d / "z.safetensors"))
    shape = tuple(load_latents(d / "z.safetensors")[0].shape)
    expect_ok(ctx.cli("decode", d / "z.safetensors", *ctx.m(), "-o", d / "dec.mp4"))
    got = frames_of(d / "dec.mp4")
    check(shape == (4, 1, 3, 5) and got == (1, 24, 40), f"latents {shape}, decoded {got}")
    return f"latents {shape}, decoded (frames, h, w) = {got}"


@case("input", "grayscale video (FFV1 .mkv, pix_fmt gray): reconstruct",
      "rc 0; reconstruction has the input's frames and size")
def _gray_video(ctx):
    import av
    import imageio_ffmpeg

    d = ctx.fresh("gray")
    src = d / "gray.mkv"  # (this FFmpeg's libx264 has no gray; FFV1 stores it as such)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=s=48x32:d=1:r=9", "-c:v", "ffv1", "-pix_fmt", "gray", str(src)],
                   check=True, timeout=60)
    with av.open(str(src)) as c:
        pix = c.streams.video[0].codec_context.pix_fmt
    check(pix == "gray", f"could not make a gray video (pix_fmt {pix})")
    expect_ok(ctx.cli("reconstruct", src, *ctx.m(), "-o", d / "rec.mp4"))
    got = frames_of(d / "rec.mp4")
    check(got == (9, 32, 48), f"reconstruction (frames, h, w) = {got}")
    return f"input pix_fmt gray; rc 0; reconstruction {got}"


@case("input", "grayscale PNG (mode L) and RGBA PNG: encode", "rc 0; latents (4, 1, 3, 5) each")
def _gray_png(ctx):
    import numpy as np
    from PIL import Image

    from videovae.io.latent_file import load_latents

    d = ctx.fresh("gray_png")
    pix = (np.arange(24 * 40) % 251).astype(np.uint8).reshape(24, 40)
    Image.fromarray(pix, "L").save(d / "l.png")
    Image.fromarray(np.stack([pix] * 4, -1), "RGBA").save(d / "rgba.png")
    shapes = []
    for name in ("l", "rgba"):
        expect_ok(ctx.cli("encode", d / f"{name}.png", *ctx.m(), "-o", d / f"{name}.safetensors"))
        shapes.append(tuple(load_latents(d / f"{name}.safetensors")[0].shape))
    check(shapes == [(4, 1, 3, 5)] * 2, f"latent shapes {shapes}")
    return f"rc 0, 0; latents {shapes[0]}, {shapes[1]}"


@case("input", "an mp4 declaring 8192x8192 frames (200 KB on disk): encode",
      "rc 1 up front (< 60 s): size error naming 8192x8192 and --tile; no output")
def _huge_video(ctx):
    d = ctx.fresh("huge")
    out = d / "z.safetensors"
    res = ctx.cli("encode", ctx.huge, *ctx.m(), "-o", out)
    obs = expect_error(res, "8192x8192", r"--tile \d+", outputs=[out])
    check(res.seconds < 60, f"took {res.seconds:.0f}s: {obs}")
    return f"{obs} ({res.seconds:.1f}s)"


# ----------------------------------------------------------------------------------------------
# Latent files


@case("latents", "decode latents made by another model (config hash differs)",
      "rc 1, 'different model', no output")
def _other_model_latents(ctx):
    d = ctx.fresh("other_model")
    other = save_tiny_model(d / "other", seed=1, conv3d_layers="all")
    out = d / "out.mp4"
    return expect_error(ctx.cli("decode", ctx.lat, *ctx.m(other), "-o", out), "different model",
                        outputs=[out], keep=["other"])


@case("latents", "decode a safetensors file without latent metadata",
      "rc 1, 'lacks latent metadata' naming the file, no output")
def _bare_latents(ctx):
    import torch
    from safetensors.torch import save_file

    d = ctx.fresh("bare")
    save_file({"latents": torch.zeros(4, 2, 4, 4)}, str(d / "bare.safetensors"))
    out = d / "out.mp4"
    return expect_error(ctx.cli("decode", d / "bare.safetensors", *ctx.m(), "-o", out),
                        "bare.safetensors", "lacks latent metadata", outputs=[out],
                        keep=["bare.safetensors"])


@case("latents", "decode a truncated latent file", "rc 1, 'cannot read' naming it, no output")
def _truncated_latents(ctx):
    d = ctx.fresh("trunc_lat")
    data = ctx.lat.read_bytes()
    (d / "cut.safetensors").write_bytes(data[: len(data) // 2])
    out = d / "out.mp4"
    return expect_error(ctx.cli("decode", d / "cut.safetensors", *ctx.m(), "-o", out),
                        "cut.safetensors", "cannot read", outputs=[out],
                        keep=["cut.safetensors"])


def _poisoned(ctx, name, value):
    d = ctx.fresh(name)

    def poison(z):
        z[0, 1, 2, 3] = value
        return z

    bad = rewrite_latents(ctx.lat, d / f"{name}.safetensors", latents=poison)
    out = d / "out.mp4"
    return d, bad, out, ctx.cli("decode", bad, *ctx.m(), "-o", out)


@case("latents", "decode latents holding one NaN",
      "rc != 0, one line naming the file and the NaN, no output file (was: rc 0, black video)")
def _nan_latents(ctx):
    _, bad, out, res = _poisoned(ctx, "nan", float("nan"))
    return expect_error(res, "nan.safetensors", "1 nan", outputs=[out], keep=[bad.name])


@case("latents", "decode latents holding one +Inf",
      "rc != 0, one line naming the file and the Inf, no output file (was: rc 0, black video)")
def _inf_latents(ctx):
    _, bad, out, res = _poisoned(ctx, "inf", float("inf"))
    return expect_error(res, "inf.safetensors", "1 infinite", outputs=[out], keep=[bad.name])


def _bad_meta(ctx, name, **meta):
    d = ctx.fresh(name)
    bad = rewrite_latents(ctx.lat, d / f"{name}.safetensors", **meta)
    out = d / "out.mp4"
    return bad, out, ctx.cli("decode", bad, *ctx.m(), "-o", out)


@case("latents", "decode: metadata height=100000",
      "rc 1, one line naming the file and height=100000 (was: misleading message)")
def _meta_height(ctx):
    bad, out, res = _bad_meta(ctx, "height", height=100000)
    return expect_error(res, re.escape(bad.name), "height=100000", outputs=[out], keep=[bad.name])


@case("latents", "decode: metadata fps=0", "rc 1, one line naming the file and fps=0 "
      "(was: accepted)")
def _meta_fps(ctx):
    bad, out, res = _bad_meta(ctx, "fps0", fps=0)
    return expect_error(res, re.escape(bad.name), "fps=0", "positive", outputs=[out],
                        keep=[bad.name])


@case("latents", "decode: metadata num_frames='abc'",
      "rc 1, one line naming the file and num_frames (was: bare int() message)")
def _meta_frames(ctx):
    bad, out, res = _bad_meta(ctx, "frames_abc", num_frames="abc")
    return expect_error(res, re.escape(bad.name), "num_frames='abc'", "not an integer",
                        outputs=[out], keep=[bad.name])


@case("latents", "decode a missing latent file", "rc 1, 'latent file not found', no output")
def _missing_latents(ctx):
    d = ctx.fresh("missing_lat")
    out = d / "out.mp4"
    return expect_error(ctx.cli("decode", d / "gone.safetensors", *ctx.m(), "-o", out),
                        "latent file not found", "gone.safetensors", outputs=[out])


@case("latents", "decode -o x.safetensors (latent suffix as video output)",
      "rc 1, one line: .safetensors is not a video format (was: 'Broken pipe' + ffmpeg noise)")
def _decode_suffix(ctx):
    d = ctx.fresh("decode_suffix")
    out = d / "x.safetensors"
    return expect_error(ctx.cli("decode", ctx.lat, *ctx.m(), "-o", out),
                        r"\.safetensors is not a video format", r"\.mp4", outputs=[out])


@case("latents", "encode -o z.mp4 (video suffix as latent output)",
      "rc 1, one line: .mp4 is not a latent file")
def _encode_suffix(ctx):
    d = ctx.fresh("encode_suffix")
    out = d / "z.mp4"
    return expect_error(ctx.cli("encode", ctx.clip, *ctx.m(), "-o", out),
                        r"\.mp4 is not a latent file", outputs=[out])


# ----------------------------------------------------------------------------------------------
# Model folders and checkpoints


def _model_copy(ctx, name) -> Path:
    d = ctx.fresh(name)
    shutil.copytree(ctx.model, d / "model")
    return d


@case("model", "model folder without config.json", "rc 1, one line naming the folder")
def _no_config(ctx):
    d = _model_copy(ctx, "no_config")
    (d / "model" / "config.json").unlink()
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", ctx.clip, *ctx.m(d / "model"), "-o", out),
                        re.escape(str(d / "model")), "config.json", outputs=[out],
                        keep=["model"])


@case("model", "invalid config.json", "rc 1, one line naming the path of config.json "
      "(was: JSON error without path)")
def _bad_config(ctx):
    d = _model_copy(ctx, "bad_config")
    (d / "model" / "config.json").write_text('{"block_out_channels": [8, 16,')
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", ctx.clip, *ctx.m(d / "model"), "-o", out),
                        re.escape(str(d / "model" / "config.json")), "not valid json",
                        outputs=[out], keep=["model"])


@case("model", "config.json widths disagree with the weights",
      "rc 1, 'cannot load the model at' naming the folder")
def _wrong_widths(ctx):
    d = _model_copy(ctx, "wrong_widths")
    cfg_path = d / "model" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["block_out_channels"] = [8, 16, 16, 32]
    cfg_path.write_text(json.dumps(cfg))
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", ctx.clip, *ctx.m(d / "model"), "-o", out),
                        "cannot load the model at", re.escape(str(d / "model")), outputs=[out],
                        keep=["model"])


@case("model", "--model names a folder that does not exist", "rc 1, one line naming it")
def _missing_model(ctx):
    d = ctx.fresh("missing_model")
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", ctx.clip, *ctx.m(d / "no_model"), "-o", out),
                        "no model", re.escape(str(d / "no_model")), outputs=[out])


@case("model", "truncated weights file", "rc 1, 'cannot load the model at' naming the folder")
def _truncated_weights(ctx):
    d = _model_copy(ctx, "trunc_weights")
    w = d / "model" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", ctx.clip, *ctx.m(d / "model"), "-o", out),
                        "cannot load the model at", outputs=[out], keep=["model"])


@case("model", "weights holding a NaN (a diverged run's model)",
      "rc 1, 'non-finite weights' naming the folder")
def _nan_weights(ctx):
    from safetensors.torch import load_file, save_file

    d = _model_copy(ctx, "nan_weights")
    w = d / "model" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(w))
    key = min(sd)
    sd[key].view(-1)[0] = float("nan")
    save_file(sd, str(w))
    out = d / "z.safetensors"
    return expect_error(ctx.cli("encode", ctx.clip, *ctx.m(d / "model"), "-o", out),
                        "non-finite weights", re.escape(str(d / "model")), outputs=[out],
                        keep=["model"])


def evil_ckpt(path: Path, marker: Path) -> Path:
    """A torch checkpoint whose unpickling would create `marker` (a __reduce__ payload)."""
    import torch

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('payload ran')",))

    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1), "x": Payload()}}, path)
    return path


def _payload_is_live(ctx, d: Path) -> None:
    """Control: the same kind of file does run its payload when unpickled unsafely, so the
    marker checks below can fail."""
    marker = d / "control_marker"
    ckpt = evil_ckpt(d / "control.ckpt", marker)
    res = ctx.python(f"import torch; torch.load({str(ckpt)!r}, weights_only=False)")
    check(marker.exists(), f"control payload did not run (rc={res.rc}); the probe is broken")
    marker.unlink()
    ckpt.unlink()


@case("model", "malicious pickle .ckpt (payload writes a marker file) given to `inflate`",
      "rc 1, one line naming the file; marker NOT created; no output folder")
def _evil_inflate(ctx):
    d = ctx.fresh("evil_cli")
    _payload_is_live(ctx, d)
    ckpt = evil_ckpt(d / "vae.ckpt", d / "PWNED")
    out = d / "video_vae"
    res = ctx.cli("inflate", "--image-vae", ckpt, "-o", out)
    obs = expect_error(res, "vae.ckpt", outputs=[out], keep=["vae.ckpt"])
    return f"marker absent; {obs}"


@case("model", "malicious pickle .ckpt via VideoVAE.from_image_vae (API)",
      "raises an error naming the file; marker NOT created")
def _evil_api(ctx):
    from videovae import VideoVAE

    d = ctx.fresh("evil_api")
    ckpt = evil_ckpt(d / "vae.ckpt", d / "PWNED")
    msg = api_error(VideoVAE.from_image_vae, ckpt, none="loaded without an error")
    check(not (d / "PWNED").exists(), f"PAYLOAD RAN; {msg}")
    check("vae.ckpt" in msg, f"error does not name the file: {msg}")
    return f"marker absent; {msg[:200]}"


@case("model", "malicious pickle .ckpt as train.init_from_image_vae",
      "rc 1, one line naming the file; marker NOT created; no run output")
def _evil_train(ctx):
    d = ctx.fresh("evil_train")
    ckpt = evil_ckpt(d / "vae.ckpt", d / "PWNED")
    res = ctx.cli(*train_args(d / "run", 2, f"train.init_from_image_vae={ckpt}", "model={}"))
    obs = expect_error(res, "vae.ckpt", outputs=[d / "PWNED"], keep=["vae.ckpt", "run"])
    check(not (d / "run" / "final").exists(), "a final model was written")
    return f"marker absent; {obs}"


@case("model", "VideoVAE.from_pretrained of a missing local folder",
      "error naming the folder in < 3 s (was: ~23 s of hub retries)")
def _from_pretrained_missing(ctx):
    from videovae import VideoVAE

    start = time.perf_counter()
    msg = api_error(VideoVAE.from_pretrained, "nope_dir")
    seconds = time.perf_counter() - start
    check(seconds < 3 and "nope_dir" in msg, f"{seconds:.1f}s: {msg}")
    return f"{seconds:.2f}s: {msg}"


@case("model", "videovae.load_model of a missing local folder",
      "error naming the folder in < 3 s")
def _load_model_missing(ctx):
    from videovae import load_model

    path = ctx.w / "runs" / "nope"
    start = time.perf_counter()
    msg = api_error(load_model, path)
    seconds = time.perf_counter() - start
    check(seconds < 3 and str(path) in msg, f"{seconds:.1f}s: {msg}")
    return f"{seconds:.2f}s: {msg}"


@case("model", "inflate a tiny 3-level image VAE without temporal_downsample",
      "rc 0; the log states the derived temporal_downsample; config holds it")
def _inflate_three_levels(ctx):
    d = ctx.fresh("inflate3")
    save_tiny_image_vae(d / "image_vae", (8, 16, 16))
    res = ctx.cli("inflate", "--image-vae", d / "image_vae", "-o", d / "video_vae")
    expect_ok(res)
    logged = [ln for ln in res.err.splitlines() if "temporal_downsample" in ln]
    cfg = json.loads((d / "video_vae" / "config.json").read_text())
    check(logged and "3-level" in logged[0], f"no log of the derived choice: {res.err[-300:]}")
    td = cfg.get("temporal_downsample")
    check(td is not None and len(td) == 2, f"config temporal_downsample={td}")
    return f"rc 0; log: {logged[0].split(': ', 1)[-1]}; config {td}"


# ----------------------------------------------------------------------------------------------
# Outputs


@case("output", "output folder is read-only",
      "rc 1, 'not writable' naming the folder, nothing written")
def _readonly_dir(ctx):
    d = ctx.fresh("readonly")
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    # root ignores mode bits: run the command without the capability that lets it do so
    prefix = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
              if os.geteuid() == 0 else [])
    try:
        res = ctx.cli("encode", ctx.clip, *ctx.m(), "-o", ro / "z.safetensors", prefix=prefix)
        obs = expect_error(res, "not writable", re.escape(str(ro)), outputs=[ro / "z.safetensors"])
    finally:
        ro.chmod(0o700)
    return obs + (" (as root without CAP_DAC_OVERRIDE)" if prefix else "")


@case("output", "output folder does not exist", "rc 1, 'does not exist', nothing created")
def _missing_out_dir(ctx):
    d = ctx.fresh("no_out_dir")
    res = ctx.cli("encode", ctx.clip, *ctx.m(), "-o", d / "sub" / "z.safetensors")
    obs = expect_error(res, "does not exist", re.escape(str(d / "sub")))
    check(leftovers(d) == [], f"created: {leftovers(d)}")
    return obs


@case("output", "output exists, no --overwrite", "rc 1, 'already exists', old file intact")
def _exists_no_overwrite(ctx):
    d = ctx.fresh("exists")
    out = d / "out.mp4"
    out.write_bytes(b"my precious video")
    res = ctx.cli("decode", ctx.lat, *ctx.m(), "-o", out)
    check(out.read_bytes() == b"my precious video", "old output changed")
    check(leftovers(d) == ["out.mp4"], f"left: {leftovers(d)}")
    res_line = res.error_lines[0] if res.error_lines else res.err[-200:]
    check(res.rc == 1 and re.search("already exists", res_line), f"rc={res.rc}: {res_line}")
    return f"rc=1: {res_line}; old file intact"


@case("output", "output exists, with --overwrite", "rc 0; replaced by a valid 9-frame video")
def _exists_overwrite(ctx):
    d = ctx.fresh("overwrite")
    out = d / "out.mp4"
    out.write_bytes(b"old")
    expect_ok(ctx.cli("decode", ctx.lat, *ctx.m(), "-o", out, "--overwrite"))
    got = frames_of(out)
    check(got == (9, 32, 32) and leftovers(d) == ["out.mp4"], f"{got}, {leftovers(d)}")
    return f"rc 0; {got}"


@case("output", "output path is an existing folder", "rc 1, 'is a folder', folder untouched")
def _output_is_dir(ctx):
    d = ctx.fresh("out_is_dir")
    (d / "z.safetensors").mkdir()
    (d / "z.safetensors" / "keep.txt").write_text("keep")
    res = ctx.cli("encode", ctx.clip, *ctx.m(), "-o", d / "z.safetensors")
    obs = expect_error(res, "is a folder")
    check((d / "z.safetensors" / "keep.txt").read_text() == "keep", "folder content changed")
    return obs


@case("output", "two encodes started together to the same new output",
      "exactly one rc 0, the other rc 1 'already exists'; the file is a whole latent file; "
      "no temp left (was: both rc 0, one result lost)")
def _two_writers(ctx):
    from videovae.io.latent_file import load_latents

    d = ctx.fresh("two_writers")
    out = d / "z.safetensors"
    procs = [ctx.popen("encode", ctx.clip, *ctx.m(), "-o", out, "--chunk-frames", "4")
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    rcs = sorted(rc for rc, _ in results)
    loser = [err for rc, err in results if rc != 0]
    line = next((ln for ln in (loser[0] if loser else "").splitlines() if ": error: " in ln), "")
    check(rcs == [0, 1], f"exit codes {rcs}; {line}")
    check("already exists" in line, f"loser's error: {line or loser}")
    _, meta = load_latents(out)
    check(meta["num_frames"] == 9 and leftovers(d) == ["z.safetensors"],
          f"{meta['num_frames']} frames, left {leftovers(d)}")
    return f"exit codes {rcs}; loser: {line}"


def _umask_027():  # (run in the child before exec)
    os.umask(0o027)


@case("output", "umask 027: modes of an encoded file", "file mode 0640 (was: 0600 always)")
def _umask_file(ctx):
    d = ctx.fresh("umask_file")
    out = d / "z.safetensors"
    expect_ok(ctx.cli("encode", ctx.clip, *ctx.m(), "-o", out, preexec_fn=_umask_027))
    mode = out.stat().st_mode & 0o777
    check(mode == 0o640, f"mode {oct(mode)}")
    return f"mode {oct(mode)}"


@case("output", "umask 027: modes of an inflated model folder",
      "folder 0750, config.json 0640 (was: 0700 / 0600)")
def _umask_dir(ctx):
    d = ctx.fresh("umask_dir")
    save_tiny_image_vae(d / "image_vae")
    out = d / "video_vae"
    expect_ok(ctx.cli("inflate", "--image-vae", d / "image_vae", "-o", out,
                      preexec_fn=_umask_027))
    modes = (out.stat().st_mode & 0o777, (out / "config.json").stat().st_mode & 0o777)
    check(modes == (0o750, 0o640), f"modes {tuple(map(oct, modes))}")
    return f"folder {oct(modes[0])}, config.json {oct(modes[1])}"


# ----------------------------------------------------------------------------------------------
# Signals


def _interrupt(ctx, args, out: Path, sig, old: bytes | None):
    """Start a command, wait for its temporary beside `out`, send `sig`; the command's rc, its
    last stderr line and what is left in the folder."""
    d = out.parent
    if old is not None:
        out.write_bytes(old)
    proc = ctx.popen(*args, "-o", out, *(["--overwrite"] if old is not None else []))
    deadline = time.time() + 180
    temp = []
    while time.time() < deadline and proc.poll() is None:
        temp = [p.name for p in d.iterdir() if p.name.startswith(f".{out.stem}.")]
        if temp:
            break
        time.sleep(0.01)
    check(temp and proc.poll() is None, f"no temporary seen before the end (rc={proc.poll()})")
    time.sleep(0.3)  # well into the work
    check(proc.poll() is None, f"finished before the signal (rc={proc.poll()})")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return proc.returncode, last, err, temp[0]


@case("signal", "SIGINT during encode over an existing output (--overwrite)",
      "rc 130, 'interrupted'; temporary removed; old file intact")
def _sigint_encode(ctx):
    d = ctx.fresh("sigint_encode")
    out = d / "long.safetensors"
    rc, last, err, temp = _interrupt(ctx, ["encode", ctx.long_clip, *ctx.m(),
                                                  "--chunk-frames", "4"], out, signal.SIGINT,
                                     b"old latents")
    check(rc == 130 and last == "videovae: interrupted", f"rc={rc}: {err.strip()[-300:]}")
    check("Traceback" not in err, f"traceback: {err[-300:]}")
    check(out.read_bytes() == b"old latents" and leftovers(d) == [out.name],
          f"left {leftovers(d)}, old intact: {out.read_bytes() == b'old latents'}")
    return f"rc 130 '{last}'; temp {temp} removed; old file intact"


@case("signal", "SIGINT during decode over an existing output (--overwrite)",
      "rc 130, 'interrupted'; temporary removed; old file intact")
def _sigint_decode(ctx):
    lat = ctx.long_lat
    d = ctx.fresh("sigint_decode")
    out = d / "long.mp4"
    rc, last, err, temp = _interrupt(ctx, ["decode", lat, *ctx.m(), "--decode-chunk", "1"],
                                     out, signal.SIGINT, b"old video")
    check(rc == 130 and last == "videovae: interrupted", f"rc={rc}: {err.strip()[-300:]}")
    check("Traceback" not in err, f"traceback: {err[-300:]}")
    check(out.read_bytes() == b"old video" and leftovers(d) == [out.name],
          f"left {leftovers(d)}")
    return f"rc 130 '{last}'; temp {temp} removed; old file intact"


@case("signal", "SIGTERM during encode of a new output",
      "rc 143, 'terminated'; no temporary and no output left (was: 0-byte hidden temp)")
def _sigterm_encode(ctx):
    d = ctx.fresh("sigterm")
    out = d / "long.safetensors"
    rc, last, err, temp = _interrupt(ctx, ["encode", ctx.long_clip, *ctx.m(),
                                                  "--chunk-frames", "4"], out, signal.SIGTERM,
                                     None)
    check(rc == 143 and last == "videovae: terminated", f"rc={rc}: {err.strip()[-300:]}")
    check(leftovers(d) == [], f"left {leftovers(d)}")
    return f"rc 143 '{last}'; temp {temp} removed; folder empty"


# ----------------------------------------------------------------------------------------------
# Python API


def _api_error(fn) -> str:
    try:
        fn()
    except ValueError as e:
        return str(e).splitlines()[0]
    raise Fail("no error raised")


@case("api", "vae.encode of a clip with one NaN pixel",
      "ValueError naming NaN (was: NaN latents, no warning)")
def _api_nan_pixel(ctx):
    import torch

    x = torch.zeros(1, 3, 5, 32, 32)
    x[0, 0, 2, 5, 5] = float("nan")
    msg = _api_error(lambda: ctx.vae.encode(x))
    check("nan" in msg.lower(), msg)
    return f"ValueError: {msg}"


@case("api", "vae.decode of latents with one NaN", "ValueError naming NaN")
def _api_nan_latent(ctx):
    import torch

    z = torch.zeros(1, 4, 2, 4, 4)
    z[0, 0, 1, 1, 1] = float("nan")
    msg = _api_error(lambda: ctx.vae.decode(z))
    check("nan" in msg.lower(), msg)
    return f"ValueError: {msg}"


def _dtype_case(ctx, dtype_name):
    import torch

    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(1, 3, 5, 32, 32, generator=g) * 2 - 1).to(dtype)
    with torch.no_grad():
        got = ctx.vae.encode(x).latent_dist.mean
        ref = ctx.vae.encode(x.float()).latent_dist.mean
        rec = ctx.vae.decode(got.to(dtype)).sample
    diff = (got - ref).abs().max().item()
    check(got.dtype == torch.float32 and diff <= 1e-5 and rec.shape == (1, 3, 5, 32, 32),
          f"latents {got.dtype}, max |diff| vs fp32 {diff:g}, decoded {tuple(rec.shape)}")
    return f"cast to fp32; max |latent diff| vs fp32 input {diff:.1e}; decode ok"


@case("api", "float64 input to an fp32 model", "works (cast), same latents as fp32")
def _api_f64(ctx):
    return _dtype_case(ctx, "float64")


@case("api", "float16 input to an fp32 model", "works (cast), same latents as its fp32 value "
      "(was: raw dtype RuntimeError)")
def _api_f16(ctx):
    return _dtype_case(ctx, "float16")


@case("api", "bfloat16 input to an fp32 model", "works (cast), same latents as its fp32 value "
      "(was: raw dtype RuntimeError)")
def _api_bf16(ctx):
    return _dtype_case(ctx, "bfloat16")


@case("api", "float frames in [0, 255] (forgot to normalize)",
      "ValueError naming the range and the fix (was: accepted silently)")
def _api_0_255(ctx):
    import torch

    x = torch.rand(1, 3, 5, 32, 32) * 255
    msg = _api_error(lambda: ctx.vae.encode(x))
    check("[-1, 1]" in msg and "127.5" in msg, msg)
    return f"ValueError: {msg}"


@case("api", "uint8 tensor input", "ValueError: must be a float tensor")
def _api_uint8(ctx):
    import torch

    msg = _api_error(lambda: ctx.vae.encode(torch.zeros(1, 3, 5, 32, 32, dtype=torch.uint8)))
    check("float" in msg, msg)
    return f"ValueError: {msg}"


@case("api", "decode output range: documented, and clamped by the file API",
      "decode docstring says not clamped / clamp; file API frames from out-of-range pixels "
      "are clamped to 0..255")
def _api_range(ctx):
    import numpy as np
    import torch

    from videovae import VideoVAE
    from videovae.io.video import tensor_to_frames

    doc = " ".join((VideoVAE.decode.__doc__ or "").split())
    check("not clamped" in doc and "[-1, 1]" in doc, f"decode docstring: {doc[:200]}")
    with torch.no_grad():
        x = ctx.vae.decode(torch.randn(1, 4, 2, 4, 4, generator=torch.Generator()
                                       .manual_seed(0)) * 200).sample
    lo, hi = x.min().item(), x.max().item()
    frames = tensor_to_frames(x)
    ramp = tensor_to_frames(torch.tensor([-5.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 1, 1, 5)
                            .expand(1, 3, 1, 1, 5))[0, 0, :, 0]
    check(list(ramp) == [0, 0, 128, 255, 255] and frames.dtype == np.uint8,
          f"tensor_to_frames of [-5,-1,0,1,5] -> {list(ramp)}")
    ramp = [int(v) for v in ramp]
    return (f"docstring: 'nominally in [-1, 1] but not clamped'; raw decode spans "
            f"[{lo:.2f}, {hi:.2f}]; file frames clamp [-5,-1,0,1,5] -> {list(ramp)}")


@case("cli", "`videovae --help` (and one-line errors) import no torch",
      "help rc 0; torch, diffusers, numpy not imported; whole process < 3 s")
def _help_fast(ctx):
    code = ("import sys\nfrom videovae import cli\ntry:\n    cli.main(['--help'])\n"
            "except SystemExit as e:\n    print('help-exit', e.code, file=sys.stderr)\n"
            "print('heavy', sorted(m for m in ('torch', 'diffusers', 'numpy') "
            "if m in sys.modules), file=sys.stderr)\n")
    res = ctx.python(code)
    check("help-exit 0" in res.err and "heavy []" in res.err, res.err[-300:])
    check("encode" in res.out and "decode" in res.out, "help text lacks the commands")
    res2 = ctx.cli("--help")
    seconds = max(res.seconds, res2.seconds)
    check(res2.rc == 0 and seconds < 3, f"rc {res2.rc}, {seconds:.1f}s")
    return f"no heavy imports; `python -m videovae --help` rc 0 in {res2.seconds:.2f}s"


@case("cli", "one-line error for a missing input is fast", "rc 1 in < 3 s (checked before "
      "importing torch)")
def _error_fast(ctx):
    d = ctx.fresh("fast_error")
    res = ctx.cli("decode", d / "missing.safetensors", "--model", ctx.model, "-o", d / "x.mp4")
    obs = expect_error(res, "latent file not found", outputs=[d / "x.mp4"])
    check(res.seconds < 3, f"{res.seconds:.1f}s: {obs}")
    return f"{obs} ({res.seconds:.2f}s)"


# ----------------------------------------------------------------------------------------------
# eval and latent-stats over folders


def _eval_folder(ctx, name, extra: dict[str, Path | bytes]) -> Path:
    d = ctx.fresh(name)
    data = d / "data"
    data.mkdir()
    for p in ctx.eval_clips:
        shutil.copy(p, data / p.name)
    for fname, src in extra.items():
        if isinstance(src, bytes):
            (data / fname).write_bytes(src)
        else:
            shutil.copy(src, data / fname)
    return d


@case("eval", "eval over a folder with one corrupt file",
      "rc 0; report lists the corrupt file with its reason, the 2 good files evaluated")
def _eval_corrupt(ctx):
    d = _eval_folder(ctx, "eval_corrupt", {"broken.mp4": b"\x00\x00\x00 ftypisom" + b"x" * 200})
    res = ctx.cli("eval", *ctx.m(), "--data", d / "data", "-o", d / "report.json")
    expect_ok(res)
    r = json.loads((d / "report.json").read_text())
    failed = [(Path(f["file"]).name, f["error"]) for f in r["failed"]]
    check(r["files"] == 2 and [f for f, _ in failed] == ["broken.mp4"], f"report {failed}")
    return f"rc 0; files 2, failed {failed[0][0]}: {failed[0][1][:90]}"


@case("eval", "eval over a folder with an 8192x8192 file among good ones",
      "rc 0; report lists the huge file with a --tile hint, the others evaluated "
      "(was: whole run aborted, no report)")
def _eval_huge(ctx):
    d = _eval_folder(ctx, "eval_huge", {"huge.mp4": ctx.huge})
    res = ctx.cli("eval", *ctx.m(), "--data", d / "data", "-o", d / "report.json")
    expect_ok(res)
    r = json.loads((d / "report.json").read_text())
    failed = [(Path(f["file"]).name, f["error"]) for f in r["failed"]]
    check(r["files"] == 2 and [f for f, _ in failed] == ["huge.mp4"], f"report {failed}")
    check("--tile" in failed[0][1], f"no --tile hint: {failed[0][1]}")
    return f"rc 0; files 2, failed huge.mp4: {failed[0][1][:120]}"


@case("eval", "eval over a folder of only corrupt files",
      "rc 1, one line 'none of the 2 files' with the first reason; report still written")
def _eval_all_corrupt(ctx):
    d = ctx.fresh("eval_all_corrupt")
    (d / "data").mkdir()
    for i in range(2):
        (d / "data" / f"bad{i}.mp4").write_text("not a video")
    res = ctx.cli("eval", *ctx.m(), "--data", d / "data", "-o", d / "report.json")
    obs = expect_error(res, "none of the 2 files", "cannot read")
    r = json.loads((d / "report.json").read_text())
    check(len(r["failed"]) == 2 and r["files"] == 0, f"report: {r}")
    return f"{obs}; report lists 2 failures"


@case("eval", "latent-stats --write on a model folder holding the user's other files",
      "rc 0; only config.json changes; NOTES.md, extra/ and the weights untouched "
      "(was: folder rmtree'd)")
def _latent_stats_write(ctx):
    d = _model_copy(ctx, "latent_stats")
    model = d / "model"
    (model / "NOTES.md").write_text("my notes")
    (model / "extra").mkdir()
    (model / "extra" / "samples.txt").write_text("keep me")
    weights = model / "diffusion_pytorch_model.safetensors"
    before = (weights.read_bytes(), weights.stat().st_ino)
    old = json.loads((model / "config.json").read_text())
    data = d / "data"
    data.mkdir()
    shutil.copy(ctx.eval_clips[0], data / "c0.mp4")
    expect_ok(ctx.cli("latent-stats", "--model", model, "--data", data, "--clips", "1",
                      "--num-frames", "5", "--resolution", "32", "--write", "--no-progress"))
    left = leftovers(model)
    check(left == ["NOTES.md", "config.json", "diffusion_pytorch_model.safetensors", "extra"],
          f"folder now holds {left}")
    check((model / "NOTES.md").read_text() == "my notes" and
          (model / "extra" / "samples.txt").read_text() == "keep me", "user files changed")
    check((weights.read_bytes(), weights.stat().st_ino) == before, "weights rewritten")
    new = json.loads((model / "config.json").read_text())
    changed = sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k))
    check(changed == ["scaling_factor"], f"config keys changed: {changed}")
    return f"rc 0; files kept {left}; config changed: {changed}"


# ----------------------------------------------------------------------------------------------
# Training


SMALL_DATA = "data.sources=[{type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]"


def train_args(out: Path, steps: int, *extra: str) -> list:
    return ["train", "--config", TRAIN_CONFIG, "model.block_out_channels=[8,16,16,16]",
            "model.layers_per_block=1", "model.norm_num_groups=4", f"train.output_dir={out}",
            f"train.max_steps={steps}", "train.log_every=1", "train.val_every=0",
            "train.checkpoint_every=3", "data.num_workers=0", "data.val_clips=1",
            "data.val_num_frames=5", "data.val_resolution=[32,32]", "optim.warmup_steps=2",
            SMALL_DATA, *extra]


def metrics(out: Path, strict: bool = True) -> list[dict]:
    """The rows of metrics.jsonl (not strict: while it is being written, whole lines only)."""
    path = out / "metrics.jsonl"
    rows = []
    for ln in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(ln))
        except json.JSONDecodeError:
            if strict:
                raise
    return rows


def ckpt_steps(out: Path) -> list[int]:
    d = out / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in d.iterdir()
                  if p.name.startswith("checkpoint-") and p.name.split("-")[1].isdigit())


RESUME_ARGS = ("train.checkpoint_every=4",)
RESUME_STEPS = 12


@once
def killed_and_resumed(ctx) -> dict:
    """An uninterrupted reference run; a run SIGKILLed after a checkpoint, once a later step is
    logged; that run resumed with train.resume_from=latest."""
    d = ctx.fresh("train_resume")
    ref, run = d / "reference", d / "run"
    expect_ok(ctx.cli(*train_args(ref, RESUME_STEPS, *RESUME_ARGS)))
    proc = ctx.popen(*train_args(run, RESUME_STEPS, *RESUME_ARGS))
    killed_at = None
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        ck, m = ckpt_steps(run), metrics(run, strict=False)
        if ck and m and m[-1]["step"] > ck[-1]:
            proc.kill()
            killed_at = (ck[-1], m[-1]["step"])
            break
        time.sleep(0.01)
    proc.communicate(timeout=60)
    check(killed_at is not None, f"the run ended (rc={proc.returncode}) before it was killed")
    before = metrics(run)
    res = ctx.cli(*train_args(run, RESUME_STEPS, *RESUME_ARGS, "train.resume_from=latest"))
    expect_ok(res)
    resumed = re.search(r"resumed from \S+checkpoint-(\d+) at step (\d+)", res.err)
    check(resumed, f"no 'resumed from' in the log: {res.err[-300:]}")
    return {"ref": ref, "run": run, "killed_at": killed_at, "before": before,
            "after": metrics(run), "resumed_step": int(resumed.group(2))}


@case("train", "SIGKILL after a checkpoint, then train.resume_from=latest",
      "resumes from the last checkpoint; losses of the replayed steps identical to an "
      "uninterrupted run; same final weights")
def _train_kill_resume(ctx):
    from safetensors.torch import load_file

    r = killed_and_resumed(ctx)
    start = r["resumed_step"]
    check(start == r["killed_at"][0], f"resumed at {start}, killed after checkpoint "
          f"{r['killed_at'][0]}")
    ref = {m["step"]: m for m in metrics(r["ref"])}
    got = {m["step"]: m for m in r["after"]}
    keys = ("train/loss", "train/rec", "train/grad_norm")
    diffs = {k: max(abs(ref[s][k] - got[s][k]) for s in range(start + 1, RESUME_STEPS + 1))
             for k in keys}
    check(all(v == 0 for v in diffs.values()), f"steps {start + 1}-{RESUME_STEPS}: max diffs "
          f"{diffs}")
    a = load_file(str(r["ref"] / "final" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(r["run"] / "final" / "diffusion_pytorch_model.safetensors"))
    wdiff = max((a[k] - b[k]).abs().max().item() for k in a)
    check(wdiff == 0, f"final weights differ by {wdiff:g}")
    return (f"killed at step {r['killed_at'][1]} (checkpoint-{r['killed_at'][0]}); resumed at "
            f"{start}; steps {start + 1}-{RESUME_STEPS}: loss, rec, grad_norm and final "
            "weights bit-identical")


@case("train", "metrics.jsonl after that resume", "each step once, 1..12 in order; rows before "
      "the checkpoint unchanged (was: replayed steps listed twice)")
def _train_metrics_no_dup(ctx):
    r = killed_and_resumed(ctx)
    steps = [m["step"] for m in r["after"]]
    check(steps == list(range(1, RESUME_STEPS + 1)), f"steps {steps}")
    start = r["resumed_step"]
    check(r["after"][:start] == r["before"][:start], "rows before the checkpoint changed")
    replayed = [m["step"] for m in r["before"] if m["step"] > start]
    return f"steps 1..{RESUME_STEPS} once each; steps {replayed} logged before the kill replaced"


KILL_IN_SAVE = """
import os, signal, sys
from pathlib import Path
import accelerate.checkpointing as ckpt
real = ckpt.save
def save(obj, f, *a, **k):
    if "checkpoint-6" in str(f) and Path(f).name.startswith("optimizer"):
        Path(f).write_bytes(b"")  # what the kernel has of the file when the process dies
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *a, **k)
ckpt.save = save
from videovae.cli import main
sys.exit(main(sys.argv[1:]))
"""

PARTIAL_ARGS = ("train.checkpoint_every=2", "train.checkpoints_total_limit=1",
                "train.ema_decay=0")


@once
def killed_in_save(ctx) -> dict:
    """A run SIGKILLed while writing checkpoint-6's optimizer file (limit 1), watched for the
    number of complete checkpoints on disk at every moment."""
    d = ctx.fresh("train_kill_in_save")
    run = d / "run"
    proc = ctx.popen(*train_args(run, 8, *PARTIAL_ARGS), code=KILL_IN_SAVE)
    counts = []
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        n = len(ckpt_steps(run))
        if n or counts:
            counts.append(n)
        time.sleep(0.002)
    _, err = proc.communicate(timeout=60)
    check(proc.returncode == -signal.SIGKILL, f"rc={proc.returncode}: {err[-300:]}")
    return {"dir": d, "run": run, "counts": counts,
            "listing": sorted(p.name for p in (run / "checkpoints").iterdir())}


@case("train", "SIGKILL while writing a checkpoint (0-byte optimizer file), then "
      "resume_from=latest", "the half-written one stays a .partial folder; resumes from the "
      "newest complete checkpoint; rc 0 (was: picked the half-written one, EOFError)")
def _train_kill_in_save(ctx):
    k = killed_in_save(ctx)
    run = k["run"]
    check(k["listing"] == [".checkpoint-6.partial", "checkpoint-4"], f"after kill: {k['listing']}")
    partial_opt = [p for p in (run / "checkpoints" / ".checkpoint-6.partial").iterdir()
                   if p.name.startswith("optimizer")]
    check(partial_opt and partial_opt[0].stat().st_size == 0, "no 0-byte optimizer file")
    shutil.copytree(run, k["dir"] / "hand_made")  # (for the next case, before resuming)
    res = ctx.cli(*train_args(run, 8, *PARTIAL_ARGS, "train.resume_from=latest"))
    expect_ok(res)
    check(re.search(r"resumed from \S+/checkpoint-4 at step 4", res.err), res.err[-300:])
    steps = [m["step"] for m in metrics(run)]
    final = (run / "final" / "diffusion_pytorch_model.safetensors").is_file()
    check(final and steps == list(range(1, 9)), f"final {final}, steps {steps}")
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    return f"after kill {k['listing']}; resumed from checkpoint-4; rc 0; now {left}"


@case("train", "rotation with checkpoints_total_limit=1 (watched during the run above)",
      "never zero complete checkpoints once the first exists, also when killed mid-write")
def _train_rotation(ctx):
    k = killed_in_save(ctx)
    counts = k["counts"]
    check(counts and min(counts) >= 1, f"complete checkpoints seen over time: "
          f"min {min(counts) if counts else None} over {len(counts)} polls")
    return (f"{len(counts)} polls: always {min(counts)}..{max(counts)} complete checkpoint(s); "
            f"after the kill: {k['listing']}")


@case("train", "a checkpoint-<step> folder with a 0-byte optimizer file (as older versions "
      "left on SIGKILL), then resume_from=latest",
      "resumes from the newest complete checkpoint (checkpoint-4), rc 0")
def _train_hand_made_partial(ctx):
    k = killed_in_save(ctx)
    run = k["dir"] / "hand_made"
    ck = run / "checkpoints"
    check((ck / ".checkpoint-6.partial").is_dir(), "run the case before this one first")
    os.rename(ck / ".checkpoint-6.partial", ck / "checkpoint-6")
    res = ctx.cli(*train_args(run, 8, *PARTIAL_ARGS, "train.resume_from=latest"))
    line = res.error_lines[0] if res.error_lines else res.err.strip()[-300:]
    check(res.rc == 0, f"rc={res.rc}: {line}")
    check(re.search(r"resumed from \S+/checkpoint-4 at step 4", res.err), res.err[-300:])
    return "rc 0; skipped the incomplete checkpoint-6, resumed from checkpoint-4"


@case("train", "corrupt videos inside the training data folder",
      "rc 0; final model written; skipped samples counted in metrics.jsonl")
def _train_corrupt_skipped(ctx):
    d = ctx.fresh("train_corrupt")
    data = d / "data"
    data.mkdir()
    for i in range(2):
        video(data / f"good{i}.mp4", 9, (40, 40), speed=1.0 + i)
    for i in range(3):
        (data / f"broken{i}.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + b"x" * 200)
    run = d / "run"
    src = ("data.sources=[{name: clips, type: video, path: " + str(data) +
           ", num_frames: 5, resolution: 32, batch_size: 1}]")
    res = ctx.cli(*train_args(run, 6, src, "train.checkpoint_every=0"))
    expect_ok(res)
    m = metrics(run)
    skipped = m[-1].get("train/skipped_samples") if m else None
    check((run / "final").is_dir() and skipped and skipped > 0,
          f"final {(run / 'final').is_dir()}, skipped_samples {skipped}")
    return f"rc 0; {len(m)} steps; train/skipped_samples = {skipped}"


@case("train", "training data folder of only corrupt files",
      "rc 1, one line naming the source and the reason 'cannot read' (was: 'Caught "
      "RuntimeError in DataLoader worker process 0')")
def _train_all_corrupt(ctx):
    d = ctx.fresh("train_all_corrupt")
    data = d / "data"
    data.mkdir()
    for i in range(3):
        (data / f"bad{i}.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + b"x" * 100)
    run = d / "run"
    src = ("data.sources=[{name: clips, type: video, path: " + str(data) +
           ", num_frames: 5, resolution: 32}]")
    res = ctx.cli(*train_args(run, 3, src, "data.num_workers=1"))
    obs = expect_error(res, "source clips", "unreadable", "cannot read")
    check("DataLoader" not in obs, obs)
    check(not (run / "final").exists(), "a final model was written")
    return obs


@case("train", "optim.lr=1e3 (diverges), train.max_nonfinite_steps=3",
      "rc 1 'training diverged'; no final model; every JSON written (val, metrics) is strict "
      "JSON; warnings name the skipped steps (was: rc 0, NaN model saved, bare NaN in val "
      "JSON, warning step off by one)")
def _train_diverge(ctx):
    d = ctx.fresh("train_lr1e3")
    run = d / "run"
    res = ctx.cli(*train_args(run, 40, "optim.lr=1e3", "train.max_nonfinite_steps=3",
                              "train.val_every=2", "train.checkpoint_every=5"))
    obs = expect_error(res, "training diverged")
    check(not (run / "final").exists(), f"final model saved; {obs}")

    def no_nan(token):
        raise Fail(f"bare {token} in JSON")

    files = sorted((run / "val").glob("*.json")) if (run / "val").is_dir() else []
    for f in files:
        json.loads(f.read_text(), parse_constant=no_nan)
    rows = (run / "metrics.jsonl").read_text().splitlines()
    for ln in rows:
        json.loads(ln, parse_constant=no_nan)
    nonfinite = json.loads(rows[-1]).get("train/nonfinite_steps")
    # the warnings name the steps as metrics.jsonl does (was: off by one)
    warned = [int(s) for s in re.findall(r"step (\d+): non-finite", res.err)]
    skipped = [r["step"] for r in map(json.loads, rows) if r.get("train/grad_norm") is None]
    check(warned and warned == skipped, f"warned steps {warned}, null grad_norm at {skipped}")
    return (f"{obs}; {len(files)} val JSON + {len(rows)} metrics rows strict; warned steps "
            f"{warned} = skipped rows; nonfinite_steps {nonfinite}")


@case("train", "bad override value (optim.lr=fast) and a missing config file",
      "rc 1 each, one line naming the key / the file")
def _train_bad_config(ctx):
    d = ctx.fresh("train_bad_config")
    a = expect_error(ctx.cli("train", "--config", TRAIN_CONFIG, "optim.lr=fast"), "optim.lr")
    b = expect_error(ctx.cli("train", "--config", d / "missing.yaml"), "not found",
                     "missing.yaml")
    return f"{a} | {b}"


# ----------------------------------------------------------------------------------------------
# Report


def cell(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def markdown(cases: list[Case], seconds: float) -> str:
    n_pass = sum(c.passed for c in cases)
    title = f"# Reliability probe: {n_pass} of {len(cases)} cases pass ({seconds / 60:.1f} min)"
    lines = [title, "",
             "| id | category | case | expected | observed | result |", "|---|---|---|---|---|---|"]
    for c in cases:
        lines.append(f"| {c.id} | {c.category} | {cell(c.case)} | {cell(c.expected)} | "
                     f"{cell(c.observed)} | {'PASS' if c.passed else '**FAIL**'} |")
    return "\n".join(lines) + "\n"


def select(spec: str | None) -> list[Case]:
    if not spec:
        return CASES
    ids = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        ids.update(f"{i:02d}" for i in range(int(lo), int(hi or lo) + 1))
    return [c for c in CASES if c.id in ids]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default="probe_reliability",
                   help="writes OUTPUT.md and OUTPUT.json")
    p.add_argument("--only", help="case ids, e.g. 1,5,60-64")
    p.add_argument("--workdir", help="work folder (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)

    from videovae.runtime import setup_cpu

    setup_cpu()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="probe_reliability_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cases = select(args.only)
    start = time.perf_counter()
    try:
        run_cases(Ctx(work), cases)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    md = markdown(cases, seconds)
    print("\n" + md)
    Path(f"{args.output}.md").write_text(md)
    report = {"passed": sum(c.passed for c in cases), "failed": sum(not c.passed for c in cases),
              "seconds": round(seconds, 1), "python": sys.version.split()[0],
              "cases": [{"id": c.id, "category": c.category, "case": c.case,
                         "expected": c.expected, "observed": c.observed,
                         "result": "PASS" if c.passed else "FAIL",
                         "seconds": round(c.seconds, 2)} for c in cases]}
    Path(f"{args.output}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}.md and {args.output}.json; {report['passed']} passed, "
          f"{report['failed']} failed in {seconds:.0f}s" + (f"; kept {work}" if args.keep else ""))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

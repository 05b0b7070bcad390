"""Writing videos frame by frame through ffmpeg, checked: a failed ffmpeg run (a full disk) or
an unreadable result is an error, so an atomic output is never published broken; the frame
rate is written as an exact fraction and the sample aspect ratio exactly."""

from __future__ import annotations

import contextlib
import logging
import math
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import VideoVAEError, one_line
from .listing import WRITABLE_VIDEO_SUFFIXES, check_output_suffix

logger = logging.getLogger(__name__)


class VideoWriteError(VideoVAEError):
    """A video that could not be written completely (ffmpeg failed, e.g. a full disk)."""


def video_rate(fps: float) -> Fraction:
    """`fps` as the fraction written into the file: common rates exact (30000/1001, 25/2), slow
    ones by their period (a time-lapse at 1 frame per hour is 1/3600, not 0)."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise VideoWriteError(f"fps must be a positive number, got {fps!r}")
    exact = fps if isinstance(fps, Fraction) else Fraction(value)
    candidates = [exact.limit_denominator(1001)]
    if value < 1:
        candidates.append(1 / Fraction(1 / value).limit_denominator(1001))
    return min((c for c in candidates if c > 0), key=lambda c: abs(c - exact))


def _ffmpeg_failure(path, returncode: int, log: str) -> VideoWriteError:
    """One line for a failed ffmpeg run: its first error line, or 'no space left on device'."""
    if "no space left on device" in log.lower():
        return VideoWriteError(f"cannot write {path}: no space left on device")
    lines = [ln.split("] ", 1)[-1].strip() for ln in log.splitlines() if ln.strip()]
    why = lines[0] if lines else (f"killed by signal {-returncode}" if returncode < 0
                                  else f"exit status {returncode}")
    return VideoWriteError(f"ffmpeg could not write {path}: {why}")


class VideoWriter:
    """Writes uint8 RGB frames one chunk at a time through ffmpeg (H.264 by default).

    Odd sizes use 4:4:4 chroma (4:2:0 needs even sizes). `crf` 0 is lossless. The frame rate
    is written as a fraction (`video_rate`); `sample_aspect_ratio` (num, den) is written
    exactly; `name` is the file's name in messages (the final name when `path` is a temporary).
    `close()` (or leaving the `with` block) waits for ffmpeg and raises
    VideoWriteError when it failed (a full disk: "no space left on device") or wrote a file
    that cannot be read back, so an atomic output is never published broken; a warning says
    when the container could not store the frame rate. Leaving the block with an exception
    stops ffmpeg without a second error.
    """

    _proc: subprocess.Popen | None = None

    def __init__(self, path, fps: float, height: int, width: int, crf: int = 10,
                 codec: str = "libx264", sample_aspect_ratio: tuple[int, int] | None = None,
                 name=None):
        import imageio_ffmpeg

        self.path = Path(path)
        self.name = name or self.path  # for messages: the published name of a temporary path
        check_output_suffix(self.path, WRITABLE_VIDEO_SUFFIXES, "a video format")
        self.size = (width, height)
        self.rate = video_rate(fps)
        if abs(self.rate - Fraction(float(fps))) > self.rate / 10000:
            logger.warning("%s: %s fps is written as %s", self.name, fps, self.rate)
        pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", str(self.rate), "-i", "-", "-an", "-c:v", codec, "-pix_fmt", pix_fmt]
        if codec == "libx264":
            cmd += ["-crf", str(crf)]
        if sample_aspect_ratio:  # max: setsar reduces to denominators <= 100 by default
            num, den = sample_aspect_ratio
            cmd += ["-vf", f"setsar={num}/{den}:max=65535"]
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd + [str(self.path)], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=self._log,
                                      start_new_session=True)  # Ctrl-C is ours to handle
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        if self._proc is None:
            raise ValueError(f"{self.path}: the writer is closed")
        if frames.ndim == 3:
            frames = frames[None]
        if frames.shape[1:] != (self.size[1], self.size[0], 3) or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (t, {self.size[1]}, {self.size[0]}, 3), "
                             f"got {frames.dtype} {frames.shape}")
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frames)).cast("B"))
        except OSError:  # ffmpeg stopped (a full disk, a failing muxer): say why
            raise self._failure() from None
        self.frames_written += len(frames)

    def _failure(self) -> VideoWriteError:
        proc, self._proc = self._proc, None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        returncode = proc.wait()
        self._log.seek(0)
        log = self._log.read().decode(errors="replace")
        self._log.close()
        return _ffmpeg_failure(self.name, returncode, log)

    def close(self) -> None:
        """Finish the file; raise VideoWriteError if ffmpeg failed or the file is unreadable."""
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        if self._proc.wait() != 0:
            raise self._failure()
        self._proc = None
        self._log.close()
        if self.frames_written == 0:
            raise VideoWriteError(f"{self.name}: no frames were written")
        self._check_written()

    def _check_written(self) -> None:
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                rate = stream.guessed_rate or stream.average_rate
        except Exception as e:  # noqa: BLE001 - any failure means the file is not playable
            raise VideoWriteError(f"ffmpeg wrote an unreadable {self.name}: {one_line(e)}") from e
        if self.frames_written > 1 and rate and abs(rate - self.rate) > self.rate / 1000:
            logger.warning("%s: the %s container cannot store %s fps; the video plays at %s fps",
                           self.name, self.path.suffix, self.rate, rate)

    def abort(self) -> None:
        """Stop ffmpeg without finishing the file (after an error elsewhere)."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            proc.kill()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.wait()
            self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.abort()


def write_video(path, frames: np.ndarray, fps: float = 24.0, crf: int = 10) -> None:
    """Write uint8 (T, H, W, 3) frames to a video file in one call."""
    with VideoWriter(path, fps, frames.shape[1], frames.shape[2], crf=crf) as writer:
        writer.write(frames)

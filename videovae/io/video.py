"""Reading videos chunk by chunk (decord, or PyAV where decord is missing); writing them is
`video_writer.py` (its names are re-exported here). Frames are uint8 RGB arrays (t, H, W, 3);
grayscale and alpha sources become RGB, 16-bit images are scaled to 8 bits. Images are
one-frame videos; animated WebP and PNG are videos. Frames come out as displayed: a video's
display matrix (phones) and an image's EXIF orientation are applied, whichever the backend.

Only regular files are read (a FIFO would block forever). Every video is first probed with
PyAV, which fails with an error where decord would abort the process (a header declaring
billions of frames makes decord throw std::bad_alloc); such files are read with PyAV only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import VideoReadError, one_line
from .listing import input_file_mode, is_image
from .video_writer import VideoWriteError, VideoWriter, video_rate, write_video  # noqa: F401

logger = logging.getLogger(__name__)

DEFAULT_FPS = 24.0
ANIMATED_IMAGE_FORMATS = ("PNG", "WEBP", "GIF")  # not TIFF pages or MPO previews
MAX_ANIMATION_GROWTH = 4  # frames repeated to a constant rate: at most this many times as many


def _has_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def check_regular_file(path: Path) -> None:
    """Refuse a missing path, a folder, and anything that is not a regular file (a FIFO would
    block every reader forever, a device is no video)."""
    kind = input_file_mode(path, "video")
    if kind == "a directory":
        raise VideoReadError(f"{path} is a directory, not a video")
    if kind is not None:
        raise VideoReadError(f"{path} is {kind}, not a regular file: save the video to a file "
                             "first")


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _native_stderr_into(sink: list):
    """Send what native code prints on file descriptor 2 (decord's "ERROR opening" lines and
    its FFmpeg's messages) into a temporary file during the block; append the text to `sink`."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as tmp:
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no file descriptor 2: nothing to hide
            yield
            return
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.append(tmp.read().decode(errors="replace"))


# ----------------------------------------------------------------------------------------------
# probing (PyAV: never aborts the process)


@dataclass
class _Probe:
    fps: float
    declared: int  # frames the container declares (0: unknown)
    size: int  # bytes
    plausible: bool  # False: the header declares more frames than the file has bytes
    sar: tuple[int, int] | None
    turns: int  # quarter turns (np.rot90's k) from the stored frames to the displayed ones
    first: np.ndarray  # the first frame, as displayed


def _quarter_turns(angle: float, path) -> int:
    """np.rot90's k for FFmpeg's display rotation (degrees counterclockwise)."""
    if angle % 90:
        logger.warning("%s: display rotation of %g degrees is not a multiple of 90; frames are "
                       "read as stored", path, angle)
        return 0
    return int(round(angle / 90)) % 4


def _turn(frames: np.ndarray, turns: int) -> np.ndarray:
    """Rotate (t, H, W, 3) frames by `turns` quarter turns counterclockwise."""
    return np.ascontiguousarray(np.rot90(frames, turns, axes=(1, 2))) if turns else frames


def _probe(path: Path) -> _Probe:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoReadError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        declared, sar = int(stream.frames or 0), _ratio(stream.sample_aspect_ratio)
        frame = next(iter(container.decode(stream)), None)
        if frame is None:
            raise VideoReadError(f"{path} has no frames")
        first = frame.to_ndarray(format="rgb24")
        turns = _quarter_turns(float(getattr(frame, "rotation", 0) or 0), path)
    size = path.stat().st_size
    plausible = declared <= size  # every frame takes at least a byte of the file
    if not plausible:
        logger.warning("%s declares %d frames in %d bytes: counting its frames instead", path,
                       declared, size)
    return _Probe(fps=float(rate) if rate else DEFAULT_FPS, declared=declared, size=size,
                  plausible=plausible, sar=sar, turns=turns,
                  first=_turn(first[None], turns)[0])


def _remaining_turns(got: np.ndarray, shown: np.ndarray, turns: int) -> int:
    """Quarter turns still to apply to a decoder's frames (`got`, its first frame) so that they
    look like `shown` (the first frame as displayed): 0 where the decoder applied the display
    matrix itself (decord does for 90 and 270 degrees), else `turns`."""
    if not turns:
        return 0

    def mismatch(k):
        r = np.rot90(got, k)
        return (np.abs(r.astype(np.int16) - shown).mean() if r.shape == shown.shape
                else math.inf)

    return min((0, turns), key=mismatch)


# ----------------------------------------------------------------------------------------------
# images (PIL)


def _image_rgb(im) -> np.ndarray:
    """A PIL image (its current frame) as displayed, uint8 (H, W, 3): EXIF orientation applied,
    16-bit grayscale scaled to 8 bits (value / 257, as viewers show it)."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        gray = ((a * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.array(im.convert("RGB"))


def _animation_timing(durations: list, path) -> tuple[list[int], float]:
    """Repeats per stored frame and the constant frame rate that keep an animation's timing:
    frames last multiples of the durations' greatest common divisor. Unknown durations: each
    frame once at DEFAULT_FPS; too many repeats: each frame once at the average rate."""
    n = len(durations)
    if any(not d or d <= 0 for d in durations):
        return [1] * n, DEFAULT_FPS
    ms = [Fraction(d).limit_denominator(1000) for d in durations]
    common = math.lcm(*(d.denominator for d in ms))
    step = Fraction(math.gcd(*(int(d * common) for d in ms)), common)
    repeats = [int(d / step) for d in ms]
    if sum(repeats) <= MAX_ANIMATION_GROWTH * n:
        return repeats, float(1000 / step)
    logger.info("%s: frame durations vary too much for a constant rate; read at the average "
                "rate", path)
    return [1] * n, float(1000 * n / sum(ms))


# ----------------------------------------------------------------------------------------------
# the reader


class VideoReader:
    """Frames of a video file, decoded on demand.

    `backend`: "auto" (decord if installed, else PyAV), "decord", "pyav". Image files always
    use PIL (backend "image", or "animation" for animated WebP/PNG). Properties: `num_frames`,
    `fps`, `height`, `width`, `sample_aspect_ratio`.
    """

    _sar: tuple[int, int] | None = None
    _turns = 0  # quarter turns to apply to what the backend decodes

    def __init__(self, path, backend: str = "auto"):
        self.path = Path(path)
        if backend not in ("auto", "decord", "pyav"):
            raise ValueError(f"unknown video backend {backend!r} (auto, decord, pyav)")
        check_regular_file(self.path)
        if is_image(self.path):
            self.backend = "image"
            self._guard(self._open_image)
        else:
            self._open_video(backend)
        if self.num_frames == 0:
            raise VideoReadError(f"{self.path} has no frames")

    def _guard(self, fn, *args):
        """fn(*args), with any decoder error turned into one VideoReadError line."""
        try:
            return fn(*args)
        except (VideoReadError, FileNotFoundError):
            raise
        except Exception as e:  # noqa: BLE001 - every decoder error means "not readable"
            what = "an image" if self.backend in ("image", "animation") else "a video"
            raise VideoReadError(f"cannot read {self.path} as {what}: {one_line(e)}") from e

    def _open_video(self, backend: str):
        self.backend = "pyav"  # the probe's reader
        self._probe = self._guard(_probe, self.path)
        candidates = self._candidates(backend)
        for i, self.backend in enumerate(candidates):
            try:
                self._guard(self._open_decord if self.backend == "decord" else self._open_pyav)
                break
            except VideoReadError as e:
                if i + 1 == len(candidates):
                    raise
                logger.debug("%s cannot read %s (%s)", self.backend, self.path, e)
        sar, turned = self._probe.sar, self._probe.turns % 2
        self._sar = sar[::-1] if sar and turned else sar  # a pixel turned by 90 degrees too
        self._probe = None  # the first frame is not needed any more

    def _candidates(self, backend: str) -> list[str]:
        if self._probe.plausible:
            if backend == "auto":  # decord fails on some files FFmpeg reads: fall back
                return ["decord", "pyav"] if _has_decord() else ["pyav"]
            return [backend]
        if backend == "decord":
            raise VideoReadError(f"{self.path}: its header declares {self._probe.declared} frames "
                                 f"in {self._probe.size} bytes, which would crash decord; use "
                                 "--backend pyav (or auto)")
        return ["pyav"]

    # ------------------------------------------------------------------ backends
    def _open_image(self):
        from PIL import Image

        with Image.open(self.path) as im:
            n = getattr(im, "n_frames", 1)
            if n > 1 and im.format in ANIMATED_IMAGE_FORMATS:
                self.backend = "animation"
                durations = []
                for i in range(n):
                    im.seek(i)
                    im.load()  # WebP sets the frame's duration when it is decoded
                    durations.append(im.info.get("duration"))
                self._repeats, self.fps = _animation_timing(durations, self.path)
                im.seek(0)
                self._image = _image_rgb(im)
                self.num_frames = sum(self._repeats)
            else:
                self._image = _image_rgb(im)
                self.num_frames, self.fps = 1, DEFAULT_FPS
        self.height, self.width = self._image.shape[:2]

    def _open_decord(self):
        import decord

        said: list[str] = []
        try:
            with _native_stderr_into(said):
                self._vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
                self.num_frames = len(self._vr)
                # decode one frame now, so a broken file fails here
                first = self._vr.get_batch([0]).asnumpy()[0] if self.num_frames else None
                self._vr.seek(0)
        finally:
            if said and said[0].strip():
                logger.debug("decord on %s: %s", self.path, said[0].strip())
        self.fps = self._probe.fps
        shown = self._probe.first
        if first is not None:
            self._turns = _remaining_turns(first, shown, self._probe.turns)
            shown = _turn(first[None], self._turns)[0]
        self.height, self.width = shown.shape[:2]

    def _open_pyav(self):
        p = self._probe
        self.fps, self._turns = p.fps, p.turns
        self.height, self.width = p.first.shape[:2]
        n = p.declared if p.plausible else 0
        if not n:  # the container does not say (or lies): count by decoding
            import av

            with av.open(str(self.path)) as container:
                n = sum(1 for _ in container.decode(container.streams.video[0]))
        self.num_frames = n

    @property
    def sample_aspect_ratio(self) -> tuple[int, int] | None:
        """The source's pixel aspect ratio (num, den) as displayed (swapped for a video turned
        by 90 degrees) when it is known and not square, else None."""
        return self._sar

    # ------------------------------------------------------------------ reading
    def iter_chunks(self, chunk_size: int = 16) -> Iterator[np.ndarray]:
        """Yield consecutive frames, at most `chunk_size` at a time, as uint8 (t, H, W, 3)."""
        if self.backend == "image":
            yield self._image[None]
            return
        source = {"decord": self._iter_decord, "pyav": self._iter_pyav,
                  "animation": self._iter_animation}[self.backend](chunk_size)
        count = 0
        try:
            for chunk in source:
                count += len(chunk)
                yield chunk
        except VideoReadError:
            raise
        except Exception as e:  # noqa: BLE001
            raise VideoReadError(f"{self.path} is truncated or corrupt near frame {count}: "
                                 f"{one_line(e)}") from e
        if count == 0:
            raise VideoReadError(f"{self.path} has no decodable frames")

    def _iter_decord(self, chunk_size):
        for start in range(0, self.num_frames, chunk_size):
            idx = list(range(start, min(start + chunk_size, self.num_frames)))
            yield _turn(self._vr.get_batch(idx).asnumpy(), self._turns)

    def _iter_pyav(self, chunk_size):
        import av

        with av.open(str(self.path)) as container:
            buf = []
            for frame in container.decode(container.streams.video[0]):
                buf.append(frame.to_ndarray(format="rgb24"))
                if len(buf) == chunk_size:
                    yield _turn(np.stack(buf), self._turns)
                    buf = []
            if buf:
                yield _turn(np.stack(buf), self._turns)

    def _iter_animation(self, chunk_size):
        from PIL import Image

        buf = []
        with Image.open(self.path) as im:
            for i, repeat in enumerate(self._repeats):
                im.seek(i)
                buf += [_image_rgb(im)] * repeat
                while len(buf) >= chunk_size:
                    yield np.stack(buf[:chunk_size])
                    buf = buf[chunk_size:]
        if buf:
            yield np.stack(buf)

    def read_frames(self, indices: list[int]) -> np.ndarray:
        """Frames at the given sorted indices, uint8 (len, H, W, 3). decord seeks; the other
        backends decode forward and stop after the last index. An index past the last decodable
        frame gets the last decoded one (a container that overstates its length)."""
        if not indices:
            raise ValueError("read_frames needs at least one index")
        if self.backend == "image":
            return np.repeat(self._image[None], len(indices), axis=0)
        if self.backend == "decord":
            return _turn(self._vr.get_batch(list(indices)).asnumpy(), self._turns)
        wanted, got, pos = set(indices), {}, 0
        for chunk in self.iter_chunks(32):
            for f in chunk:
                if pos in wanted:
                    got[pos] = f
                pos += 1
            if pos > indices[-1]:
                break
        if not got:
            raise VideoReadError(f"{self.path}: none of frames {indices[0]}..{indices[-1]} could "
                                 "be decoded")
        return np.stack([got.get(i, got[max(got)]) for i in indices])

    def iter_range(self, start: int, stop: int, chunk_size: int = 16) -> Iterator[np.ndarray]:
        """Frames [start, stop) in chunks of at most `chunk_size`. decord seeks to `start`;
        the other backends decode from the beginning and drop the frames before it."""
        stop = min(stop, self.num_frames)
        if self.backend == "decord":
            for a in range(start, stop, chunk_size):
                yield self.read_frames(list(range(a, min(a + chunk_size, stop))))
            return
        pos = 0
        for chunk in self.iter_chunks(chunk_size):
            a, b = max(start - pos, 0), min(stop - pos, len(chunk))
            if a < b:
                yield chunk[a:b]
            pos += len(chunk)
            if pos >= stop:
                return

    def read_all(self) -> np.ndarray:
        """Every frame at once (small clips only)."""
        return np.concatenate(list(self.iter_chunks(64)), axis=0)


def _ratio(value) -> tuple[int, int] | None:
    """A PyAV Fraction as (num, den); None when unknown, invalid or square."""
    if not value or value.numerator <= 0 or value.denominator <= 0 or value == 1:
        return None
    return int(value.numerator), int(value.denominator)


# ----------------------------------------------------------------------------------------------
# uint8 <-> model tensors


def frames_to_tensor(frames: np.ndarray, device=None, dtype=torch.float32) -> torch.Tensor:
    """uint8 (t, H, W, 3) -> float (1, 3, t, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return (x.permute(3, 0, 1, 2).unsqueeze(0).to(dtype) / 127.5 - 1.0)


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float (1, 3, t, H, W) in [-1, 1] -> uint8 (t, H, W, 3)."""
    x = ((x[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()

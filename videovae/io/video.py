"""Reading videos chunk by chunk (decord, or PyAV where decord is missing) and writing them
frame by frame (imageio-ffmpeg). Frames are uint8 RGB arrays (t, H, W, 3); grayscale and alpha
sources become RGB. Images are one-frame videos.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import VideoReadError, one_line
from .listing import WRITABLE_VIDEO_SUFFIXES, check_output_suffix, is_image

logger = logging.getLogger(__name__)

DEFAULT_FPS = 24.0


def _has_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


class VideoReader:
    """Frames of a video file, decoded on demand.

    `backend`: "auto" (decord if installed, else PyAV), "decord", "pyav". Image files always
    use PIL. Properties: `num_frames`, `fps`, `height`, `width`, `sample_aspect_ratio`.
    """

    _sar: tuple[int, int] | None | bool = False  # False: not read yet

    def __init__(self, path, backend: str = "auto"):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"video not found: {self.path}")
        if self.path.is_dir():
            raise VideoReadError(f"{self.path} is a directory, not a video")
        if is_image(self.path):
            candidates = ["image"]
        elif backend == "auto":
            # decord fails on some files (and some frame sizes) that FFmpeg reads: fall back
            candidates = ["decord", "pyav"] if _has_decord() else ["pyav"]
        elif backend in ("decord", "pyav"):
            candidates = [backend]
        else:
            raise ValueError(f"unknown video backend {backend!r} (auto, decord, pyav)")
        for i, self.backend in enumerate(candidates):
            try:
                self._open()
                break
            except (VideoReadError, FileNotFoundError):
                raise
            except Exception as e:  # noqa: BLE001 - every decoder error means "not readable"
                if i + 1 < len(candidates):
                    logger.debug("%s cannot read %s (%s)", self.backend, self.path, e)
                    continue
                raise VideoReadError(f"cannot read {self.path} as a video: {one_line(e)}") from e
        if self.num_frames == 0:
            raise VideoReadError(f"{self.path} has no frames")

    # ------------------------------------------------------------------ backends
    def _open(self):
        {"image": self._open_image, "decord": self._open_decord, "pyav": self._open_pyav}[
            self.backend]()

    def _open_image(self):
        from PIL import Image

        with Image.open(self.path) as im:
            self._image = np.array(im.convert("RGB"))
        self.num_frames, self.fps = 1, DEFAULT_FPS
        self.height, self.width = self._image.shape[:2]

    def _open_decord(self):
        import decord

        self._vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
        self.num_frames = len(self._vr)
        self.fps = float(self._vr.get_avg_fps() or DEFAULT_FPS)
        if self.num_frames:  # decode one frame now, so a broken file fails here
            self.height, self.width = self._vr.get_batch([0]).shape[1:3]
            self._vr.seek(0)

    def _open_pyav(self):
        import av

        with av.open(str(self.path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{self.path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else DEFAULT_FPS
            self.height, self.width = stream.codec_context.height, stream.codec_context.width
            n = stream.frames
            if not n:  # container does not say: count by decoding
                n = sum(1 for _ in container.decode(stream))
            self.num_frames = n
            self._sar = _ratio(stream.sample_aspect_ratio)

    @property
    def sample_aspect_ratio(self) -> tuple[int, int] | None:
        """The source's pixel aspect ratio (num, den) when it is known and not square, else None
        (read with PyAV, which decord does not expose)."""
        if self._sar is False:
            self._sar = None
            if self.backend != "image":
                try:
                    import av

                    with av.open(str(self.path)) as container:
                        self._sar = _ratio(container.streams.video[0].sample_aspect_ratio)
                except Exception as e:  # noqa: BLE001 - a nicety: unknown means square
                    logger.debug("no sample aspect ratio for %s: %s", self.path, e)
        return self._sar

    # ------------------------------------------------------------------ reading
    def iter_chunks(self, chunk_size: int = 16) -> Iterator[np.ndarray]:
        """Yield consecutive frames, at most `chunk_size` at a time, as uint8 (t, H, W, 3)."""
        if self.backend == "image":
            yield self._image[None]
            return
        source = self._iter_decord(chunk_size) if self.backend == "decord" else \
            self._iter_pyav(chunk_size)
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
            yield self._vr.get_batch(idx).asnumpy()

    def _iter_pyav(self, chunk_size):
        import av

        with av.open(str(self.path)) as container:
            buf = []
            for frame in container.decode(container.streams.video[0]):
                buf.append(frame.to_ndarray(format="rgb24"))
                if len(buf) == chunk_size:
                    yield np.stack(buf)
                    buf = []
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
            return self._vr.get_batch(list(indices)).asnumpy()
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


class VideoWriter:
    """Writes uint8 RGB frames one chunk at a time with ffmpeg (H.264 by default).

    Odd sizes use 4:4:4 chroma (4:2:0 needs even sizes). `crf` 0 is lossless.
    `sample_aspect_ratio` (num, den) is written into the stream when given.
    """

    def __init__(self, path, fps: float, height: int, width: int, crf: int = 10,
                 codec: str = "libx264", sample_aspect_ratio: tuple[int, int] | None = None):
        import imageio_ffmpeg

        self.path = Path(path)
        check_output_suffix(self.path, WRITABLE_VIDEO_SUFFIXES, "a video format")
        self.size = (width, height)
        pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
        params = ["-crf", str(crf)] if codec == "libx264" else []
        if sample_aspect_ratio:
            params += ["-vf", f"setsar={sample_aspect_ratio[0]}/{sample_aspect_ratio[1]}"]
        fps_arg = float(Fraction(fps).limit_denominator(1001))
        self._gen = imageio_ffmpeg.write_frames(
            str(self.path), self.size, fps=fps_arg, codec=codec, pix_fmt_out=pix_fmt,
            macro_block_size=1, output_params=params, ffmpeg_log_level="error")
        self._gen.send(None)
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        if frames.ndim == 3:
            frames = frames[None]
        if frames.shape[1:] != (self.size[1], self.size[0], 3) or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (t, {self.size[1]}, {self.size[0]}, 3), "
                             f"got {frames.dtype} {frames.shape}")
        for f in frames:
            self._gen.send(np.ascontiguousarray(f))
        self.frames_written += len(frames)

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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


def write_video(path, frames: np.ndarray, fps: float = 24.0, crf: int = 10) -> None:
    """Write uint8 (T, H, W, 3) frames to a video file in one call."""
    with VideoWriter(path, fps, frames.shape[1], frames.shape[2], crf=crf) as writer:
        writer.write(frames)

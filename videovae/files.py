"""File-level API: encode a video file to a latent file, decode it back, reconstruct a video,
evaluate a data set.

Everything streams: frames are read in chunks, encoded with carried causal caches, decoded and
written frame by frame, so memory is bounded by the chunk, not by the video's length. Sizes that
are not multiples of 8 are padded (replicating the edge) and cropped back; frame counts that are
not 1 + 4k are padded (repeating the last frame) and trimmed back.

Nothing wrong is written: output names are checked before any work (a latent file is
`.safetensors`, a video one of the writer's containers), frame sizes that cannot fit in memory
untiled are refused up front with a hint to tile, and latents or pixels that come out NaN/Inf
(a broken model) stop the command with an error instead of a black video. Outputs are published
only when complete (`reconstruct`'s together, after every video writer has finished); a stop
signal ends the work between chunks (`runtime.check_stop`), and temporaries go with it.

`reconstruct` encodes and decodes the same chunks as `encode` then `decode`, so both give the
same pixels. Progress bars count frames the model has processed, not frames read.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
from collections import deque
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import VideoVAEError, is_out_of_memory, one_line
from .frames import pad_size
from .io.atomic import atomic_output, check_distinct_paths, check_output_path, to_json, write_json
from .io.latent_file import check_latents, load_latents, save_latents
from .io.listing import (
    LATENT_SUFFIX,
    MEDIA_SUFFIXES,
    WRITABLE_VIDEO_SUFFIXES,
    check_output_suffix,
    list_files,
)
from .io.video import VideoReader, VideoWriter, frames_to_tensor, tensor_to_frames
from .latents import denormalize_latents, normalize_latents
from .metrics import group_position_stats, psnr_per_frame, ssim_per_frame
from .models.base import TILE_SAMPLE_OVERLAP, StreamingAutoencoder
from .runtime import available_memory, check_stop, on_forced_stop, release_memory

logger = logging.getLogger(__name__)


def configure(vae: StreamingAutoencoder, chunk_frames: int | None = None,
              decode_chunk: int | None = None, tile: int | None = None,
              tile_overlap: int | None = None) -> None:
    """Set the streaming chunk lengths (None keeps the model's default) and spatial tiling
    (`tile_overlap` None: `default_tile_overlap`). Errors name the command-line option."""
    vae.set_chunk_sizes(encode_frames=chunk_frames, decode_latents=decode_chunk)
    if not tile:
        if tile_overlap is not None:
            raise VideoVAEError("--tile-overlap needs --tile (the tile size in pixels)")
        vae.disable_tiling()
        return
    r = vae.spatial_compression_ratio
    if tile < r or tile % r:
        raise VideoVAEError(f"--tile must be a positive multiple of {r} pixels (this model's "
                            f"spatial ratio), got {tile}")
    overlap = default_tile_overlap(tile, r) if tile_overlap is None else tile_overlap
    if not 0 <= overlap < tile or overlap % r:
        raise VideoVAEError(f"--tile-overlap must be a multiple of {r} pixels in 0..{tile - r} "
                            f"(below --tile {tile}), got {overlap}")
    vae.enable_tiling(tile_sample_size=tile, tile_sample_overlap=overlap)


CRF_RANGE = (0, 51)  # libx264's quality scale (0 = lossless)


def check_crf(crf: int) -> None:
    lo, hi = CRF_RANGE
    if not lo <= crf <= hi:
        raise VideoVAEError(f"--crf must be in {lo}..{hi} (H.264 quality, 0 = lossless), got {crf}")


def default_tile_overlap(tile: int, ratio: int) -> int:
    """The tile overlap used when none is given: a quarter of the tile, at most
    TILE_SAMPLE_OVERLAP (64) pixels, rounded down to a multiple of the spatial ratio."""
    return min(TILE_SAMPLE_OVERLAP, tile // 4) // ratio * ratio


def side_by_side_path(out_path) -> Path:
    """The side-by-side video `reconstruct --side-by-side` writes beside `out_path`."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}_side_by_side{out_path.suffix}")


def activation_bytes(vae: StreamingAutoencoder, height: int, width: int,
                     tile: int | None = None) -> int:
    """A lower bound of the activation memory of one streamed chunk: a conv's input and output at
    full resolution (a tile's, with tiles of `tile` pixels) and the first level's width."""
    if tile:
        height, width = min(height, tile), min(width, tile)
    frames = max(vae.encode_chunk_frames + 1,
                 vae.temporal_compression_ratio * vae.decode_chunk_latents + 1)
    channels = list(vae.config.get("block_out_channels") or [vae.config.in_channels])[0]
    itemsize = torch.finfo(vae.dtype).bits // 8
    return 2 * frames * height * width * channels * itemsize


def check_frame_size(vae: StreamingAutoencoder, height: int, width: int, path) -> None:
    """Refuse, before any work, frames whose chunk cannot fit in the free memory, naming a tile
    size that fits."""
    tile = vae.tile_sample_size if vae.use_tiling else None
    need = activation_bytes(vae, height, width, tile)
    free = available_memory(next(vae.parameters()).device)
    if free is None or need <= free:
        return
    r = vae.spatial_compression_ratio
    fits = [t for t in (1024, 512, 256, 128, 64, 32, 16, 8) if t % r == 0 and
            t < min(tile or max(height, width), max(height, width)) and
            activation_bytes(vae, height, width, t) <= free]
    hint = (f"use --tile {fits[0]} (vae.enable_tiling(tile_sample_size={fits[0]}))" if fits else
            "use smaller chunks (--chunk-frames, --decode-chunk) and tiles (--tile)")
    raise VideoVAEError(f"{path}: {width}x{height} frames need at least {_size(need)} per "
                        f"chunk, {_size(free)} is free; {hint}")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _finite(t: torch.Tensor, what: str, path) -> torch.Tensor:
    """`t` if it is all finite, else an error: the model (not the input) went wrong."""
    if not bool(torch.isfinite(t).all()):
        raise VideoVAEError(f"the model gave non-finite {what} for {path} (are its weights "
                            "finite? a diverged training run?); nothing written")
    return t


def pixel_chunks(vae, frame_chunks, on_chunk=None, transform=None):
    """Model-ready chunks (1, 3, t, H8, W8) from uint8 (t, H, W, 3) frame chunks (e.g.
    `reader.iter_chunks(vae.encode_chunk_frames)`); `transform` maps each (1, 3, t, H, W) chunk
    (e.g. resize and crop) before H, W are padded to multiples of the spatial ratio. A stop
    signal (`runtime.check_stop`) ends the stream between chunks."""
    r = vae.spatial_compression_ratio
    param = next(vae.parameters())
    for frames in frame_chunks:
        check_stop()
        release_memory()  # once per chunk: keeps RSS flat over thousands of frames
        if on_chunk is not None:
            on_chunk(frames)
        x = frames_to_tensor(frames, param.device, param.dtype)
        yield pad_size(x if transform is None else transform(x), r)


def _progress(total, desc, enabled):
    """A bar of frames processed by the model (not frames read)."""
    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=False)


def fps_text(rate) -> str:
    """A frame rate as people read it: "25 fps", "29.97 fps", and a slow rate with its period
    ("0.000278 fps (one frame every 3600 s)", not "0.000")."""
    rate = Fraction(rate)  # (a Fraction, an int, a float, or a string such as "1/3600")
    value = float(rate)
    if value >= 1:
        return f"{value:.6g} fps"
    return f"{value:.3g} fps (one frame every {float(1 / rate):.6g} s)"


@contextlib.contextmanager
def _output(path, overwrite: bool):
    """`atomic_output` whose temporary is also removed when a stop signal cuts the command
    short (`runtime.on_forced_stop`)."""
    with atomic_output(path, overwrite=overwrite) as tmp, \
            on_forced_stop(lambda: _remove_quietly(tmp)):
        yield tmp


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


@contextlib.contextmanager
def _video_writer(tmp, name, fps, height: int, width: int, crf: int, sar):
    """A `VideoWriter` into the temporary `tmp`, named `name` (the output the user gave) in its
    errors; ffmpeg is stopped if a stop signal cuts the command short."""
    with VideoWriter(tmp, fps, height, width, crf=crf, sample_aspect_ratio=sar,
                     name=name) as writer, on_forced_stop(writer.abort):
        yield writer


# ----------------------------------------------------------------------------------------------
# encode / decode


@torch.no_grad()
def encode_file(vae: StreamingAutoencoder, video_path, out_path, *, normalize: bool = False,
                sample: bool = False, seed: int = 0,
                backend: str = "auto", progress: bool = True, overwrite: bool = False) -> dict:
    """Encode a video (or image) file into a latent file; returns its metadata. The progress
    bar counts frames encoded (a chunk's frames once its latents are out)."""
    out_path = Path(out_path)
    check_output_suffix(out_path, (LATENT_SUFFIX,), "a latent file")
    check_output_path(out_path, overwrite)
    check_distinct_paths([("output", out_path)], [("input video", video_path)])
    reader = VideoReader(video_path, backend)
    check_frame_size(vae, reader.height, reader.width, video_path)
    gen = torch.Generator(device=next(vae.parameters()).device).manual_seed(seed)
    count = encoded = num_latents = 0
    latents = []
    with _output(out_path, overwrite) as tmp, \
            _progress(reader.num_frames, "encode", progress) as bar:

        def seen(frames):
            nonlocal count
            count += len(frames)

        pixels = pixel_chunks(vae, reader.iter_chunks(vae.encode_chunk_frames), seen)
        for z in vae.stream_encode(pixels,
                                   sample_posterior=sample, generator=gen):
            latents.append(_finite(z, "latents", video_path).float().cpu())
            num_latents += z.shape[2]
            # the frames these latents cover (the last chunk's padding aside)
            done = min(vae.num_decoded_frames(num_latents), count)
            bar.update(done - encoded)
            encoded = done
        z = torch.cat(latents, dim=2)
        if normalize:
            z = normalize_latents(z, vae.config)
        save_latents(tmp, z[0], vae, num_frames=count, fps=reader.fps,
                     height=reader.height, width=reader.width, normalized=normalize,
                     sample_aspect_ratio=reader.sample_aspect_ratio,
                     extra={"source": Path(video_path).name})
    logger.info("encoded %d frames of %s into latents %s", count, video_path, tuple(z.shape[1:]))
    return {"num_frames": count, "fps": reader.fps, "latent_shape": list(z.shape[1:])}


@torch.no_grad()
def decode_file(vae: StreamingAutoencoder, latent_path, out_path, *, crf: int = 10,
                progress: bool = True, overwrite: bool = False, force: bool = False) -> dict:
    """Decode a latent file into a video with the source's frame count, size, fps and sample
    aspect ratio. Latents recorded as made by other weights of this architecture are refused
    unless `force`. Returns the frame count, size, fps and `frame_rate`, the exact fraction
    written (e.g. "30000/1001", "1/3600")."""
    check_crf(crf)
    out_path = Path(out_path)
    check_output_suffix(out_path, WRITABLE_VIDEO_SUFFIXES, "a video format")
    check_output_path(out_path, overwrite)
    check_distinct_paths([("output", out_path)], [("latent file", latent_path)])
    z, meta = load_latents(latent_path)
    z = check_latents(z, meta, vae, latent_path, force=force)
    n, h, w = meta["num_frames"], meta["height"], meta["width"]
    check_frame_size(vae, h, w, latent_path)
    param = next(vae.parameters())
    z = z[None].to(param.device, param.dtype)
    if meta["normalized"]:
        z = denormalize_latents(z, meta)
    written = 0
    with _output(out_path, overwrite) as tmp, \
            _video_writer(tmp, out_path, meta["fps"], h, w, crf,
                          meta.get("sample_aspect_ratio")) as writer, \
            _progress(n, "decode", progress) as bar:
        for x in vae.stream_decode(z.split(vae.decode_chunk_latents, dim=2)):
            check_stop()
            release_memory()
            x = _finite(x[:, :, : n - written, :h, :w], "pixels", latent_path)
            frames = tensor_to_frames(x)
            writer.write(frames)
            written += len(frames)
            bar.update(len(frames))
            if written >= n:
                break
    logger.info("decoded %s into %d frames at %s (%dx%d)", latent_path, written,
                fps_text(writer.rate), w, h)
    return {"num_frames": written, "fps": meta["fps"], "frame_rate": str(writer.rate),
            "height": h, "width": w}


# ----------------------------------------------------------------------------------------------
# reconstruct


def _capped(v: float) -> float:
    return 100.0 if math.isinf(v) else float(v)


class FrameMetrics:
    """Per-frame PSNR (identical frames: 100 dB) and SSIM of streamed (original,
    reconstruction) uint8 chunks, computed one frame at a time: the float maps SSIM needs
    (about a dozen of the frame's size) never hold more than one frame, whatever the chunk
    length (a decode step gives 16 frames) or the resolution."""

    def __init__(self):
        self.psnr: list[float] = []
        self.ssim: list[float] = []

    def add(self, orig: np.ndarray, rec: np.ndarray) -> None:
        for a, b in zip(orig, rec, strict=True):
            a, b = frames_to_tensor(a[None]), frames_to_tensor(b[None])
            self.psnr.append(_capped(float(psnr_per_frame(a, b)[0, 0])))
            self.ssim.append(float(ssim_per_frame(a, b)[0, 0]))

    def report(self, ratio: int) -> dict:
        n = len(self.psnr)
        stats = group_position_stats([self.psnr], ratio)
        return {"num_frames": n, "psnr_mean": _capped(sum(self.psnr) / n),
                "ssim_mean": float(sum(self.ssim) / n), "psnr_per_frame": list(self.psnr),
                "ssim_per_frame": list(self.ssim), "psnr_per_position": stats["per_position"],
                "first_vs_rest_gap": stats["first_vs_rest_gap"]}


class _FrameQueue:
    """Frames read but not yet compared with their reconstruction (at most a chunk or two)."""

    def __init__(self):
        self.chunks: deque[np.ndarray] = deque()

    def append(self, frames: np.ndarray) -> None:
        self.chunks.append(frames)

    def take(self, n: int) -> np.ndarray | None:
        """The next `n` frames (fewer at the end), or None when none are left."""
        got = []
        while n and self.chunks:
            head = self.chunks.popleft()
            got.append(head[:n])
            if len(head) > n:
                self.chunks.appendleft(head[n:])
            n -= len(got[-1])
        return np.concatenate(got) if got else None


def _regroup(chunks, n: int):
    """Latent chunks of any lengths as consecutive pieces of exactly `n` latent frames (the last
    may be shorter): the pieces `decode_file` decodes (`z.split(n)`). Decoding the same pieces
    makes a reconstruction equal encode then decode to the bit; other boundaries change the
    float rounding, which rounding to 8 bits and x264 turn into visible differences."""
    pending, count = [], 0
    for z in chunks:
        pending.append(z)
        count += z.shape[2]
        while count >= n:
            buf = torch.cat(pending, dim=2) if len(pending) > 1 else pending[0]
            yield buf[:, :, :n]
            pending, count = [buf[:, :, n:]], count - n
    if count:
        yield torch.cat(pending, dim=2)


def _stream_reconstruction(vae, reader, sinks, on_frames=None) -> None:
    """Encode and decode `reader`'s frames in one streamed pass (the chunks `encode_file` and
    `decode_file` use); give each decoded chunk, cropped and trimmed to the source, with its
    original frames to every sink(orig, rec)."""
    h, w = reader.height, reader.width
    originals = _FrameQueue()
    pixels = pixel_chunks(vae, reader.iter_chunks(vae.encode_chunk_frames), originals.append)
    latents = (_finite(z, "latents", reader.path) for z in vae.stream_encode(pixels))
    for x in vae.stream_decode(_regroup(latents, vae.decode_chunk_latents)):
        check_stop()
        rec = tensor_to_frames(_finite(x[..., :h, :w], "pixels", reader.path))
        orig = originals.take(len(rec))
        if orig is None:  # frames decoded from the padding of the last group
            break
        rec = rec[: len(orig)]
        for sink in sinks:
            sink(orig, rec)
        if on_frames is not None:
            on_frames(len(rec))


@torch.no_grad()
def reconstruct_file(vae: StreamingAutoencoder, video_path, out_path, *, metrics_path=None,
                     side_by_side: bool = False, crf: int = 10,
                     backend: str = "auto", progress: bool = True,
                     overwrite: bool = False, on_frames=None) -> dict:
    """Encode and decode a video in one streamed pass; write the reconstruction (unless
    `out_path` is None), and optionally per-frame PSNR/SSIM (JSON) and a side-by-side video
    (input | reconstruction). The reconstruction equals `encode_file` then `decode_file` with
    the same model and options (the same chunks are encoded and decoded).

    Outputs are published together at the end, once every video writer has finished (ffmpeg's
    result checked): if any output fails, none is published. `on_frames(n)` is called as each
    decoded chunk of n frames is done (the progress bar counts the same)."""
    check_crf(crf)
    out_path = Path(out_path) if out_path is not None else None
    sbs_path = side_by_side_path(out_path) if out_path is not None and side_by_side else None
    for p in (out_path, sbs_path):
        if p is not None:
            check_output_suffix(p, WRITABLE_VIDEO_SUFFIXES, "a video format")
    outputs = [("output", out_path), ("side-by-side output", sbs_path),
               ("metrics output", Path(metrics_path) if metrics_path else None)]
    outputs = [(label, p) for label, p in outputs if p is not None]
    for _, p in outputs:
        check_output_path(p, overwrite)
    check_distinct_paths(outputs, [("input video", video_path)])
    reader = VideoReader(video_path, backend)
    h, w = reader.height, reader.width
    sar = reader.sample_aspect_ratio
    check_frame_size(vae, h, w, video_path)
    metrics = FrameMetrics()
    publish = contextlib.ExitStack()  # the outputs' temporaries, published together at the end
    try:
        metrics_tmp = publish.enter_context(_output(metrics_path, overwrite)) \
            if metrics_path else None
        with contextlib.ExitStack() as writers:  # closed (ffmpeg checked) before publishing
            sinks = [metrics.add]
            for path, width, frames in ((sbs_path, 2 * w, _side_by_side), (out_path, w, None)):
                if path is not None:
                    tmp = publish.enter_context(_output(path, overwrite))
                    writer = writers.enter_context(_video_writer(tmp, path, reader.fps, h, width,
                                                                 crf, sar))
                    sinks.append(_write_sink(writer, frames))
            bar = writers.enter_context(_progress(reader.num_frames, "reconstruct", progress))
            steps = [bar.update] + ([on_frames] if on_frames is not None else [])
            _stream_reconstruction(vae, reader, sinks, lambda n: [f(n) for f in steps])
        report = {"video": str(video_path), "fps": reader.fps, "height": h, "width": w,
                  **metrics.report(vae.temporal_compression_ratio)}
        if metrics_tmp is not None:
            _write_text(metrics_tmp, to_json(report, indent=2), metrics_path)
    except BaseException:
        _discard(publish)
        raise
    publish.close()  # every output is complete: publish them (the video first)
    logger.info("reconstructed %d frames: PSNR %.2f dB, SSIM %.4f", report["num_frames"],
                report["psnr_mean"], report["ssim_mean"])
    return report


class _Discarded(Exception):
    """Thrown into outputs' contexts to remove their temporaries (see `_discard`)."""


def _discard(outputs: contextlib.ExitStack) -> None:
    """Remove the temporaries of `outputs` without publishing any, after a failure: the failure
    itself is not passed through them, as `atomic_output` words a disk-full error with its own
    file's name, which would name another output than the one that failed."""
    with contextlib.suppress(_Discarded):
        outputs.__exit__(_Discarded, _Discarded(), None)


def _write_text(tmp: Path, text: str, name) -> None:
    """Write `text` into the temporary `tmp` of the output `name` (named in a disk-full error)."""
    try:
        tmp.write_text(text)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise VideoVAEError(f"cannot write {name}: no space left on device") from e
        raise


def _side_by_side(orig: np.ndarray, rec: np.ndarray) -> np.ndarray:
    return np.concatenate([orig, rec], axis=2)


def _write_sink(writer, frames=None):
    """A sink(orig, rec) writing `rec` (or frames(orig, rec)) with `writer`."""
    if frames is None:
        return lambda orig, rec: writer.write(rec)
    return lambda orig, rec: writer.write(frames(orig, rec))


# ----------------------------------------------------------------------------------------------
# eval


def _image_vae_psnr(vae, image_vae, path, backend) -> dict:
    from .integrations.image_vae import image_vae_psnr

    reader = VideoReader(path, backend)
    chunks = pixel_chunks(vae, reader.iter_chunks(vae.encode_chunk_frames))
    m = image_vae_psnr(vae, image_vae, chunks, size=(reader.height, reader.width))
    return {"image_vae_psnr": m["image_vae_psnr"], "latent_frames": len(m["per_latent_frame"])}


def _frame_count(path, backend: str) -> int:
    """The frames of `path` as its reader counts them; 0 if it cannot be opened (the file is
    then reported as failed when its turn comes)."""
    try:
        return VideoReader(path, backend).num_frames
    except Exception:  # noqa: BLE001 - any reader error: the evaluation says it later
        return 0


def _file_steps(bar, n: int):
    """step(k): move `bar` by k frames of a file of `n` frames, never past them; file_done():
    move it to the file's end (a failed file, or one its reader miscounted)."""
    moved = 0

    def step(k: int) -> None:
        nonlocal moved
        k = min(k, n - moved)
        if k > 0:
            bar.update(k)
            moved += k

    return step, lambda: step(n - moved)


def evaluate_files(vae: StreamingAutoencoder, data_path, out_path=None, *,
                   max_files: int | None = None, backend: str = "auto", progress: bool = True,
                   overwrite: bool = False, image_vae=None) -> dict:
    """Mean PSNR/SSIM of streamed reconstructions over every video/image under `data_path`
    (a folder or a CSV/JSONL manifest), and the PSNR per position inside the compression
    groups with the first-versus-rest gap, pooled over every frame. With an `image_vae`
    (diffusers `AutoencoderKL`), also the PSNR of each latent frame decoded by it
    (`videovae.integrations.image_vae`; CV-VAE's compatibility claim made checkable).

    A file that fails for any reason (unreadable, too large, out of memory, ...) is listed in
    the report's `failed` with its reason and the run goes on. The report is written whatever
    happens, also when the run is interrupted or stopped by a signal (`complete: false`, with
    the files done so far); it is an error when no file could be evaluated. Memory is that of
    one file's streamed reconstruction (only per-frame scores are kept); the progress bar counts
    frames over all files, as they are processed.
    """
    if max_files is not None and max_files < 1:
        raise VideoVAEError(f"--max-files must be >= 1, got {max_files}")
    files = list_files(data_path, MEDIA_SUFFIXES)[:max_files]
    if out_path is not None:
        check_output_path(Path(out_path), overwrite)
        check_distinct_paths([("report", out_path)],
                             [("data path", data_path), *(("input", f) for f in files)])
    per_file, failed, frame_psnrs = [], [], []
    done = {"complete": False, "report": None}

    def finish() -> None:  # (run by a forced stop too: then "complete" is False)
        done["report"] = _eval_report(vae, data_path, len(files), per_file, failed,
                                      frame_psnrs, done["complete"], image_vae is not None)
        if out_path is not None:
            write_json(out_path, done["report"], overwrite=overwrite)

    finished = on_forced_stop(finish)
    try:
        counts = [_frame_count(p, backend) for p in files]
        with _progress(sum(counts), "eval", progress) as bar:
            for path, n in zip(files, counts, strict=True):
                check_stop()
                step, file_done = _file_steps(bar, n)
                r = _evaluate_one(vae, path, backend, image_vae, step, failed)
                file_done()
                if r is not None:
                    frame_psnrs.append(r.pop("psnr_per_frame"))
                    per_file.append(r)
        done["complete"] = True
    finally:
        if not finished.run():  # a forced stop writes the partial report and ends the process
            check_stop()
    if not per_file:
        raise VideoVAEError(f"none of the {len(files)} files in {data_path} could be evaluated "
                            f"(first: {failed[0]['file']}: {failed[0]['error']})")
    return done["report"]


def _evaluate_one(vae, path, backend, image_vae, on_frames, failed: list) -> dict | None:
    """One file's entry of the eval report (with its per-frame PSNR), or None after adding it
    to `failed`."""
    try:
        r = reconstruct_file(vae, path, None, backend=backend, progress=False,
                             on_frames=on_frames)
        compat = _image_vae_psnr(vae, image_vae, path, backend) if image_vae is not None else {}
    except Exception as e:  # noqa: BLE001 - one file never ends the run
        failed.append({"file": str(path), "error": one_line(e)})
        logger.warning("skipping %s: %s", path, failed[-1]["error"])
        if is_out_of_memory(e) and torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None
    return {"file": str(path), "frames": r["num_frames"], "psnr": r["psnr_mean"],
            "ssim": r["ssim_mean"], "first_vs_rest_gap": r["first_vs_rest_gap"], **compat,
            "psnr_per_frame": r["psnr_per_frame"]}


def _eval_report(vae, data_path, total: int, per_file: list, failed: list, frame_psnrs: list,
                 complete: bool, with_image_vae: bool) -> dict:
    per_file = list(per_file)  # (a forced stop reads them while the main thread may add one)
    frames = sum(f["frames"] for f in per_file)
    mean = (lambda key: sum(f[key] * f["frames"] for f in per_file) / frames) if frames else \
        (lambda key: None)
    report = {"data": str(data_path), "complete": complete, "files_total": total,
              "files": len(per_file), "frames": frames, "psnr_mean": mean("psnr"),
              "ssim_mean": mean("ssim"), "per_file": per_file, "failed": list(failed)}
    stats = group_position_stats(frame_psnrs[:len(per_file)], vae.temporal_compression_ratio)
    report["psnr_per_position"] = stats["per_position"]
    report["first_vs_rest_gap"] = stats["first_vs_rest_gap"]
    n = sum(f.get("latent_frames", 0) for f in per_file)
    if with_image_vae and n:
        report["image_vae_psnr_mean"] = sum(f["image_vae_psnr"] * f["latent_frames"]
                                            for f in per_file) / n
    return report

"""File-level API: encode a video file to a latent file, decode it back, reconstruct a video,
evaluate a data set.

Everything streams: frames are read in chunks, encoded with carried causal caches, decoded and
written frame by frame, so memory is bounded by the chunk, not by the video's length. Sizes that
are not multiples of 8 are padded (replicating the edge) and cropped back; frame counts that are
not 1 + 4k are padded (repeating the last frame) and trimmed back.

Nothing wrong is written: output names are checked before any work (a latent file is
`.safetensors`, a video one of the writer's containers), frame sizes that cannot fit in memory
untiled are refused up front with a hint to tile, and latents or pixels that come out NaN/Inf
(a broken model) stop the command with an error instead of a black video.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import VideoVAEError, is_out_of_memory, one_line
from .io.atomic import atomic_output, check_output_path, to_json, write_json
from .io.latent_file import check_latents, load_latents, save_latents
from .io.listing import (LATENT_SUFFIX, MEDIA_SUFFIXES, WRITABLE_VIDEO_SUFFIXES,
                         check_output_suffix, list_files)
from .io.video import VideoReader, VideoWriter, frames_to_tensor, tensor_to_frames
from .latents import denormalize_latents, normalize_latents
from .metrics import group_position_stats, psnr_per_frame, ssim_per_frame
from .models.frames import pad_size
from .models.streaming import StreamingAutoencoder, TILE_SAMPLE_OVERLAP
from .runtime import available_memory, release_memory

logger = logging.getLogger(__name__)


def configure(vae: StreamingAutoencoder, chunk_frames: int | None = None,
              decode_chunk: int | None = None, tile: int | None = None,
              tile_overlap: int | None = None) -> None:
    """Set the streaming chunk lengths (None keeps the model's default) and spatial tiling."""
    vae.set_chunk_sizes(encode_frames=chunk_frames, decode_latents=decode_chunk)
    if tile:
        vae.enable_tiling(tile_sample_size=tile, tile_sample_overlap=TILE_SAMPLE_OVERLAP
                          if tile_overlap is None else tile_overlap)
    else:
        vae.disable_tiling()


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
    (e.g. resize and crop) before H, W are padded to multiples of the spatial ratio."""
    r = vae.spatial_compression_ratio
    param = next(vae.parameters())
    for frames in frame_chunks:
        release_memory()  # once per chunk: keeps RSS flat over thousands of frames
        if on_chunk is not None:
            on_chunk(frames)
        x = frames_to_tensor(frames, param.device, param.dtype)
        yield pad_size(x if transform is None else transform(x), r)


def _progress(total, desc, enabled):
    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=False)


# ----------------------------------------------------------------------------------------------
# encode / decode


@torch.no_grad()
def encode_file(vae: StreamingAutoencoder, video_path, out_path, *, normalize: bool = False,
                sample: bool = False, seed: int = 0,
                backend: str = "auto", progress: bool = True, overwrite: bool = False) -> dict:
    """Encode a video (or image) file into a latent file; returns its metadata."""
    out_path = Path(out_path)
    check_output_suffix(out_path, (LATENT_SUFFIX,), "a latent file")
    check_output_path(out_path, overwrite)
    reader = VideoReader(video_path, backend)
    check_frame_size(vae, reader.height, reader.width, video_path)
    gen = torch.Generator(device=next(vae.parameters()).device).manual_seed(seed)
    count = 0
    latents = []
    with atomic_output(out_path, overwrite=overwrite) as tmp, \
            _progress(reader.num_frames, "encode", progress) as bar:

        def seen(frames):
            nonlocal count
            count += len(frames)
            bar.update(len(frames))

        pixels = pixel_chunks(vae, reader.iter_chunks(vae.encode_chunk_frames), seen)
        for z in vae.stream_encode(pixels,
                                   sample_posterior=sample, generator=gen):
            latents.append(_finite(z, "latents", video_path).float().cpu())
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
                progress: bool = True,
                overwrite: bool = False) -> dict:
    """Decode a latent file into a video with the source's frame count, size, fps and sample
    aspect ratio."""
    check_output_suffix(out_path, WRITABLE_VIDEO_SUFFIXES, "a video format")
    check_output_path(Path(out_path), overwrite)
    z, meta = load_latents(latent_path)
    z = check_latents(z, meta, vae, latent_path)
    n, h, w = meta["num_frames"], meta["height"], meta["width"]
    check_frame_size(vae, h, w, latent_path)
    param = next(vae.parameters())
    z = z[None].to(param.device, param.dtype)
    if meta["normalized"]:
        z = denormalize_latents(z, meta)
    written = 0
    with atomic_output(out_path, overwrite=overwrite) as tmp, \
            VideoWriter(tmp, meta["fps"], h, w, crf=crf,
                        sample_aspect_ratio=meta.get("sample_aspect_ratio")) as writer, \
            _progress(n, "decode", progress) as bar:
        for x in vae.stream_decode(z.split(vae.decode_chunk_latents, dim=2)):
            release_memory()
            x = _finite(x[:, :, : n - written, :h, :w], "pixels", latent_path)
            frames = tensor_to_frames(x)
            writer.write(frames)
            written += len(frames)
            bar.update(len(frames))
            if written >= n:
                break
    logger.info("decoded %s into %d frames at %.3f fps (%dx%d)", latent_path, written,
                meta["fps"], w, h)
    return {"num_frames": written, "fps": meta["fps"], "height": h, "width": w}


# ----------------------------------------------------------------------------------------------
# reconstruct


def _capped(v: float) -> float:
    return 100.0 if math.isinf(v) else float(v)


@torch.no_grad()
def reconstruct_file(vae: StreamingAutoencoder, video_path, out_path, *, metrics_path=None,
                     side_by_side: bool = False, crf: int = 10,
                     backend: str = "auto", progress: bool = True,
                     overwrite: bool = False) -> dict:
    """Encode and decode a video in one streamed pass; write the reconstruction (unless
    `out_path` is None), and optionally per-frame PSNR/SSIM (JSON) and a side-by-side video
    (input | reconstruction)."""
    out_path = Path(out_path) if out_path is not None else None
    sbs_path = (out_path.with_name(f"{out_path.stem}_side_by_side{out_path.suffix}")
                if out_path is not None else None)
    videos = [p for p in (out_path, sbs_path if side_by_side else None) if p is not None]
    for p in videos:
        check_output_suffix(p, WRITABLE_VIDEO_SUFFIXES, "a video format")
    for p in [*videos, *([Path(metrics_path)] if metrics_path else [])]:
        check_output_path(p, overwrite)
    reader = VideoReader(video_path, backend)
    h, w = reader.height, reader.width
    sar = reader.sample_aspect_ratio if videos else None
    check_frame_size(vae, h, w, video_path)
    originals: deque[np.ndarray] = deque()  # read but not yet compared frames
    psnrs, ssims = [], []

    def take(n):
        got = []
        while n and originals:
            head = originals.popleft()
            got.append(head[:n])
            if len(head) > n:
                originals.appendleft(head[n:])
            n -= len(got[-1])
        return np.concatenate(got) if got else None

    with contextlib.ExitStack() as stack:
        writer = sbs = None
        if out_path is not None:
            tmp = stack.enter_context(atomic_output(out_path, overwrite=overwrite))
            writer = stack.enter_context(VideoWriter(tmp, reader.fps, h, w, crf=crf,
                                                     sample_aspect_ratio=sar))
            if side_by_side:
                sbs_tmp = stack.enter_context(atomic_output(sbs_path, overwrite=overwrite))
                sbs = stack.enter_context(VideoWriter(sbs_tmp, reader.fps, h, 2 * w, crf=crf,
                                                      sample_aspect_ratio=sar))
        metrics_tmp = (stack.enter_context(atomic_output(metrics_path, overwrite=overwrite))
                       if metrics_path else None)
        bar = stack.enter_context(_progress(reader.num_frames, "reconstruct", progress))
        pixels = pixel_chunks(vae, reader.iter_chunks(vae.encode_chunk_frames), originals.append)
        latents = (_finite(z, "latents", video_path) for z in vae.stream_encode(pixels))
        for x in vae.stream_decode(latents):
            rec = tensor_to_frames(_finite(x[..., :h, :w], "pixels", video_path))
            orig = take(len(rec))
            if orig is None:  # frames decoded from the padding of the last group
                break
            rec = rec[: len(orig)]
            if writer is not None:
                writer.write(rec)
            if sbs is not None:
                sbs.write(np.concatenate([orig, rec], axis=2))
            a, b = frames_to_tensor(orig), frames_to_tensor(rec)
            psnrs += psnr_per_frame(a, b)[0].tolist()
            ssims += ssim_per_frame(a, b)[0].tolist()
            bar.update(len(rec))
        report = {
            "video": str(video_path), "num_frames": len(psnrs), "fps": reader.fps,
            "height": h, "width": w,
            "psnr_mean": _capped(sum(map(_capped, psnrs)) / len(psnrs)),
            "ssim_mean": float(sum(ssims) / len(ssims)),
            "psnr_per_frame": [_capped(p) for p in psnrs], "ssim_per_frame": ssims,
        }
        stats = group_position_stats([report["psnr_per_frame"]], vae.temporal_compression_ratio)
        report["psnr_per_position"] = stats["per_position"]
        report["first_vs_rest_gap"] = stats["first_vs_rest_gap"]
        if metrics_tmp is not None:
            metrics_tmp.write_text(to_json(report, indent=2))
    logger.info("reconstructed %d frames: PSNR %.2f dB, SSIM %.4f", len(psnrs),
                report["psnr_mean"], report["ssim_mean"])
    return report


def _image_vae_psnr(vae, image_vae, path, backend) -> dict:
    from .integrations.image_vae import image_vae_psnr

    reader = VideoReader(path, backend)
    chunks = pixel_chunks(vae, reader.iter_chunks(vae.encode_chunk_frames))
    m = image_vae_psnr(vae, image_vae, chunks, size=(reader.height, reader.width))
    return {"image_vae_psnr": m["image_vae_psnr"], "latent_frames": len(m["per_latent_frame"])}


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
    happens, also when the run is interrupted (`complete: false`); it is an error when no file
    could be evaluated.
    """
    files = list_files(data_path, MEDIA_SUFFIXES)[:max_files]
    if out_path is not None:
        check_output_path(Path(out_path), overwrite)
    per_file, failed, frame_psnrs = [], [], []
    complete = False
    try:
        for path in tqdm(files, desc="eval", unit="file", disable=not progress):
            try:
                r = reconstruct_file(vae, path, None, backend=backend, progress=False)
                compat = (_image_vae_psnr(vae, image_vae, path, backend)
                          if image_vae is not None else {})
            except Exception as e:  # noqa: BLE001 - one file never ends the run
                failed.append({"file": str(path), "error": one_line(e)})
                logger.warning("skipping %s: %s", path, failed[-1]["error"])
                if is_out_of_memory(e) and torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            per_file.append({"file": str(path), "frames": r["num_frames"],
                             "psnr": r["psnr_mean"], "ssim": r["ssim_mean"],
                             "first_vs_rest_gap": r["first_vs_rest_gap"], **compat})
            frame_psnrs.append(r["psnr_per_frame"])
        complete = True
    finally:
        report = _eval_report(data_path, len(files), per_file, failed, complete)
        stats = group_position_stats(frame_psnrs, vae.temporal_compression_ratio)
        report["psnr_per_position"] = stats["per_position"]
        report["first_vs_rest_gap"] = stats["first_vs_rest_gap"]
        n = sum(f.get("latent_frames", 0) for f in per_file)
        if image_vae is not None and n:
            report["image_vae_psnr_mean"] = sum(f["image_vae_psnr"] * f["latent_frames"]
                                                for f in per_file) / n
        if out_path is not None:
            write_json(out_path, report, overwrite=overwrite)
    if not per_file:
        raise VideoVAEError(f"none of the {len(files)} files in {data_path} could be evaluated "
                            f"(first: {failed[0]['file']}: {failed[0]['error']})")
    return report


def _eval_report(data_path, total: int, per_file: list, failed: list, complete: bool) -> dict:
    frames = sum(f["frames"] for f in per_file)
    mean = (lambda key: sum(f[key] * f["frames"] for f in per_file) / frames) if frames else \
        (lambda key: None)
    return {"data": str(data_path), "complete": complete, "files_total": total,
            "files": len(per_file), "frames": frames, "psnr_mean": mean("psnr"),
            "ssim_mean": mean("ssim"), "per_file": per_file, "failed": failed}

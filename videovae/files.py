"""File-level API: encode a video file to a latent file, decode it back, reconstruct a video,
evaluate a data set.

Everything streams: frames are read in chunks, encoded with carried causal caches, decoded and
written frame by frame, so memory is bounded by the chunk, not by the video's length. Sizes that
are not multiples of 8 are padded (replicating the edge) and cropped back; frame counts that are
not 1 + 4k are padded (repeating the last frame) and trimmed back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections import deque
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import VideoVAEError
from .io.atomic import atomic_output
from .io.latent_file import check_compatible, load_latents, save_latents
from .io.listing import MEDIA_SUFFIXES, list_files
from .io.video import VideoReader, VideoWriter, frames_to_tensor, tensor_to_frames
from .latents import denormalize_latents, normalize_latents
from .metrics import psnr_per_frame, ssim_per_frame
from .models.frames import num_latent_frames, pad_size
from .models.streaming import StreamingAutoencoder, TILE_SAMPLE_OVERLAP
from .runtime import release_memory

logger = logging.getLogger(__name__)


def configure(vae: StreamingAutoencoder, chunk_frames: int | None = None,
              decode_chunk: int | None = None, tile: int | None = None,
              tile_overlap: int = TILE_SAMPLE_OVERLAP) -> None:
    """Set the streaming chunk lengths (None keeps the model's default) and spatial tiling."""
    vae.set_chunk_sizes(encode_frames=chunk_frames, decode_latents=decode_chunk)
    if tile:
        vae.enable_tiling(tile_sample_size=tile, tile_sample_overlap=tile_overlap)
    else:
        vae.disable_tiling()


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
    reader = VideoReader(video_path, backend)
    out_path = Path(out_path)
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
            latents.append(z.float().cpu())
        z = torch.cat(latents, dim=2)
        if normalize:
            z = normalize_latents(z, vae.config)
        save_latents(tmp, z[0], vae, num_frames=count, fps=reader.fps,
                     height=reader.height, width=reader.width, normalized=normalize,
                     extra={"source": Path(video_path).name})
    logger.info("encoded %d frames of %s into latents %s", count, video_path, tuple(z.shape[1:]))
    return {"num_frames": count, "fps": reader.fps, "latent_shape": list(z.shape[1:])}


@torch.no_grad()
def decode_file(vae: StreamingAutoencoder, latent_path, out_path, *, crf: int = 10,
                progress: bool = True,
                overwrite: bool = False) -> dict:
    """Decode a latent file into a video with the source's frame count, size and fps."""
    z, meta = load_latents(latent_path)
    check_compatible(meta, vae, latent_path)
    if z.ndim == 5:
        if z.shape[0] != 1:
            raise VideoVAEError(f"{latent_path} holds a batch of {z.shape[0]} videos; decode them "
                             "one file at a time")
        z = z[0]
    if z.shape[0] != vae.config.latent_channels:
        raise VideoVAEError(f"{latent_path} has {z.shape[0]} latent channels, the model "
                         f"{vae.config.latent_channels}")
    param = next(vae.parameters())
    z = z[None].to(param.device, param.dtype)
    if meta["normalized"]:
        z = denormalize_latents(z, meta)
    n, h, w = meta["num_frames"], meta["height"], meta["width"]
    if z.shape[2] != num_latent_frames(n, vae.temporal_compression_ratio):
        raise VideoVAEError(f"{latent_path}: {z.shape[2]} latent frames do not fit num_frames={n}")
    written = 0
    with atomic_output(out_path, overwrite=overwrite) as tmp, \
            VideoWriter(tmp, meta["fps"], h, w, crf=crf) as writer, \
            _progress(n, "decode", progress) as bar:
        for x in vae.stream_decode(z.split(vae.decode_chunk_latents, dim=2)):
            release_memory()
            frames = tensor_to_frames(x[:, :, : n - written, :h, :w])
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


def _finite(v: float) -> float:
    return 100.0 if math.isinf(v) else float(v)


@torch.no_grad()
def reconstruct_file(vae: StreamingAutoencoder, video_path, out_path, *, metrics_path=None,
                     side_by_side: bool = False, crf: int = 10,
                     backend: str = "auto", progress: bool = True,
                     overwrite: bool = False) -> dict:
    """Encode and decode a video in one streamed pass; write the reconstruction (unless
    `out_path` is None), and optionally per-frame PSNR/SSIM (JSON) and a side-by-side video
    (input | reconstruction)."""
    reader = VideoReader(video_path, backend)
    h, w = reader.height, reader.width
    out_path = Path(out_path) if out_path is not None else None
    sbs_path = (out_path.with_name(f"{out_path.stem}_side_by_side{out_path.suffix}")
                if out_path is not None else None)
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
            writer = stack.enter_context(VideoWriter(tmp, reader.fps, h, w, crf=crf))
            if side_by_side:
                sbs_tmp = stack.enter_context(atomic_output(sbs_path, overwrite=overwrite))
                sbs = stack.enter_context(VideoWriter(sbs_tmp, reader.fps, h, 2 * w, crf=crf))
        metrics_tmp = (stack.enter_context(atomic_output(metrics_path, overwrite=overwrite))
                       if metrics_path else None)
        bar = stack.enter_context(_progress(reader.num_frames, "reconstruct", progress))
        pixels = pixel_chunks(vae, reader.iter_chunks(vae.encode_chunk_frames), originals.append)
        for x in vae.stream_decode(vae.stream_encode(pixels)):
            rec = tensor_to_frames(x[..., :h, :w])
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
            "psnr_mean": _finite(sum(map(_finite, psnrs)) / len(psnrs)),
            "ssim_mean": float(sum(ssims) / len(ssims)),
            "psnr_per_frame": [_finite(p) for p in psnrs], "ssim_per_frame": ssims,
        }
        if metrics_tmp is not None:
            metrics_tmp.write_text(json.dumps(report, indent=2))
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
    (a folder or a CSV/JSONL manifest). Unreadable files are listed, not fatal. With an
    `image_vae` (diffusers `AutoencoderKL`), also the PSNR of each latent frame decoded by it
    (`videovae.integrations.image_vae`)."""
    files = list_files(data_path, MEDIA_SUFFIXES)[:max_files]
    per_file, failed = [], []
    for path in tqdm(files, desc="eval", unit="file", disable=not progress):
        try:
            r = reconstruct_file(vae, path, None, backend=backend, progress=False)
            row = {"file": str(path), "frames": r["num_frames"], "psnr": r["psnr_mean"],
                   "ssim": r["ssim_mean"]}
            if image_vae is not None:
                row.update(_image_vae_psnr(vae, image_vae, path, backend))
        except (ValueError, OSError) as e:
            failed.append({"file": str(path), "error": str(e).splitlines()[0]})
            logger.warning("skipping %s: %s", path, failed[-1]["error"])
            continue
        per_file.append(row)
    if not per_file:
        raise VideoVAEError(f"no readable videos in {data_path}")
    frames = sum(f["frames"] for f in per_file)
    report = {"data": str(data_path), "files": len(per_file), "frames": frames,
              "psnr_mean": sum(f["psnr"] * f["frames"] for f in per_file) / frames,
              "ssim_mean": sum(f["ssim"] * f["frames"] for f in per_file) / frames,
              "per_file": per_file, "failed": failed}
    if image_vae is not None:
        n = sum(f["latent_frames"] for f in per_file)
        report["image_vae_psnr_mean"] = sum(f["image_vae_psnr"] * f["latent_frames"]
                                            for f in per_file) / n
    if out_path is not None:
        with atomic_output(out_path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    return report

"""`videovae extract`: the latents of a whole data set, on one process or many (run it under
`accelerate launch` or `torchrun`; Accelerate's process group does the rest).

Work is split into shards of consecutive files of the (sorted) listing, of at most `shard_items`
files each and at least as many shards as processes (while there are files), sizes differing by
at most one; shard k is done by rank k % world_size. The layout is fixed by the first run (in
meta.json), so a resume on any number of processes continues it. The latents do not depend on
the process count, only (by float rounding, about 1e-5) on torch's threads per process: fix them
(`threads`) for identical bytes.
Each file is stream-encoded (bounded memory at any length), whole or in fixed-length windows,
optionally resized and cropped to the nearest resolution bucket.

Output folder:
    meta.json                       what makes the extraction (model class, config and weights
                                    hashes, dtype, tiling, the data's file list, options,
                                    normalization) and its shard count; a resume must match it
    shards/shard-00000.safetensors  tensors "<key>/latents" (Z, T', h, w) and, with
                                    `moments`, "<key>/std" (the posterior std, same space)
    shards/shard-00000.failures.jsonl   files of the shard that could not be used, and why
    shards/shard-00000.jsonl        the shard's index rows; written last: a shard is complete
                                    exactly when this file exists
    index.jsonl, failures.jsonl, summary.json   merged by rank 0 at the end
Index rows name their shard relative to the output folder and their source file by its
absolute path. A rerun skips complete shards and redoes the others, so a killed run resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.transforms import resize_crop
from .errors import VideoVAEError
from .files import pixel_chunks
from .io.atomic import atomic_output, write_json
from .io.latent_file import config_hash, weights_hash
from .io.listing import MEDIA_SUFFIXES, list_files
from .io.video import VideoReader
from .latents import ABSORB_KEY, normalize_latents, offset_and_gain

logger = logging.getLogger(__name__)

FORMAT = "videovae-extract-v1"


@dataclass
class ExtractOptions:
    window_frames: int | None = None  # 1 + r*k frames per window; None: whole files
    window_stride: int | None = None  # frames between window starts (default: window_frames)
    frame_buckets: list[int] = field(default_factory=list)  # whole files: trim to the largest
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (h, w) resolution buckets
    normalize: bool = False  # store latents as the diffusion model sees them
    moments: bool = False  # also store the posterior std
    shard_items: int = 16  # files per shard
    backend: str = "auto"  # video reader

    def check(self, temporal_ratio: int) -> None:
        counts = ([self.window_frames] if self.window_frames else []) + list(self.frame_buckets)
        bad = [n for n in counts if n < 1 or (n - 1) % temporal_ratio]
        if bad:
            raise VideoVAEError(f"window and bucket frame counts must be 1 + {temporal_ratio}k, "
                                f"got {bad}")
        if self.window_frames and self.frame_buckets:
            raise VideoVAEError("use either windows or frame buckets, not both")
        if self.window_stride is not None and self.window_stride < 1:
            raise VideoVAEError("window stride must be >= 1")
        if self.shard_items < 1:
            raise VideoVAEError("shard_items must be >= 1")
        if any(h < 1 or w < 1 for h, w in self.sizes):
            raise VideoVAEError(f"resolution buckets must be positive, got {self.sizes}")


def frame_ranges(num_frames: int, opts: ExtractOptions) -> list[tuple[int, int]]:
    """The [start, stop) frame ranges to encode from a file of `num_frames` frames."""
    if opts.window_frames:
        n, step = opts.window_frames, opts.window_stride or opts.window_frames
        return [(a, a + n) for a in range(0, num_frames - n + 1, step)]
    if opts.frame_buckets:
        fits = [b for b in opts.frame_buckets if b <= num_frames]
        return [(0, max(fits))] if fits else []
    return [(0, num_frames)]


def nearest_bucket(height: int, width: int, sizes) -> tuple[int, int] | None:
    """The (h, w) bucket closest in aspect ratio (log scale) to a height x width frame."""
    if not sizes:
        return None
    return min(sizes, key=lambda s: (abs(math.log((s[1] / s[0]) / (width / height))), s))


def bucket_transform(size):
    """(1, 3, t, H, W) -> resized to cover `size` (h, w) and center-cropped; None: identity."""
    if size is None:
        return None
    rng = np.random.default_rng(0)  # center crop: the generator is never drawn from

    def transform(x):  # (1, 3, t, H, W) -> (1, 3, t, h, w)
        return resize_crop(x[0].transpose(0, 1), size, rng, False, False).transpose(0, 1)[None]

    return transform


def data_identity(data_path, files: list[Path]) -> dict:
    """What makes two listings one data set, whatever the data path is called (`data`,
    `./data/`, its absolute path): every file's path relative to the folder (for a manifest: to
    the manifest's folder; absolute when outside it) and its size, hashed; and their number."""
    data_path = Path(data_path)
    base = data_path if data_path.is_dir() else data_path.parent
    h = hashlib.sha256()
    for path in files:
        try:
            name = path.relative_to(base).as_posix()
        except ValueError:
            name = os.path.abspath(path)
        try:
            size = path.stat().st_size
        except OSError:
            size = None
        h.update((json.dumps([name, size]) + "\n").encode())
    return {"files": len(files), "files_hash": h.hexdigest()[:16]}


def tiling_identity(vae) -> dict | None:
    """The spatial tiling latents were made with (it changes them slightly); None: untiled."""
    if not vae.use_tiling:
        return None
    return {"tile": vae.tile_sample_size, "overlap": vae.tile_sample_overlap}


def shard_count(num_files: int, shard_items: int, processes: int) -> int:
    """Shards of at most `shard_items` files, and at least one per process while there are
    files (so no process idles on a small data set)."""
    return max(-(-num_files // shard_items), min(num_files, processes))


def shard_range(k: int, num_files: int, num_shards: int) -> range:
    """The listing indices of shard k's files (consecutive; sizes differ by at most one)."""
    return range(k * num_files // num_shards, (k + 1) * num_files // num_shards)


# meta.json fields a resume must match, and how a mismatch is said
_MISSING = object()
_IDENTITY = ("format", "model_class", "config_hash", "weights_hash", "dtype", "tiling", "data",
             "options", "normalization")


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return " ".join(f"{k} {_show(v)}" for k, v in value.items())
    return str(value)


def _difference(key: str, have, mine) -> str:
    """One phrase: what differs between the extraction in the folder (`have`) and this run."""
    if have is _MISSING or (key == "data" and not isinstance(have, dict)):
        what = "data file list" if key == "data" else key.replace("_", " ")
        return f"no {what} recorded (made by an older videovae)"
    if key == "data":
        if have.get("files") != mine["files"]:
            return (f"other data ({mine['files']} files now, {have.get('files')} when it "
                    "started)")
        return "other data (the same number of files, but other names or sizes)"
    if key == "options" and isinstance(have, dict):
        changed = [f"{k} {_show(have.get(k))} -> {_show(v)}" for k, v in mine.items()
                   if have.get(k) != v]
        return f"other options ({', '.join(changed)})"
    if key in ("config_hash", "weights_hash"):
        what = "another model config" if key == "config_hash" else "other model weights"
        return f"{what} ({key.replace('_', ' ')} {str(have)[:16]}, now {str(mine)[:16]})"
    if key == "normalization":
        return "another normalization (the model's scaling, shift, mean or std)"
    return f"another {key.replace('_', ' ')} ({_show(have)} -> {_show(mine)})"


class Extractor:
    """Encodes the shards of one rank; see the module docstring for the output layout."""

    def __init__(self, vae, data_path, out_dir, opts: ExtractOptions, accelerator):
        self.vae, self.opts, self.acc = vae, opts, accelerator
        self.out, self.data_path = Path(out_dir), data_path
        opts.check(vae.temporal_compression_ratio)
        self.files = list_files(data_path, MEDIA_SUFFIXES)
        self.num_shards = shard_count(len(self.files), opts.shard_items, accelerator.num_processes)
        self.meta = {"format": FORMAT, "model_class": type(vae).__name__,
                     "config_hash": config_hash(vae), "weights_hash": weights_hash(vae),
                     "dtype": str(next(vae.parameters()).dtype).removeprefix("torch."),
                     "tiling": tiling_identity(vae),
                     "data": data_identity(data_path, self.files),
                     "data_path": os.path.abspath(data_path),  # where it was (not compared)
                     "num_items": len(self.files), "num_shards": self.num_shards,
                     "options": json.loads(json.dumps(dataclasses.asdict(opts))),
                     "normalization": {k: vae.config.get(k) for k in (
                         "scaling_factor", "shift_factor", "latents_mean", "latents_std",
                         ABSORB_KEY)}}

    # ------------------------------------------------------------------ files
    def shard_path(self, k: int, suffix: str) -> Path:
        return self.out / "shards" / f"shard-{k:05d}{suffix}"

    def shard_items(self, k: int) -> range:
        return shard_range(k, len(self.files), self.num_shards)

    def is_complete(self, k: int) -> bool:
        return self.shard_path(k, ".jsonl").is_file()

    def prepare_output(self) -> None:
        """Rank 0 writes meta.json (or checks the existing one); every rank checks it and takes
        its shard layout (fixed by the first run, whatever the process count of this one)."""
        meta_path = self.out / "meta.json"
        if self.acc.is_main_process:
            (self.out / "shards").mkdir(parents=True, exist_ok=True)
            if not meta_path.is_file():
                write_json(meta_path, self.meta)
        self.acc.wait_for_everyone()
        try:
            have = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise VideoVAEError(f"{meta_path} is unreadable ({e}); write to a new folder") from e
        if not isinstance(have, dict):
            raise VideoVAEError(f"{meta_path} is not a JSON object; write to a new folder")
        diffs = [_difference(key, have.get(key, _MISSING), self.meta[key]) for key in _IDENTITY
                 if have.get(key, _MISSING) != self.meta[key]]
        if diffs:
            raise VideoVAEError(f"{self.out} holds an extraction with {'; '.join(diffs)}: "
                                "resume with the same model, data and options, or write to a "
                                "new folder")
        shards = have.get("num_shards", -(-len(self.files) // self.opts.shard_items))
        if not isinstance(shards, int) or not 1 <= shards <= max(1, len(self.files)):
            raise VideoVAEError(f"{meta_path}: num_shards={shards!r} does not fit "
                                f"{len(self.files)} files; write to a new folder")
        self.num_shards = shards

    # ------------------------------------------------------------------ one item
    @torch.no_grad()
    def _encode(self, reader, start, stop, transform):
        frames = 0

        def seen(chunk):
            nonlocal frames
            frames += len(chunk)

        chunks = reader.iter_range(start, stop, self.vae.encode_chunk_frames)
        posts = list(self.vae.stream_posterior(pixel_chunks(self.vae, chunks, seen, transform)))
        mean = torch.cat([p.mean for p in posts], dim=2)[0].float().cpu()
        std = torch.cat([p.std for p in posts], dim=2)[0].float().cpu()
        if not torch.isfinite(mean).all():
            raise VideoVAEError("the model gave non-finite latents")
        return mean, std, frames

    def _item(self, i: int, path: Path, tensors: dict, rows: list) -> int:
        """Encode every range of file i into tensors/rows; returns frames encoded."""
        reader = VideoReader(path, self.opts.backend)
        ranges = frame_ranges(reader.num_frames, self.opts)
        if not ranges:
            raise VideoVAEError(f"{reader.num_frames} frames: shorter than every window/bucket")
        size = nearest_bucket(reader.height, reader.width, self.opts.sizes)
        h, w = size or (reader.height, reader.width)
        total = 0
        for j, (a, b) in enumerate(ranges):
            mean, std, n = self._encode(reader, a, b, bucket_transform(size))
            total += n
            if self.opts.normalize:
                mean = normalize_latents(mean[None], self.vae.config)[0]
                std = (std[None] * abs(offset_and_gain(self.vae.config, std[None])[1]))[0]
            key = f"{i:07d}-{j:04d}"
            tensors[f"{key}/latents"] = mean.contiguous()
            if self.opts.moments:
                tensors[f"{key}/std"] = std.contiguous()
            rows.append({"key": key, "item": i, "window": j, "source": str(path),
                         "start": a, "stop": a + n, "num_frames": n, "fps": reader.fps,
                         "height": h, "width": w, "source_height": reader.height,
                         "source_width": reader.width, "latent_shape": list(mean.shape),
                         "config_hash": self.meta["config_hash"],
                         "normalized": self.opts.normalize, "has_std": self.opts.moments})
        return total

    # ------------------------------------------------------------------ one shard
    def run_shard(self, k: int) -> tuple[int, int]:
        """Encode shard k and write it; returns (items done, frames encoded)."""
        from safetensors.torch import save_file

        items = self.shard_items(k)
        tensors, rows, failures, frames = {}, [], [], 0
        for i in items:
            path = Path(os.path.abspath(self.files[i]))  # what any reader of the index opens
            try:
                frames += self._item(i, path, tensors, rows)
            except (VideoVAEError, OSError, RuntimeError, ValueError) as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                failures.append({"item": i, "source": str(path), "error": reason})
                logger.warning("skipping %s: %s", path, reason)
                tensors = {key: v for key, v in tensors.items() if not key.startswith(f"{i:07d}-")}
                rows = [r for r in rows if r["item"] != i]
        shard_file = self.shard_path(k, ".safetensors")
        if tensors:
            with atomic_output(shard_file, overwrite=True) as tmp:
                save_file(tensors, str(tmp), metadata={"format": FORMAT})
        for row in rows:
            row["shard"] = str(shard_file.relative_to(self.out))
        _write_jsonl(self.shard_path(k, ".failures.jsonl"), failures)
        _write_jsonl(self.shard_path(k, ".jsonl"), rows)  # last: marks the shard complete
        return len(items), frames

    # ------------------------------------------------------------------ the whole run
    def run(self, progress: bool = True) -> dict:
        acc = self.acc
        self.prepare_output()
        t0 = time.perf_counter()
        rank, world = acc.process_index, acc.num_processes
        bar = tqdm(total=len(self.files), desc="extract", unit="item",
                   disable=not (progress and acc.is_main_process))
        done = torch.zeros(2, dtype=torch.float64)  # items, frames (all ranks)
        for r in range(-(-self.num_shards // world)):
            k = r * world + rank
            items = frames = 0
            if k < self.num_shards:
                if self.is_complete(k):
                    items = len(self.shard_items(k))
                else:
                    items, frames = self.run_shard(k)
            step = acc.reduce(torch.tensor([items, frames], dtype=torch.float64,
                                            device=acc.device), reduction="sum").cpu()
            done += step
            elapsed = time.perf_counter() - t0
            bar.update(int(step[0]))
            bar.set_postfix(frames_per_s=f"{done[1] / elapsed:.1f}")
        bar.close()
        acc.wait_for_everyone()
        summary = self.merge(time.perf_counter() - t0) if acc.is_main_process else None
        written = torch.tensor([0 if summary is None else summary["windows"]],
                               device=acc.device)
        if acc.reduce(written, reduction="sum").item() == 0:
            raise VideoVAEError(f"nothing could be read from {self.data_path}: see "
                                f"{self.out / 'failures.jsonl'}")
        return summary

    def merge(self, seconds: float) -> dict:
        """Rank 0: index.jsonl and failures.jsonl from the shards, and summary.json."""
        rows, failures = [], []
        for k in range(self.num_shards):
            rows += _read_jsonl(self.shard_path(k, ".jsonl"))
            failures += _read_jsonl(self.shard_path(k, ".failures.jsonl"))
        _write_jsonl(self.out / "index.jsonl", rows)
        _write_jsonl(self.out / "failures.jsonl", failures)
        summary = {"items": len(self.files), "failed_items": len(failures),
                   "windows": len(rows), "frames": sum(r["num_frames"] for r in rows),
                   "shards": self.num_shards, "processes": self.acc.num_processes,
                   "seconds": round(seconds, 3)}
        write_json(self.out / "summary.json", summary)
        return summary


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to `threads` for the block (None: left as they are)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise VideoVAEError(f"threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def extract_with(vae, data_path, out_dir, opts: ExtractOptions, *, threads: int | None = None,
                 progress: bool = True) -> dict:
    """Extract with a loaded (and configured) model on this process's share of the work."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=not torch.cuda.is_available())
    with torch_threads(threads):
        summary = Extractor(vae, data_path, out_dir, opts, acc).run(progress)
    if summary is not None:
        logger.info("extracted %d windows (%d frames) from %d files in %.1f s on %d process(es);"
                    " %d files failed", summary["windows"], summary["frames"], summary["items"],
                    summary["seconds"], acc.num_processes, summary["failed_items"])
    return summary


def run_extract(model_dir, data_path, out_dir, opts: ExtractOptions, *, dtype=torch.float32,
                chunk_frames: int | None = None, tile: int | None = None,
                tile_overlap: int | None = None, threads: int | None = None,
                progress: bool = True) -> dict:
    """Extract on this process's share of the work (one process, or one of many started by
    `accelerate launch` / `torchrun`); returns the summary (on rank 0; None elsewhere).
    `threads`: torch's threads per process (None: torch's default); runs with the same value
    give identical bytes whatever their process count."""
    from accelerate import PartialState

    from .files import configure
    from .models import load_model

    vae = load_model(model_dir, PartialState(cpu=not torch.cuda.is_available()).device, dtype)
    configure(vae, chunk_frames=chunk_frames, tile=tile, tile_overlap=tile_overlap)
    return extract_with(vae, data_path, out_dir, opts, threads=threads, progress=progress)

"""The `videovae` command line (also `python -m videovae`).

Parsing, `--help` and the checks of options, inputs and outputs run before the model loads, and
mostly before torch and diffusers are imported (each command imports what it needs), so mistakes
are reported in a fraction of a second: option ranges, inputs (regular files whose header opens,
data paths that list files), model names, and outputs (suffixes, existing folders, existing
files without --overwrite, and no output that is an input or another output). Every failure is
one line on stderr and a non-zero exit. SIGINT (Ctrl-C, exit 130) and SIGTERM (exit 143) stop
any command within a few seconds, even in the middle of a long native step
(`videovae.runtime.stop_on_signals`): no temporary file is left behind, nothing half-written is
published, and `eval` writes its partial report.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from . import __version__
from .errors import VideoVAEError, one_line
from .runtime import Terminated, stop_exit_code, stop_message, stop_on_signals, stop_requested

logger = logging.getLogger("videovae")

# Defaults shown in --help without importing the models (tests/test_cli.py checks them against
# videovae.models.base and videovae.latents).
HELP_DEFAULTS = {"chunk_frames": 16, "decode_chunk": 4, "tile_overlap": 64}
IMAGE_VAE_TYPES = ("flux", "sd", "sd3", "sdxl")


# ----------------------------------------------------------------------------------------------
# Commands


def cmd_inflate(args) -> None:
    from .config import apply_overrides, load_yaml
    from .convert import inflate_image_vae
    from .io.atomic import atomic_output
    from .training.config import split_model_config

    overrides = {}
    if args.config:
        data = load_yaml(args.config)
        overrides = data.get("model", data)
    apply_overrides(overrides, args.overrides)
    if args.arch:  # else the config's model.arch, else cv
        overrides["arch"] = args.arch
    arch, overrides = split_model_config(overrides, args.config or "overrides")
    with atomic_output(args.output, is_dir=True, overwrite=args.overwrite) as tmp:
        vae = inflate_image_vae(args.image_vae, arch=arch, image_vae_type=args.image_vae_type,
                                **overrides)
        vae.save_pretrained(tmp)
    n = sum(p.numel() for p in vae.parameters())
    print(f"wrote {args.output}: arch {arch}, {n / 1e6:.1f}M parameters, latent_channels="
          f"{vae.config.latent_channels}, compression {vae.temporal_compression_ratio}x"
          f"{vae.spatial_compression_ratio}x{vae.spatial_compression_ratio}, "
          f"scaling_factor={vae.config.scaling_factor}, shift_factor={vae.config.shift_factor}")


def _load(args):
    from .files import configure
    from .models.registry import load_model
    from .runtime import pick_device, pick_dtype

    vae = load_model(args.model, pick_device(args.device), pick_dtype(args.dtype))
    configure(vae, chunk_frames=getattr(args, "chunk_frames", None),
              decode_chunk=args.decode_chunk, tile=args.tile, tile_overlap=args.tile_overlap)
    return vae


def cmd_encode(args) -> None:
    from .files import encode_file

    info = encode_file(_load(args), args.video, args.output, normalize=args.normalize,
                       sample=args.sample, backend=args.backend,
                       progress=not args.no_progress, overwrite=args.overwrite)
    print(f"wrote {args.output}: {info['num_frames']} frames -> latents "
          f"{tuple(info['latent_shape'])}")


def cmd_decode(args) -> None:
    from .files import decode_file, fps_text
    from .io.latent_file import read_latent_metadata

    read_latent_metadata(args.latents)  # a broken file is said before the model loads
    info = decode_file(_load(args), args.latents, args.output, crf=args.crf,
                       progress=not args.no_progress, overwrite=args.overwrite, force=args.force)
    print(f"wrote {args.output}: {info['num_frames']} frames, {info['width']}x{info['height']} "
          f"at {fps_text(info['frame_rate'])}")


def cmd_reconstruct(args) -> None:
    from .files import reconstruct_file

    report = reconstruct_file(_load(args), args.video, args.output, metrics_path=args.metrics,
                              side_by_side=args.side_by_side, crf=args.crf, backend=args.backend,
                              progress=not args.no_progress, overwrite=args.overwrite)
    print(f"wrote {args.output}: {report['num_frames']} frames, PSNR {report['psnr_mean']:.2f} dB"
          f", SSIM {report['ssim_mean']:.4f}")


def cmd_eval(args) -> None:
    from .files import evaluate_files

    vae = _load(args)
    image_vae = None
    if args.image_vae:
        from .convert import load_image_vae

        image_vae, _ = load_image_vae(args.image_vae, args.image_vae_type)
        image_vae.to(next(vae.parameters()).device)
    report = evaluate_files(vae, args.data, args.output, max_files=args.max_files,
                            backend=args.backend, progress=not args.no_progress,
                            overwrite=args.overwrite, image_vae=image_vae)
    failed = f", {len(report['failed'])} failed (listed in the report)" if report["failed"] else ""
    compat = (f", image VAE decoding our latents: PSNR {report['image_vae_psnr_mean']:.2f} dB"
              if image_vae is not None else "")
    print(f"{report['files']} files, {report['frames']} frames: PSNR {report['psnr_mean']:.2f} "
          f"dB, SSIM {report['ssim_mean']:.4f}{compat}{failed}" +
          (f"; wrote {args.output}" if args.output else ""))


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 256x448), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1 pixel, got {text!r}")
    return h, w


def cmd_extract(args) -> None:
    from .extract import ExtractOptions, run_extract
    from .runtime import pick_dtype

    opts = ExtractOptions(window_frames=args.window_frames, window_stride=args.window_stride,
                          frame_buckets=args.frame_buckets or [], sizes=args.size or [],
                          normalize=args.normalize, moments=args.moments,
                          shard_items=args.shard_items, backend=args.backend)
    summary = run_extract(args.model, args.data, args.output, opts, dtype=pick_dtype(args.dtype),
                          chunk_frames=args.chunk_frames, tile=args.tile,
                          tile_overlap=args.tile_overlap, threads=args.threads,
                          progress=not args.no_progress)
    if summary is not None:  # rank 0
        print(f"wrote {args.output}: {summary['windows']} latent clips ({summary['frames']} "
              f"frames) from {summary['items'] - summary['failed_items']} of {summary['items']} "
              f"files in {summary['shards']} shards; {summary['failed_items']} failed (see "
              f"{args.output}/failures.jsonl)")


def cmd_learnability(args) -> None:
    from .learnability import ProbeConfig
    from .learnability.run import learnability
    from .runtime import pick_device

    cfg = ProbeConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    report = learnability(args.model, args.data, args.output, cfg, frames=args.frames,
                          resolution=args.resolution, clips=args.clips,
                          device=pick_device(args.device), overwrite=args.overwrite,
                          progress=not args.no_progress)
    for name, r in report["models"].items():
        print(f"{name}: recon PSNR {r['recon_psnr']:.2f} dB, final val FM loss "
              f"{r['final_val_loss']:.4f}, curve area {r['curve_area']:.4f}")
    print(f"wrote {args.output} (+ .md table, .png curves)")


def cmd_latent_stats(args) -> None:
    import math

    from .config import read_model_config
    from .data.latent_stats import measure_latent_stats
    from .errors import VideoVAEError
    from .io.atomic import atomic_output, to_json, write_json
    from .latents import config_updates
    from .models.registry import load_model
    from .runtime import pick_device

    vae = load_model(args.model, pick_device(args.device))
    stats = measure_latent_stats(vae, args.data, num_clips=args.clips,
                                 num_frames=args.num_frames, resolution=args.resolution,
                                 kind=args.kind, progress=not args.no_progress)
    updates = config_updates(stats, per_channel=args.per_channel, with_shift=args.shift)
    stats["config_updates"] = updates
    print(to_json(updates))
    if args.output:
        with atomic_output(args.output, overwrite=args.overwrite) as tmp:
            tmp.write_text(to_json(stats, indent=2))
    if args.write:  # only config.json changes; the folder's other files stay as they are
        bad = [k for k, v in updates.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise VideoVAEError(f"measured {', '.join(bad)} are not finite; {args.model} is "
                                "left unchanged")
        config = read_model_config(args.model)
        config.update(updates)
        write_json(Path(args.model) / "config.json", config, overwrite=True)
        print(f"updated {args.model}/config.json")


def cmd_train(args) -> None:
    from .training.config import load_train_config
    from .training.trainer import train

    final = train(load_train_config(args.config, args.overrides))
    print(f"wrote {final}")


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(args.output, fine_tune_steps=args.fine_tune_steps, long_frames=args.long_frames)


# ----------------------------------------------------------------------------------------------
# Parser

TILE_OVERLAP_HELP = ("tile overlap in pixels, with --tile (default: a quarter of the tile, at most "
                     f"{HELP_DEFAULTS['tile_overlap']}, a multiple of the spatial ratio)")
MODEL_HELP = ("model folder of any family (config.json + weights); default: the shipped model "
              "(`default`)")


def _model_options(s, reads_video: bool, output_help: str | None = None) -> None:
    s.add_argument("--model", default=None, help=MODEL_HELP)
    if output_help:  # optional output
        s.add_argument("-o", "--output", default=None, help=output_help)
    else:
        s.add_argument("-o", "--output", required=True)
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    s.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    if reads_video:
        s.add_argument("--chunk-frames", type=int, default=None,
                       help="frames read and encoded per streamed step, a multiple of the "
                            f"temporal ratio (default {HELP_DEFAULTS['chunk_frames']}); bounds "
                            "memory")
    s.add_argument("--decode-chunk", type=int, default=None,
                   help=f"latent frames per decode step (default {HELP_DEFAULTS['decode_chunk']})")
    s.add_argument("--tile", type=int, default=None,
                   help="spatial tile size in pixels (default: no tiling); for large frames")
    s.add_argument("--tile-overlap", type=int, default=None, help=TILE_OVERLAP_HELP)
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--overwrite", action="store_true")
    if reads_video:
        s.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"],
                       help="video reader")



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videovae", description=__doc__)
    p.add_argument("--version", action="version", version=f"videovae {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("inflate", help="inflate an image VAE checkpoint into a video VAE")
    s.add_argument("--image-vae", required=True,
                   help="diffusers AutoencoderKL folder, or one .safetensors/.ckpt file")
    s.add_argument("--arch", default=None,
                   help="video VAE family: a key of videovae.FAMILIES that can be inflated "
                        "(default: the config's model.arch, else videovae.models.DEFAULT_ARCH)")
    s.add_argument("--config", help="YAML of model settings (top level or under `model:`)")
    s.add_argument("--image-vae-type", choices=IMAGE_VAE_TYPES,
                   help="latent scaling to use when the checkpoint does not say")
    s.add_argument("-o", "--output", required=True, help="output model folder")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="model settings")
    s.set_defaults(func=cmd_inflate)

    s = sub.add_parser("encode", help="encode a video into a latent file (streams)")
    s.add_argument("video")
    _model_options(s, reads_video=True)
    s.add_argument("--normalize", action="store_true",
                   help="store latents normalized with the model's scaling/shift/mean/std")
    s.add_argument("--sample", action="store_true", help="sample the posterior (default: mean)")
    s.set_defaults(func=cmd_encode)

    s = sub.add_parser("decode", help="decode a latent file into a video (streams)")
    s.add_argument("latents")
    _model_options(s, reads_video=False)
    s.add_argument("--crf", type=int, default=10, help="H.264 quality, 0..51 (0 = lossless)")
    s.add_argument("--force", action="store_true",
                   help="decode latents recorded as made by other weights of this architecture")
    s.set_defaults(func=cmd_decode)

    s = sub.add_parser("reconstruct", help="encode + decode a video in one pass, with metrics "
                       "(the same pixels as encode then decode with the same options)")
    s.add_argument("video")
    _model_options(s, reads_video=True)
    s.add_argument("--metrics", help="write per-frame and mean PSNR/SSIM to this JSON")
    s.add_argument("--side-by-side", action="store_true",
                   help="also write OUT_side_by_side.mp4 (input | reconstruction)")
    s.add_argument("--crf", type=int, default=10, help="H.264 quality, 0..51 (0 = lossless)")
    s.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("eval", help="mean PSNR/SSIM of reconstructions over a data set")
    s.add_argument("--data", required=True, help="folder or CSV/JSONL manifest of videos")
    _model_options(s, reads_video=True, output_help="write the report JSON here")
    s.add_argument("--max-files", type=int, default=None)
    s.add_argument("--image-vae", default=None,
                   help="also decode each latent frame with this image VAE (the one the model "
                        "was inflated from) and report its PSNR")
    s.add_argument("--image-vae-type", choices=IMAGE_VAE_TYPES,
                   help="latent scaling of --image-vae when the checkpoint does not say")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("extract", help="latents of a whole data set, in shards with an index "
                       "(run under `accelerate launch` for several GPUs or machines)")
    s.add_argument("--model", default=None, help=MODEL_HELP)
    s.add_argument("--data", required=True, help="folder or CSV/JSONL manifest of videos/images")
    s.add_argument("-o", "--output", required=True, help="output folder (a rerun resumes it)")
    s.add_argument("--window-frames", type=int, default=None,
                   help="encode fixed-length windows of this many frames (1 + 4k)")
    s.add_argument("--window-stride", type=int, default=None,
                   help="frames between window starts (default: the window length)")
    s.add_argument("--frame-buckets", type=lambda v: [int(x) for x in v.split(",")],
                   help="whole files: trim to the largest of these frame counts that fits, "
                        "e.g. 17,33,65")
    s.add_argument("--size", type=_size, action="append", metavar="HxW",
                   help="resolution bucket (repeatable): resize and center-crop each file to "
                        "the bucket nearest its aspect ratio")
    s.add_argument("--normalize", action="store_true",
                   help="store latents normalized with the model's scaling/shift/mean/std")
    s.add_argument("--moments", action="store_true",
                   help="also store the posterior std (so a trainer can sample)")
    s.add_argument("--shard-items", type=int, default=16,
                   help="at most this many files per shard (fewer so that every process has "
                        "work)")
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (the same value gives identical bytes on any "
                        "number of processes; default: torch's own)")
    s.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    s.add_argument("--chunk-frames", type=int, default=None,
                   help="frames read and encoded per streamed step (bounds memory)")
    s.add_argument("--tile", type=int, default=None, help="spatial tile size in pixels")
    s.add_argument("--tile-overlap", type=int, default=None, help=TILE_OVERLAP_HELP)
    s.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"])
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("learnability", help="how easily a small diffusion model learns each "
                       "model's latents (same clips, seed and budget), next to reconstruction")
    s.add_argument("--model", action="append", default=None,
                   help="model folder (repeat to compare several; default: the shipped model)")
    s.add_argument("--data", required=True, help="folder or CSV/JSONL manifest of videos")
    s.add_argument("-o", "--output", required=True, help="report JSON (.md and .png beside it)")
    s.add_argument("--frames", type=int, default=9, help="clip length (1 + 4k)")
    s.add_argument("--resolution", type=int, default=64, help="square clips of this size")
    s.add_argument("--clips", type=int, default=64, help="clips used (a quarter for validation)")
    s.add_argument("--steps", type=int, default=300, help="probe training steps")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_learnability)

    s = sub.add_parser("latent-stats", help="measure latent scaling statistics over a data set")
    s.add_argument("--model", default=None, help=MODEL_HELP)
    s.add_argument("--data", required=True, help="folder or CSV/JSONL manifest")
    s.add_argument("--kind", default="video", choices=["video", "image"])
    s.add_argument("--clips", type=int, default=64)
    s.add_argument("--num-frames", type=int, default=17)
    s.add_argument("--resolution", type=int, default=256)
    s.add_argument("--per-channel", action="store_true",
                   help="latents_mean/latents_std per channel (else one scaling_factor)")
    s.add_argument("--shift", action="store_true", help="also set shift_factor (SD3/FLUX style)")
    s.add_argument("--write", action="store_true", help="write the result into the model config")
    s.add_argument("-o", "--output", help="write all statistics to this JSON")
    s.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    s.add_argument("--device", default="auto")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_latent_stats)

    s = sub.add_parser("train", help="train (run under `accelerate launch` for several GPUs)")
    s.add_argument("--config", help="training YAML (see configs/train/)")
    s.add_argument("overrides", nargs="*", metavar="key=value",
                   help="e.g. train.max_steps=100 optim.lr=2e-4")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("demo", help="the three jobs with the shipped models, on a CPU, in minutes")
    s.add_argument("-o", "--output", default="videovae_demo", help="output folder")
    s.add_argument("--fine-tune-steps", type=int, default=60,
                   help="steps of the fine-tuning shown (about 3 s each on 2 CPU cores)")
    s.add_argument("--long-frames", type=int, default=241, help="length of the long clip")
    s.set_defaults(func=cmd_demo)
    return p


# ----------------------------------------------------------------------------------------------
# Cheap checks before the heavy imports


def _precheck(args) -> None:
    """What can be checked before the model loads (mostly without torch): option ranges, inputs
    (exist, regular files, readable headers), models, and outputs (names, folders, existing
    files, and none of them an input or another output)."""
    _check_ranges(args)
    listed = _check_inputs(args)
    _resolve_models(args)
    from .config import read_model_config

    models = getattr(args, "model", None)
    for model in models if isinstance(models, list) else [models] if models else []:
        read_model_config(model)
    outputs = _outputs(args)
    _check_output_names(args, outputs)
    from .io.atomic import check_distinct_paths, check_output_path

    labelled = [(label, path) for label, path, _, _ in outputs]
    inputs = _inputs(args, listed if any(p.is_file() for _, p in labelled) else [])
    check_distinct_paths(labelled, inputs)
    for _, path, is_dir, may_exist in outputs:
        check_output_path(path, overwrite=may_exist or args.overwrite, is_dir=is_dir)


# Options that count or size something: (minimum, maximum or None, what the range means)
_RANGES = {"crf": (0, 51, "H.264 quality, 0 = lossless"), "chunk_frames": (1, None, ""),
           "decode_chunk": (1, None, ""), "tile": (1, None, "pixels"),
           "tile_overlap": (0, None, "pixels"), "max_files": (1, None, ""),
           "clips": (1, None, ""), "num_frames": (1, None, ""), "resolution": (1, None, "pixels"),
           "frames": (1, None, ""), "steps": (1, None, ""), "batch_size": (1, None, ""),
           "shard_items": (1, None, ""), "window_frames": (1, None, ""),
           "window_stride": (1, None, ""), "long_frames": (1, None, ""),
           "fine_tune_steps": (0, None, ""), "threads": (1, None, "")}


def _check_ranges(args) -> None:
    for name, (lo, hi, note) in _RANGES.items():
        value = getattr(args, name, None)
        if value is None or lo <= value <= (value if hi is None else hi):
            continue
        span = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise VideoVAEError(f"--{name.replace('_', '-')} must be {span}"
                            f"{f' ({note})' if note else ''}, got {value}")
    if getattr(args, "tile_overlap", None) is not None and not args.tile:
        raise VideoVAEError("--tile-overlap needs --tile (the tile size in pixels)")
    if any(b < 1 for b in getattr(args, "frame_buckets", None) or []):
        raise VideoVAEError(f"--frame-buckets must be frame counts >= 1, got {args.frame_buckets}")


def _check_inputs(args) -> list[Path]:
    """Inputs are checked before any model loads; returns a data path's files."""
    cmd = args.command
    if cmd in ("encode", "reconstruct"):
        _check_media_file(args.video)
    if cmd == "decode":
        _check_input_file(args.latents, "latent file")
    if cmd in ("eval", "latent-stats", "extract", "learnability"):
        from .io.listing import list_files

        return list_files(args.data)  # a missing or empty folder, a bad manifest: said now
    return []


def _check_input_file(path, what: str) -> Path:
    """`path` exists and is a readable regular file (a FIFO would block, a folder fail late)."""
    import os

    from .io.listing import input_file_mode

    p = Path(path)
    kind = input_file_mode(p, what)
    if kind == "a directory":
        raise VideoVAEError(f"{what} {path} is a directory, not a file")
    if kind is not None:
        raise VideoVAEError(f"{what} {path} is {kind}, not a regular file")
    if not os.access(p, os.R_OK):
        raise PermissionError(f"{what} {path} is not readable")
    return p


def _check_media_file(path) -> None:
    """A video or image whose header opens (PyAV or PIL, as the reader would), so that a file
    that is no video is said before the model loads. A file with an unknown suffix is accepted
    when FFmpeg opens it as a video."""
    from .errors import VideoReadError
    from .io.listing import IMAGE_SUFFIXES, MEDIA_SUFFIXES

    p = _check_input_file(path, "video")
    suffix = p.suffix.lower()
    try:
        if suffix in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(p):
                return
        import av

        with av.open(str(p)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path} has no video stream")
    except VideoReadError:
        raise
    except ImportError:  # no PyAV: the reader will tell
        return
    except Exception as e:  # noqa: BLE001 - any decoder error means "not readable"
        known = "" if suffix in MEDIA_SUFFIXES else \
            f" ({suffix or 'no suffix'} is not a known video or image suffix)"
        reason = getattr(e, "strerror", None) or one_line(e)  # (without PyAV's errno)
        raise VideoReadError(f"cannot read {path} as a video{known}: {reason}") from e


def _outputs(args) -> list[tuple[str, Path, bool, bool]]:
    """(label, path, is_dir, may_exist) of everything the command writes; `may_exist`: a folder
    a rerun continues, or a file updated in place (existing is fine without --overwrite)."""
    cmd, out = args.command, getattr(args, "output", None)
    if cmd == "latent-stats" and args.write:
        outputs = [("--write", Path(args.model) / "config.json", False, True)]
    else:
        outputs = []
    if cmd == "train" or out is None:
        return outputs
    out = Path(out)
    outputs.append(("-o", out, cmd in ("inflate", "extract", "demo"), cmd in ("extract", "demo")))
    if cmd == "reconstruct" and args.side_by_side:
        from .files import side_by_side_path

        outputs.append(("the side-by-side video of -o", side_by_side_path(out), False, False))
    if getattr(args, "metrics", None):
        outputs.append(("--metrics", Path(args.metrics), False, False))
    if cmd == "learnability":  # the names videovae.learnability.run derives from -o
        outputs += [("the table of -o", out.with_suffix(".md"), False, False),
                    ("the plot of -o", out.with_suffix(".png"), False, False),
                    ("the latents folder of -o", out.parent / f"{out.stem}_latents", True, True)]
    return outputs


def _check_output_names(args, outputs) -> None:
    from .io.listing import LATENT_SUFFIX, WRITABLE_VIDEO_SUFFIXES, check_output_suffix

    for label, path, _, _ in outputs:
        if args.command == "encode" and label == "-o":
            check_output_suffix(path, (LATENT_SUFFIX,), "a latent file")
        elif args.command in ("decode", "reconstruct") and label != "--metrics":
            check_output_suffix(path, WRITABLE_VIDEO_SUFFIXES, "a video format")


def _inputs(args, listed) -> list[tuple[str, Path]]:
    """(label, path) of everything the command reads: files, data folders and their files,
    model folders and their files."""
    inputs = []
    for attr, label in (("video", "input video"), ("latents", "latent file"),
                        ("data", "--data"), ("config", "--config")):
        if getattr(args, attr, None):
            inputs.append((label, Path(getattr(args, attr))))
    inputs += [("data file", p) for p in listed]
    image_vae = getattr(args, "image_vae", None)
    if image_vae and Path(image_vae).exists():
        inputs.append(("--image-vae", Path(image_vae)))
    models = getattr(args, "model", None)
    for model in models if isinstance(models, list) else [models] if models else []:
        folder = Path(model)
        inputs.append(("--model folder", folder))
        written = folder / "config.json" if getattr(args, "write", False) else None
        inputs += [("model file", p) for p in sorted(folder.iterdir())
                   if p.is_file() and p != written]
    return inputs


def _resolve_models(args) -> None:
    """No --model means the shipped default (said in one line); shipped names become folders.
    (`--image-vae default`, the shipped image VAE, is resolved by `load_image_vae`.)"""
    from .weights import default_model_dir, is_default_name, resolve_model

    if not hasattr(args, "model"):
        return
    if not args.model:
        if args.command == "latent-stats" and args.write:
            raise VideoVAEError("latent-stats --write updates a model folder: name it with "
                                "--model (the shipped model is not written to)")
        path = default_model_dir("default")
        print(f"videovae {args.command}: no --model given, using the shipped default model "
              f"({path})", file=sys.stderr)
        args.model = [str(path)] if args.command == "learnability" else str(path)
        return
    names = args.model if isinstance(args.model, list) else [args.model]
    if args.command == "latent-stats" and args.write and is_default_name(args.model):
        raise VideoVAEError("latent-stats --write would change the shipped model: copy "
                            f"{default_model_dir(args.model)} and write to the copy")
    paths = [str(resolve_model(m)) for m in names]
    args.model = paths if isinstance(args.model, list) else paths[0]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with stop_on_signals():  # SIGINT/SIGTERM: unwind as on an error, within a few seconds
        return _run(args)


def _run(args) -> int:
    try:
        _precheck(args)
        from .runtime import setup_cpu, setup_logging

        setup_logging(args.verbose)
        setup_cpu()
        args.func(args)
    except KeyboardInterrupt as e:  # (Terminated too)
        signum = stop_requested() or (signal.SIGTERM if isinstance(e, Terminated) else
                                      signal.SIGINT)
        print(stop_message(signum), file=sys.stderr)
        return stop_exit_code(signum)
    except (ValueError, OSError, RuntimeError, KeyError, MemoryError) as e:
        if stop_requested():  # a library turned the interrupt into its own error
            print(stop_message(stop_requested()), file=sys.stderr)
            return stop_exit_code(stop_requested())
        if args.verbose:
            logger.exception("failed")
        print(f"videovae {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the default models that ship inside the package (`videovae.load_model("default")`).

    python tools/train_default.py --image-minutes 30 --video-minutes 21 --install
    # more training of an earlier run's image VAE, then cv from it again
    python tools/train_default.py --continue-from OLD_WORK --image-minutes 50 --image-lr 5e-4 \
        --families cv --work NEW_WORK --install

1. builds a training set that needs no download (or takes yours with `--data DIR`, holding
   `photos/`, `procedural/` (images) and `clips/` (videos)): every photo scikit-image ships but
   the held-out ones, procedurally generated images (gradients, shapes, textures, noise of
   random colours) and pan/zoom and moving-shape clips made from both;
2. trains a small SD-layout image VAE (diffusers `AutoencoderKL`, 16 latent channels) on
   random-resized 64 px crops of the images, with L1, the block-mean colour term and KL (or
   continues an earlier run's, on its data: `--continue-from`);
3. inflates it into the `cv` and the `ktc` video VAE and fine-tunes each with the toolkit's
   trainer (`videovae train`: images as one-frame clips and 9-frame clips, CV-VAE's latent
   regularization against the frozen image VAE) for the same time;
4. evaluates on clips no training step saw (pans over the held-out photos and the real GIF
   scikit-image ships): the image VAE per frame, the video VAEs, bicubic 8x down-up, and
   checks the shipped `cv` against the targets (PSNR at least bicubic's, colour error under
   2/255 per channel, within 0.5 dB of the image VAE per frame);
5. measures each video VAE's latent statistics (the `scaling_factor` diffusion models use) on
   the training clips, and with `--install` writes the image VAE and the `cv` video VAE in fp16
   safetensors into `videovae/weights/default/` with TRAINING.md and training.json (command,
   data, steps, time, the held-out table). The `ktc` model stays in the work folder (`--work`,
   `ktc_final/`): at this width it has 27 M parameters, too heavy to carry in the package.

Writes OUT/report.json and OUT/report.md in any case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from videovae.convert import INFLATERS, inflate_from_model
from videovae.data.latent_stats import measure_latent_stats
from videovae.data.procedural import procedural_image, training_photos
from videovae.data.sources import SourceConfig
from videovae.data.synthetic import HELD_OUT_PHOTOS, load_photo, moving_shapes_clip, pan_zoom_clip
from videovae.heldout import (
    bicubic,
    evaluate,
    held_out_clips,
    markdown,
    params_of,
    per_frame,
    video,
)
from videovae.io.atomic import atomic_output, write_json
from videovae.io.video import VideoReader, frames_to_tensor, write_video
from videovae.latents import config_updates
from videovae.models.registry import load_model
from videovae.runtime import setup_cpu
from videovae.training.budget import train_for_minutes
from videovae.training.image_vae import train_image_vae
from videovae.weights import DEFAULT_DIR, SHIPPED_FAMILIES, image_vae_runs

IMAGE_VAE = dict(block_out_channels=[32, 64, 128, 128], layers_per_block=1, latent_channels=16,
                 norm_num_groups=8)  # `sd_vae_config` arguments
CROP_SCALE = [0.1, 0.7]  # random-resized crops: from native pixels to most of a photo
LOWPASS = 1.0  # weight of the block-mean colour term (`loss.lowpass_weight`) in both stages
VIDEO = {  # `videovae train` settings of the video stage; DATA is filled in
    "data": {"num_workers": 1, "val_clips": 2, "val_num_frames": 9, "val_resolution": [64, 64]},
    "loss": {"perceptual_weight": 0.0, "kl_weight": 1e-6, "disc_weight": 0.0,
             "lowpass_weight": LOWPASS,
             "reg_dec_weight": 1.0, "reg_mapping": "random"},  # ktc always uses `key`
    "optim": {"lr": 5e-5, "warmup_steps": 20, "min_lr_ratio": 0.1},
    "train": {"ema_decay": 0.995, "checkpoint_every": 0, "log_every": 20, "val_every": 0,
              "seed": 0},
}


# ----------------------------------------------------------------------------------------------
# Data


def build_data(root: Path, procedural: int, clips: int, seed: int = 0) -> dict:
    """photos/ (PNG), procedural/ (PNG) and clips/ (MP4, 17 frames at 128x128)."""
    import imageio.v3 as iio

    rng = np.random.default_rng(seed)
    for sub in ("photos", "procedural", "clips"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    images = []
    for name in training_photos():
        photo = load_photo(name)
        scale = 640 / max(photo.shape[:2])  # big photos at most 640 px: faster to read
        if scale < 1:
            import cv2

            photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        iio.imwrite(root / "photos" / f"{name}.png", photo)
        images.append(photo)
    for i in range(procedural):
        size = int(rng.choice([192, 256, 384]))
        img = procedural_image(seed * 100_000 + i, size)
        iio.imwrite(root / "procedural" / f"proc_{i:04d}.png", img)
        images.append(img)
    for i in range(clips):
        photo = images[int(rng.integers(len(images)))]
        if rng.random() < 0.25:
            frames = moving_shapes_clip(17, (128, 128), photo, seed=seed * 100_000 + i,
                                        num_shapes=int(rng.integers(1, 5)))
        else:
            frames = pan_zoom_clip(photo, 17, (128, 128),
                                   speed=float(rng.uniform(0, 4)) if rng.random() > 0.1 else 0.0,
                                   zoom=float(rng.uniform(-0.03, 0.03)),
                                   angle=float(rng.uniform(0, 2 * np.pi)),
                                   scale=float(rng.uniform(0.3, 1.5)))
        write_video(root / "clips" / f"clip_{i:04d}.mp4", frames, fps=12, crf=0)
    return {"photos": training_photos(), "procedural_images": procedural, "clips": clips,
            "clip_frames": 17, "clip_size": [128, 128]}


def image_sources(data: Path, frames: int = 1, batch: int = 16) -> list[SourceConfig]:
    return [SourceConfig(name=sub, type="image", path=str(data / sub), resolution=64,
                         num_frames=frames, batch_size=batch, weight=0.5, hflip=True,
                         crop_scale=CROP_SCALE) for sub in ("photos", "procedural")]


def video_settings(data: Path, arch: str, image_vae_dir: Path) -> dict:
    src = [{"name": s.name, "type": "image", "path": s.path, "resolution": 64,
            "num_frames": 1, "batch_size": 8, "weight": 0.2, "hflip": True,
            "crop_scale": CROP_SCALE} for s in image_sources(data)]
    src.append({"name": "clips", "type": "video", "path": str(data / "clips"), "resolution": 64,
                "num_frames": 9, "batch_size": 2, "weight": 0.6, "hflip": True,
                "crop_scale": [0.5, 1.0]})
    return {**VIDEO, "model": {"arch": arch}, "data": {**VIDEO["data"], "sources": src},
            "train": {**VIDEO["train"], "init_from_image_vae": str(image_vae_dir)}}


def real_clip() -> tuple[str, torch.Tensor]:
    """scikit-image's real GIF (24 frames of 14x25): its first 21 frames, enlarged 4x (bicubic,
    cropped to 96x56) so that the 8x models see more than two latent pixels."""
    import skimage.data

    frames = VideoReader(Path(skimage.data.data_dir) / "no_time_for_that_tiny.gif").read_all()
    x = frames_to_tensor(frames[:21])[0].transpose(0, 1)
    x = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    x = x[..., 2:98, :]  # 96 x 56: whole latent pixels
    return "gif_no_time_for_that_x4", x.clamp(-1, 1).transpose(0, 1)[None]


# ----------------------------------------------------------------------------------------------
# Stages


def train_image_stage(data: Path, out: Path, minutes: float, init: Path | None = None,
                      lr: float = 1e-3) -> dict:
    """Trains (or with `init`, continues: a new warm-up and cosine decay from `lr`) the image
    VAE for about `minutes`, after an 8-step probe of the step time."""
    def run(steps):
        return train_image_vae(IMAGE_VAE, steps, sources=image_sources(data), lr=lr,
                               lowpass_weight=LOWPASS, init=init)

    t0 = time.perf_counter()
    run(8)
    per_step = (time.perf_counter() - t0) / 8
    steps = max(50, int(minutes * 60 / per_step))
    print(f"  image VAE: {per_step:.2f} s/step in the probe -> {steps} steps", flush=True)
    t0 = time.perf_counter()
    vae, losses = run(steps)
    vae.save_pretrained(out)
    return {"config": IMAGE_VAE, "steps": steps, "batch": 16, "crop": 64,
            "crop_scale": CROP_SCALE, "lr": lr, "lowpass_weight": LOWPASS,
            "wall_seconds": time.perf_counter() - t0,
            "l1_start": float(np.mean(losses[:10])), "l1_end": float(np.mean(losses[-50:]))}


COLOR_LIMIT = 2.0  # targets of the shipped cv on the held-out clips: mean colour error under
IMAGE_GAP_DB = 0.5  # this per channel (of 255), at most this far below the image VAE per frame,
# and a PSNR at least bicubic 8x down-up's


def targets(rows: list[dict], shipped: str = "cv fine-tuned") -> dict:
    """The shipped model against the targets above, on the held-out rows of `evaluate`."""
    by = {r["name"]: r for r in rows}
    vid, bic, img = by[shipped], by["bicubic 8x down-up"], by["image VAE per frame"]
    return {"psnr_vs_bicubic_db": vid["psnr"] - bic["psnr"],
            "psnr_met": vid["psnr"] >= bic["psnr"],
            "max_color_error": max(vid["color_error"]), "color_limit": COLOR_LIMIT,
            "color_met": max(vid["color_error"]) < COLOR_LIMIT,
            "image_minus_video_db": img["psnr"] - vid["psnr"], "image_gap_limit_db": IMAGE_GAP_DB,
            "image_gap_met": img["psnr"] - vid["psnr"] <= IMAGE_GAP_DB}


def targets_md(t: dict) -> str:
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    return (f"Targets for the shipped `cv`: PSNR {t['psnr_vs_bicubic_db']:+.2f} dB against "
            f"bicubic 8x ({met(t['psnr_met'])}, at least 0 wanted); largest colour error "
            f"{t['max_color_error']:.1f}/255 ({met(t['color_met'])}, under "
            f"{t['color_limit']:g} wanted); {t['image_minus_video_db']:.2f} dB below the image "
            f"VAE per frame ({met(t['image_gap_met'])}, at most {t['image_gap_limit_db']:g} "
            "wanted).")


SHIPPED = SHIPPED_FAMILIES  # video families installed; the others stay in the work folder


def image_vae_scaling(image_vae, photos: Path) -> dict:
    """The image VAE's own latent scaling, measured on center crops of the training photos (the
    image VAE's own constants, not another model's: `videovae inflate --image-vae default`
    copies them)."""
    stats = measure_latent_stats(image_vae, photos, num_clips=64, resolution=128, kind="image",
                                 progress=False)
    return {"scaling_factor": stats["scaling_factor"], "latent_std": stats["std"]}


def strip_origin(model_dir: Path) -> None:
    """Drop `_name_or_path` (the training machine's path) from a saved model's config.json."""
    cfg_file = model_dir / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.pop("_name_or_path", None)
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def install(work: Path, report: dict, dest: Path) -> None:
    """fp16 copies of the image VAE and the SHIPPED video VAEs, TRAINING.md and training.json,
    replacing `dest` whole (`atomic_output`: the old models stay until the new ones are in)."""
    from diffusers import AutoencoderKL

    with atomic_output(dest, is_dir=True, overwrite=True) as tmp:
        AutoencoderKL.from_pretrained(work / "image_vae").half().save_pretrained(tmp / "image_vae")
        strip_origin(tmp / "image_vae")
        for arch in SHIPPED:
            load_model(report["video"][arch]["installed_from"]).half().save_pretrained(tmp / arch)
            strip_origin(tmp / arch)
        write_json(tmp / "training.json", report, overwrite=True)
        (tmp / "TRAINING.md").write_text(training_md(report))


def image_history(img: dict) -> str:
    """'N steps ... min' for each run of the image VAE, earliest first (`--continue-from`)."""
    def one(run):
        colour = run.get("lowpass_weight", 0.0)
        return (f"{run['steps']} steps of batch {run['batch']} at {run['crop']} px "
                f"(peak lr {run['lr']:g}, {run['wall_seconds'] / 60:.1f} min; L1"
                + (f" + {colour:g} x block-mean colour term" if colour else "") + " + KL)")

    *before, last = image_vae_runs(img)
    return "".join(f"{one(run)} (`{run['command']}`, {run['date']}), then continued for "
                   for run in before) + one(last)


def training_md(report: dict) -> str:
    img, vid = report["image_vae"], report["video"]
    lines = [
        "# How the default models were trained", "",
        f"Command: `{report['command']}` ({report['date']}, {report['machine']}).", "",
        (f"Data: the folder {report['data']['folder']}." if "folder" in report["data"] else
         f"Data (nothing downloaded): {len(report['data']['photos'])} scikit-image photos "
         f"({', '.join(report['data']['photos'])}), {report['data']['procedural_images']} "
         "procedural images (gradients, shapes, textures, noise) and "
         f"{report['data']['clips']} clips of 17 frames (pans, zooms and moving shapes over "
         "them). Held out: the photos " + ", ".join(HELD_OUT_PHOTOS) + " and the GIF."), "",
        f"- image VAE (`image_vae/`): SD layout {img['config']}, {image_history(img)}.",
    ]
    for arch, v in vid.items():
        where = f"`{arch}/`" if arch in SHIPPED else "not shipped, too large"
        lines.append(f"- `{arch}` ({where}): inflated from it, then {v['steps']} steps of "
                     f"`videovae train` ({v['wall_seconds'] / 60:.1f} min); scaling_factor "
                     f"{v['scaling_factor']:.4f}.")
    lines += ["", "Held-out clips (never trained on): pans at 1.5 and 3 px/frame over "
              + ", ".join(HELD_OUT_PHOTOS) + " (17 frames at 96x128) and the GIF enlarged 4x "
              "(21 frames at 96x56). Colour error: per channel, |mean(input) - mean(output)| "
              "in levels of 255.", "",
              report["table"], ""]
    if "targets" in report:
        lines += [targets_md(report["targets"]), ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image-minutes", type=float, default=30.0)
    p.add_argument("--image-lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--video-minutes", type=float, default=21.0, help="per family")
    p.add_argument("--families", nargs="+", default=list(INFLATERS), choices=list(INFLATERS),
                   help=f"video families to train (installed: {', '.join(SHIPPED_FAMILIES)})")
    p.add_argument("--procedural", type=int, default=400, help="procedural images to make")
    p.add_argument("--clips", type=int, default=300, help="training clips to make")
    p.add_argument("--data", default=None, help="use this data folder instead of building one")
    p.add_argument("--continue-from", default=None, metavar="WORK",
                   help="an earlier run's --work folder: train its image VAE further on its "
                        "data (a new warm-up and decay) instead of starting from scratch")
    p.add_argument("--work", default="train_default_work")
    p.add_argument("--install", action="store_true",
                   help=f"write the models into the package ({DEFAULT_DIR})")
    args = p.parse_args()
    if args.install and not set(SHIPPED_FAMILIES) <= set(args.families):
        p.error(f"--install ships {', '.join(SHIPPED_FAMILIES)}: --families must include them")
    setup_cpu()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report = {"command": "python tools/train_default.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"),
              "machine": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}"}
    earlier = None
    if args.continue_from:
        if not (Path(args.continue_from) / "report.json").is_file():
            p.error(f"{args.continue_from} is not a train_default work folder (no report.json)")
        earlier = json.loads((Path(args.continue_from) / "report.json").read_text())
        if earlier["image_vae"]["config"] != IMAGE_VAE:
            p.error(f"{args.continue_from}: its image VAE has another config")

    if args.data:
        data = Path(args.data)
        report["data"] = {"folder": str(data)}
    elif earlier:  # the folder that run used (its own data/ unless it had --data)
        data = Path(earlier.get("data_folder") or earlier["data"].get("folder")
                    or Path(args.continue_from) / "data")
        report["data"] = earlier["data"]
    else:
        data = work / "data"
    print(f"[1/5] data in {data}", flush=True)
    if "data" not in report:
        report["data"] = build_data(data, args.procedural, args.clips)
    elif not data.is_dir():
        p.error(f"no data folder at {data}")
    report["data_folder"] = str(data.resolve())

    print(f"[2/5] image VAE for {args.image_minutes} min", flush=True)
    report["image_vae"] = train_image_stage(
        data, work / "image_vae", args.image_minutes, lr=args.image_lr,
        init=Path(args.continue_from) / "image_vae" if earlier else None)
    if earlier:
        report["image_vae"]["continued_from"] = {"command": earlier["command"],
                                                 "date": earlier["date"],
                                                 **earlier["image_vae"]}
    from diffusers import AutoencoderKL
    image_vae = AutoencoderKL.from_pretrained(work / "image_vae").eval()
    if (data / "photos").is_dir():  # a folder of this script's layout
        scaling = image_vae_scaling(image_vae, data / "photos")
        image_vae.register_to_config(scaling_factor=scaling["scaling_factor"], shift_factor=None)
        image_vae.save_pretrained(work / "image_vae")
        report["image_vae"].update(scaling)
    else:
        print(f"{data} has no photos/ folder: the image VAE keeps the default latent scaling",
              flush=True)

    clips = held_out_clips(17, (96, 128))
    name, gif = real_clip()
    clips[name] = gif
    rows = [evaluate("image VAE per frame", per_frame(image_vae), clips, params_of(image_vae)),
            evaluate("bicubic 8x down-up", bicubic(8), clips)]
    report["video"] = {}
    for arch in args.families:
        print(f"[3/5] {arch}: inflate, fine-tune for {args.video_minutes} min", flush=True)
        inflated = inflate_from_model(image_vae, arch).eval()
        rows.append(evaluate(f"{arch} inflated", video(inflated), clips, params_of(inflated)))
        run = train_for_minutes(video_settings(data, arch, work / "image_vae"), work / arch,
                                args.video_minutes, probe_steps=10)
        vae = load_model(run["model"])
        rows.append(evaluate(f"{arch} fine-tuned", video(vae), clips, params_of(vae)))
        print(f"[4/5] {arch}: latent statistics", flush=True)
        stats = measure_latent_stats(vae, data / "clips", num_clips=64, num_frames=17,
                                     resolution=128)
        vae.register_to_config(**config_updates(stats))
        vae.save_pretrained(work / f"{arch}_final")
        run.update(installed_from=str(work / f"{arch}_final"),
                   scaling_factor=stats["scaling_factor"], latent_std=stats["std"])
        report["video"][arch] = run
        print(markdown(rows), flush=True)

    report["rows"] = rows
    report["table"] = markdown(rows)
    report["held_out"] = {"clips": list(clips), "frames": 17, "size": [96, 128]}
    if "cv" in report["video"]:
        report["targets"] = targets(rows)
        print(targets_md(report["targets"]), flush=True)
    report["total_minutes"] = (time.perf_counter() - t_start) / 60
    write_json(work / "report.json", report, overwrite=True)
    (work / "report.md").write_text(report["table"] + "\n" + (
        "\n" + targets_md(report["targets"]) + "\n" if "targets" in report else ""))
    print(report["table"])
    if args.install:
        print(f"[5/5] installing into {DEFAULT_DIR}", flush=True)
        install(work, report, DEFAULT_DIR)
    print(f"done in {report['total_minutes']:.1f} min; report in {work}/report.md")


if __name__ == "__main__":
    main()

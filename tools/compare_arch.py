"""`cv` against `ktc`, both inflated from the same small image VAE and trained for the same time.

    python tools/compare_arch.py --minutes 20 -o compare_arch

1. trains a small SD-layout image VAE on crops of the bundled training photos
   (`videovae.training.image_vae.train_image_vae`; `--image-steps`);
2. inflates it into `cv` and into `ktc` (which gets twice its latent channels);
3. trains each with the toolkit's trainer (`videovae train`: L1 + KL + the decoder-path latent
   regularization against the frozen image VAE) on the same synthetic clips (9 frames, pans
   and zooms over `videovae.data.synthetic.TRAIN_PHOTOS`, one batch sequence for both) for
   `--minutes` of wall-clock training each: a short probe run measures the seconds per step,
   which sets the step count (and so the learning-rate schedule) of the real run;
4. evaluates the image VAE (frame by frame), the inflated and the trained models on held-out
   clips (pans over the photos `chelsea` and `rocket`, never trained on): parameters,
   encode+decode frames per second, PSNR, SSIM, the first-versus-rest gap (mean PSNR of each
   group's first frame, frame 0 included, minus the mean of the other frames) and the mean PSNR
   at each position within a group (groups after frame 0; frame 0 is reported on its own).

Writes OUT.json and OUT.md (the table) and prints the table. Run it on an otherwise idle machine:
the models get equal wall-clock time, not equal steps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from videovae.config import from_dict
from videovae.convert import inflate_from_model
from videovae.data.synthetic import HELD_OUT_PHOTOS, load_photo, pan_zoom_clip
from videovae.io.video import frames_to_tensor
from videovae.metrics import psnr_per_frame, ssim_per_frame
from videovae.models.registry import load_model
from videovae.runtime import setup_cpu
from videovae.training.config import TrainConfig
from videovae.training.image_vae import train_image_vae
from videovae.training.trainer import train

IMAGE_VAE = dict(block_out_channels=[32, 64, 128, 128], layers_per_block=1, latent_channels=4,
                 norm_num_groups=8)  # `sd_vae_config` arguments (the demo's image VAE)
CLIP_FRAMES, CLIP_BATCH = 9, 2
TRAIN = {  # `videovae train` settings shared by both families
    "data": {"num_workers": 0, "val_clips": 2, "val_num_frames": 9, "val_resolution": [64, 64],
             "sources": [{"name": "clips", "type": "synthetic", "num_frames": CLIP_FRAMES,
                          "resolution": 64, "batch_size": CLIP_BATCH}]},
    "loss": {"perceptual_weight": 0.0, "kl_weight": 1e-6, "disc_weight": 0.0,
             "reg_dec_weight": 1.0, "reg_mapping": "random"},  # ktc always uses `key`
    "optim": {"lr": 1e-4, "warmup_steps": 10, "min_lr_ratio": 0.1},
    "train": {"ema_decay": 0.0, "checkpoint_every": 0, "log_every": 10, "val_every": 0,
              "seed": 0},
}


# ----------------------------------------------------------------------------------------------
# Training


def _fresh_accelerate_state() -> None:
    """Accelerate keeps process-wide singletons; each `train` call here starts anew."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def _train(arch: str, image_vae_dir: Path, out: Path, steps: int) -> tuple[Path, list[dict]]:
    _fresh_accelerate_state()
    cfg = from_dict(TrainConfig, {**TRAIN, "model": {"arch": arch}, "train": {
        **TRAIN["train"], "max_steps": steps, "output_dir": str(out),
        "init_from_image_vae": str(image_vae_dir)}})
    final = train(cfg)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return final, metrics


def _step_seconds(metrics: list[dict]) -> list[float]:
    """Seconds of each step (every batch is CLIP_BATCH clips)."""
    return [CLIP_BATCH / m["train/samples_per_s"] for m in metrics]


def train_for(arch: str, image_vae_dir: Path, out: Path, minutes: float,
              probe_steps: int) -> dict:
    """Probe the step time, then train for about `minutes` of steps."""
    _, probe = _train(arch, image_vae_dir, out / "probe", probe_steps)
    per_step = float(np.median(_step_seconds(probe)[1:] or _step_seconds(probe)))
    steps = max(1, int(minutes * 60 / per_step))
    print(f"  {arch}: {per_step:.2f} s/step in the probe -> {steps} steps", flush=True)
    t0 = time.perf_counter()
    final, metrics = _train(arch, image_vae_dir, out / "run", steps)
    return {"model": str(final), "steps": steps, "probe_s_per_step": per_step,
            "train_seconds": float(sum(_step_seconds(metrics))),
            "wall_seconds": time.perf_counter() - t0,
            "rec_start": metrics[0]["train/rec"],
            "rec_end": float(np.mean([m["train/rec"] for m in metrics[-10:]]))}


# ----------------------------------------------------------------------------------------------
# Evaluation


def held_out_clips(frames: int, size: tuple[int, int]) -> list[torch.Tensor]:
    """Pans at two speeds over each held-out photo."""
    return [frames_to_tensor(pan_zoom_clip(load_photo(name), frames, size, speed=speed,
                                           zoom=0.005))
            for name in HELD_OUT_PHOTOS for speed in (1.5, 3.0)]


def group_metrics(psnr: np.ndarray, ratio: int) -> dict:
    """psnr (clips, T) with T = 1 + ratio*k: first-vs-rest gap, PSNR per in-group position."""
    first = np.zeros(psnr.shape[1], dtype=bool)
    first[0] = True
    first[1::ratio] = True
    groups = psnr[:, 1:].reshape(psnr.shape[0], -1, ratio)  # (clips, k, ratio)
    return {"first_vs_rest_gap": float(psnr[:, first].mean() - psnr[:, ~first].mean()),
            "frame0_psnr": float(psnr[:, 0].mean()),
            "psnr_by_position": [float(v) for v in groups.mean(axis=(0, 1))]}


@torch.no_grad()
def evaluate(name: str, reconstruct, params: int, clips: list[torch.Tensor], ratio: int) -> dict:
    psnr, ssim, seconds = [], [], 0.0
    reconstruct(clips[0])  # warm-up, not timed
    for x in clips:
        t0 = time.perf_counter()
        rec = reconstruct(x).clamp(-1, 1)
        seconds += time.perf_counter() - t0
        psnr.append(psnr_per_frame(x, rec)[0].numpy())
        ssim.append(ssim_per_frame(x, rec)[0].numpy())
    psnr = np.stack(psnr)
    frames = sum(x.shape[2] for x in clips)
    return {"name": name, "params_m": params / 1e6, "fps": frames / seconds,
            "psnr": float(psnr.mean()), "ssim": float(np.mean(ssim)),
            **group_metrics(psnr, ratio)}


def per_frame(image_vae):
    def run(x):
        frames = x[0].transpose(0, 1)
        return image_vae(frames).sample.transpose(0, 1)[None]
    return run


def markdown(rows: list[dict], ratio: int) -> str:
    pos = " | ".join(f"pos {i}" for i in range(ratio))
    lines = [f"| model | params (M) | enc+dec fps | PSNR | SSIM | first-vs-rest gap (dB) | "
             f"frame 0 | {pos} |",
             "|---" * (7 + ratio) + "|"]
    for r in rows:
        by_pos = " | ".join(f"{v:.2f}" for v in r["psnr_by_position"])
        lines.append(f"| {r['name']} | {r['params_m']:.2f} | {r['fps']:.1f} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.4f} | {r['first_vs_rest_gap']:+.2f} | {r['frame0_psnr']:.2f} | "
                     f"{by_pos} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="training time per family")
    p.add_argument("--image-steps", type=int, default=300, help="image VAE training steps")
    p.add_argument("--probe-steps", type=int, default=4, help="steps of the timing probe")
    p.add_argument("--frames", type=int, default=17, help="frames per held-out clip (1 + 4k)")
    p.add_argument("--size", type=int, nargs=2, default=[64, 96], metavar=("H", "W"))
    p.add_argument("--work", default=None, help="folder for models and runs (default: OUT_work)")
    p.add_argument("-o", "--output", default="compare_arch")
    args = p.parse_args()
    setup_cpu()
    work = Path(args.work or f"{args.output}_work")
    work.mkdir(parents=True, exist_ok=True)

    print(f"[1/3] image VAE: {args.image_steps} steps on the training photos", flush=True)
    image_vae, losses = train_image_vae(IMAGE_VAE, args.image_steps)
    image_vae.save_pretrained(work / "image_vae")
    clips = held_out_clips(args.frames, tuple(args.size))
    ratio = 4
    rows = [evaluate("image VAE per frame", per_frame(image_vae),
                     sum(q.numel() for q in image_vae.parameters()), clips, ratio)]
    runs = {}
    print(f"[2/3] training cv and ktc for {args.minutes} min each", flush=True)
    for arch in ("cv", "ktc"):
        inflated = inflate_from_model(image_vae, arch).eval()
        n = sum(q.numel() for q in inflated.parameters())
        rows.append(evaluate(f"{arch} inflated", lambda x: inflated(x).sample, n, clips, ratio))
        runs[arch] = train_for(arch, work / "image_vae", work / arch, args.minutes,
                               args.probe_steps)
        trained = load_model(runs[arch]["model"])
        rows.append(evaluate(f"{arch} trained ({runs[arch]['steps']} steps)",
                             lambda x: trained(x).sample, n, clips, ratio))

    print("[3/3] held-out clips: " + ", ".join(HELD_OUT_PHOTOS) +
          f" ({len(clips)} clips of {args.frames} frames at {args.size[0]}x{args.size[1]})")
    table = markdown(rows, ratio)
    print(table)
    report = {"minutes": args.minutes, "image_vae": {"config": IMAGE_VAE,
                                                     "steps": args.image_steps,
                                                     "l1_end": float(np.mean(losses[-10:]))},
              "train": TRAIN, "runs": runs, "rows": rows,
              "clips": {"photos": list(HELD_OUT_PHOTOS), "frames": args.frames,
                        "size": args.size, "count": len(clips)}}
    Path(f"{args.output}.json").write_text(json.dumps(report, indent=2))
    Path(f"{args.output}.md").write_text(table + "\n")
    print(f"wrote {args.output}.json and {args.output}.md")


if __name__ == "__main__":
    main()

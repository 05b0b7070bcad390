"""A CPU-sized study: the same small video VAE trained with and without semantic latent
alignment (for every model family registered, e.g. `cv` and `ktc`), then reconstruction and
the learnability probe on clips of photos no training step saw.

No pretrained vision model can be downloaded here, so the frozen "backbone" is a fixed,
hand-made feature extractor: oriented-gradient energies of a 4x4 bank of Gabor-like filters,
pooled to 8x8 patches (exported with torch.export, as a user would export DINOv2). It carries
local structure, not semantics: the study shows that the alignment machinery trains and how it
moves PSNR and learnability at this scale, not what DINOv2 alignment does at scale.

    python tools/study_alignment.py --steps 150 --seeds 0 1 -o study_alignment.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class OrientedEnergy(nn.Module):
    """(N, 3, H, W) ImageNet-normalized -> (N, 32, H/8, W/8): |Gabor-like responses| of the
    luminance at 4 orientations x 4 scales, and their squares, averaged over 8x8 patches."""

    def __init__(self):
        super().__init__()
        ys, xs = torch.meshgrid(torch.arange(9.0) - 4, torch.arange(9.0) - 4, indexing="ij")
        bank = []
        for scale in (1.0, 1.5, 2.5, 4.0):
            for k in range(4):
                a = math.pi * k / 4
                u = xs * math.cos(a) + ys * math.sin(a)
                g = torch.exp(-(xs ** 2 + ys ** 2) / (2 * scale ** 2)) * torch.cos(u * 2 / scale)
                bank.append(g - g.mean())
        self.register_buffer("bank", torch.stack(bank)[:, None])

    def forward(self, x):
        lum = x.mean(dim=1, keepdim=True)
        r = F.conv2d(lum, self.bank, padding=4)
        return F.avg_pool2d(torch.cat([r.abs(), r.pow(2)], dim=1), 8)


def write_clips(folder: Path, photos, frames: int, size: int, per_photo: int) -> None:
    from videovae.data.synthetic import load_photo, pan_zoom_clip
    from videovae.io.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    for name in photos:
        for k in range(per_photo):
            clip = pan_zoom_clip(load_photo(name), frames, (size, size), speed=0.5 + k,
                                 zoom=0.004 * (k - 1), angle=0.7 * k)
            write_video(folder / f"{name}_{k}.mp4", clip, crf=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=150, help="training steps per model")
    p.add_argument("--probe-steps", type=int, default=200)
    p.add_argument("--align-weight", type=float, default=0.5)
    p.add_argument("--archs", nargs="*", help="families to train (default: all registered)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="training seeds: each model is trained once per seed (the probe's own "
                        "seed stays fixed, so rows differ only by the VAE)")
    p.add_argument("--workdir", help="where models and data go (default: a temp dir)")
    p.add_argument("-o", "--output", default="study_alignment.json")
    args = p.parse_args()

    from videovae.data.synthetic import HELD_OUT_PHOTOS
    from videovae.learnability import ProbeConfig
    from videovae.learnability.run import learnability
    from videovae.models.registry import families
    from videovae.runtime import setup_cpu
    from videovae.training.config import load_train_config
    from videovae.training.trainer import train

    setup_cpu()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="study_alignment_"))
    work.mkdir(parents=True, exist_ok=True)
    backbone = work / "oriented_energy.pt2"
    program = torch.export.export(OrientedEnergy().eval(), (torch.zeros(2, 3, 64, 64),),
                                  dynamic_shapes=({0: torch.export.Dim("n")},))
    torch.export.save(program, str(backbone))
    held_out = work / "held_out"
    write_clips(held_out, HELD_OUT_PHOTOS, 18, 64, per_photo=4)
    configs = Path(__file__).resolve().parents[1] / "configs" / "train"
    models, seconds = {}, {}
    runs = [(arch, weight, seed) for arch in args.archs or families()
            for seed in dict.fromkeys(args.seeds) for weight in (0.0, args.align_weight)]
    for arch, weight, seed in runs:
        name = f"{arch}_{'align' if weight else 'plain'}" + (f"_s{seed}" if seed else "")
        out = work / name
        timing = out / "train_seconds.txt"  # kept with the model: a rerun reuses both
        t0 = time.perf_counter()
        if not (out / "final" / "config.json").is_file():
            own = configs / f"{arch}_tiny_cpu.yaml"  # a family's own tiny config, if any
            config = own if own.is_file() else configs / "tiny_cpu.yaml"
            train(load_train_config(str(config), [
                f"model.arch={arch}", f"train.output_dir={out}",
                f"train.max_steps={args.steps}", f"train.seed={seed}", "train.val_every=0",
                "train.checkpoint_every=0", "train.overwrite=true", f"loss.align_weight={weight}",
                f"loss.align_backbone={backbone}", "loss.align_image_size=64"]))
            timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
        seconds[name] = float(timing.read_text()) if timing.is_file() else None
        models[name] = out / "final"
    report = learnability(list(models.values()), held_out, Path(args.output), ProbeConfig(
        steps=args.probe_steps), frames=9, resolution=64, overwrite=True, names=list(models))
    rows = ["| model | train s | recon PSNR dB | val FM loss | curve area | 1-step PSNR t=0.5 |",
            "|---|---|---|---|---|---|"]
    for name, r in report["models"].items():
        mid = next(q["psnr"] for q in r["one_step_psnr"] if q["t"] == 0.5)
        took = "-" if seconds[name] is None else f"{seconds[name]:.0f}"
        rows.append(f"| {name} | {took} | {r['recon_psnr']:.2f} | "
                    f"{r['final_val_loss']:.4f} | {r['curve_area']:.4f} | {mid:.2f} |")
    table = "\n".join(rows)
    print(table)
    report["study"] = {"train_steps": args.steps, "align_weight": args.align_weight,
                       "seeds": args.seeds,
                       "train_seconds": seconds,
                       "backbone": "fixed oriented-energy features (no pretrained model here)"}
    Path(args.output).write_text(json.dumps(report, indent=2))
    Path(args.output).with_suffix(".md").write_text(table + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

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
from pathlib import Path

import numpy as np

from videovae.convert import INFLATERS, inflate_from_model
from videovae.data.synthetic import HELD_OUT_PHOTOS
from videovae.heldout import evaluate, held_out_clips, markdown, params_of, per_frame, video
from videovae.io.atomic import write_json
from videovae.models.registry import load_model
from videovae.runtime import setup_cpu
from videovae.training.budget import train_for_minutes
from videovae.training.image_vae import train_image_vae

IMAGE_VAE = dict(block_out_channels=[32, 64, 128, 128], layers_per_block=1, latent_channels=4,
                 norm_num_groups=8)  # `sd_vae_config` arguments (the demo's image VAE)
TRAIN = {  # `videovae train` settings shared by both families
    "data": {"num_workers": 0, "val_clips": 2, "val_num_frames": 9, "val_resolution": [64, 64],
             "sources": [{"name": "clips", "type": "synthetic", "num_frames": 9,
                          "resolution": 64, "batch_size": 2}]},
    "loss": {"perceptual_weight": 0.0, "kl_weight": 1e-6, "disc_weight": 0.0,
             "reg_dec_weight": 1.0, "reg_mapping": "random"},  # ktc always uses `key`
    "optim": {"lr": 1e-4, "warmup_steps": 10, "min_lr_ratio": 0.1},
    "train": {"ema_decay": 0.0, "checkpoint_every": 0, "log_every": 10, "val_every": 0,
              "seed": 0},
}


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
    rows = [evaluate("image VAE per frame", per_frame(image_vae), clips, params_of(image_vae))]
    runs = {}
    print(f"[2/3] training cv and ktc for {args.minutes} min each", flush=True)
    for arch in INFLATERS:
        inflated = inflate_from_model(image_vae, arch).eval()
        rows.append(evaluate(f"{arch} inflated", video(inflated), clips, params_of(inflated)))
        settings = {**TRAIN, "model": {"arch": arch},
                    "train": {**TRAIN["train"], "init_from_image_vae": str(work / "image_vae")}}
        runs[arch] = train_for_minutes(settings, work / arch, args.minutes, args.probe_steps)
        trained = load_model(runs[arch]["model"])
        rows.append(evaluate(f"{arch} trained ({runs[arch]['steps']} steps)", video(trained),
                             clips, params_of(trained)))

    print("[3/3] held-out clips: " + ", ".join(HELD_OUT_PHOTOS) +
          f" ({len(clips)} clips of {args.frames} frames at {args.size[0]}x{args.size[1]})")
    table = markdown(rows)
    print(table)
    report = {"minutes": args.minutes, "image_vae": {"config": IMAGE_VAE,
                                                     "steps": args.image_steps,
                                                     "l1_end": float(np.mean(losses[-10:]))},
              "train": TRAIN, "runs": runs, "rows": rows,
              "clips": {"photos": list(HELD_OUT_PHOTOS), "frames": args.frames,
                        "size": args.size, "names": list(clips)}}
    write_json(Path(f"{args.output}.json"), report, overwrite=True)
    Path(f"{args.output}.md").write_text(table + "\n")
    print(f"wrote {args.output}.json and {args.output}.md")


if __name__ == "__main__":
    main()

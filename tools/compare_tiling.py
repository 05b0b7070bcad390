"""Tiled versus untiled reconstruction on a real-photo clip: PSNR and a side-by-side image.

    python tools/compare_tiling.py --model DIR --size 256 384 --tile 128 --overlap 32 -o tiling

Writes OUT.json (PSNR of tiled vs untiled output, and of each vs the input) and OUT.png (rows:
input | untiled | tiled | 8x |tiled - untiled|, for the first and last frame) to look for seams.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from PIL import Image

from videovae import load_model
from videovae.data.synthetic import load_photo, pan_zoom_clip
from videovae.io.video import frames_to_tensor, tensor_to_frames
from videovae.metrics import psnr_per_frame
from videovae.runtime import setup_cpu


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--photo", default="astronaut")
    p.add_argument("--size", type=int, nargs=2, default=[256, 384], metavar=("H", "W"))
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("-o", "--output", default="compare_tiling")
    args = p.parse_args()
    setup_cpu()

    vae = load_model(args.model)
    clip = pan_zoom_clip(load_photo(args.photo), args.frames, tuple(args.size), speed=2.0,
                         zoom=0.005, scale=1.0)
    x = frames_to_tensor(clip)
    with torch.no_grad():
        untiled = vae(x).sample.clamp(-1, 1)
        vae.enable_tiling(tile_sample_size=args.tile, tile_sample_overlap=args.overlap)
        tiled = vae(x).sample.clamp(-1, 1)
    result = {
        "size": args.size, "frames": args.frames, "tile": args.tile, "overlap": args.overlap,
        "psnr_tiled_vs_untiled": psnr_per_frame(tiled, untiled).mean().item(),
        "psnr_untiled_vs_input": psnr_per_frame(untiled, x).mean().item(),
        "psnr_tiled_vs_input": psnr_per_frame(tiled, x).mean().item(),
        "max_abs_diff": (tiled - untiled).abs().max().item(),
    }
    a, b, c = (tensor_to_frames(v) for v in (x, untiled, tiled))
    diff = np.clip(np.abs(c.astype(int) - b.astype(int)) * 8, 0, 255).astype(np.uint8)
    rows = [np.concatenate([a[i], b[i], c[i], diff[i]], axis=1) for i in (0, args.frames - 1)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(f"{args.output}.png")
    with open(f"{args.output}.json", "w") as f:
        json.dump(result, f, indent=2)
    for k, v in result.items():
        print(f"{k}: {v}")
    print(f"wrote {args.output}.png and {args.output}.json")


if __name__ == "__main__":
    main()

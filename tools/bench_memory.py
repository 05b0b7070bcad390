"""Peak resident memory of `videovae reconstruct` on a short and a long clip, and their ratio.

Streaming should make memory independent of length (goal: ratio <= 1.15). Each run is its own
process; peak RSS is read from the kernel's accounting of that child.

    python tools/bench_memory.py --short 33 --long 1000 --size 256 -o bench_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL = dict(block_out_channels=[32, 64, 128, 128], layers_per_block=1, latent_channels=4,
             norm_num_groups=8)

MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"command failed: {' '.join(cmd)}\n{out.stderr}")
    return int(out.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--short", type=int, default=33)
    p.add_argument("--long", type=int, default=1000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--chunk-frames", type=int, default=16)
    p.add_argument("--model", help="VideoVAE folder (default: a small random-init config)")
    p.add_argument("--workdir", help="where clips and outputs go (default: a temp dir)")
    p.add_argument("-o", "--output", default="bench_memory.json")
    args = p.parse_args()

    import torch

    from videovae import VideoVAE
    from videovae.data.synthetic import load_photo, pan_zoom_clip
    from videovae.io.video import write_video

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = work / "model"
        torch.manual_seed(0)
        VideoVAE(**SMALL).save_pretrained(model)
    photo = load_photo("astronaut")
    runs = {}
    for n in (args.short, args.long):
        clip = work / f"clip_{n}.mp4"
        if not clip.exists():
            write_video(clip, pan_zoom_clip(photo, n, (args.size, args.size), speed=1.0,
                                           zoom=0.0005), fps=24)
        cmd = [sys.executable, "-m", "videovae", "reconstruct", str(clip), "--model", str(model),
               "-o", str(work / f"rec_{n}.mp4"), "--chunk-frames", str(args.chunk_frames),
               "--metrics", str(work / f"rec_{n}.json"), "--no-progress", "--overwrite"]
        mb, secs = peak_rss_mb(cmd)
        psnr = json.loads((work / f"rec_{n}.json").read_text())["psnr_mean"]
        runs[n] = {"frames": n, "peak_rss_mb": mb, "seconds": secs, "fps": n / secs,
                   "psnr_mean": psnr}
        print(f"{n:5d} frames {args.size}x{args.size}: peak RSS {mb:7.1f} MB, {secs:6.1f} s")
    ratio = runs[args.long]["peak_rss_mb"] / runs[args.short]["peak_rss_mb"]
    print(f"peak RSS ratio long/short: {ratio:.3f} (goal <= 1.15)")
    report = {"setup": {**vars(args), "model": str(model)}, "runs": list(runs.values()),
              "ratio_long_over_short": ratio}
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

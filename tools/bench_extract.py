"""Throughput of `videovae extract` with 1 and 2 processes on the CPU, on the same data.

Makes `--clips` photo pan clips and a small random-init model (or takes `--model`), runs the
extraction three times in fresh output folders: 1 process with 1 thread, 1 process with
`--threads` threads, and 2 processes (`accelerate launch`, gloo) with 1 thread each. Reports the
extraction's own time (summary.json: after model loading, up to the merged index), items/s,
frames/s and the 2-process / 1-process scaling ratios; prints a table and writes JSON.

    python tools/bench_extract.py --clips 16 --frames 33 --size 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SMALL = dict(block_out_channels=[32, 64, 64, 64], layers_per_block=1, latent_channels=4,
             norm_num_groups=8)


def make_data(work: Path, clips: int, frames: int, size: int) -> Path:
    from videovae.data.synthetic import TRAIN_PHOTOS, load_photo, pan_zoom_clip
    from videovae.io.video import write_video

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i in range(clips):
        photo = load_photo(TRAIN_PHOTOS[i % len(TRAIN_PHOTOS)])
        write_video(data / f"clip_{i:03d}.mp4",
                    pan_zoom_clip(photo, frames, (size, size), speed=1.0 + i % 3), crf=0)
    return data


def run(label, cmd, threads, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd + ["-o", str(out)], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{label} failed:\n{res.stderr[-2000:]}")
    s = json.loads((out / "summary.json").read_text())
    return {"run": label, "processes": s["processes"], "threads_per_process": threads,
            "seconds": s["seconds"], "items_per_s": s["items"] / s["seconds"],
            "frames_per_s": s["frames"] / s["seconds"], "items": s["items"],
            "frames": s["frames"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="model folder (default: a small random-init cv model)")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="threads of the 1-process run")
    p.add_argument("--workdir", help="where data and outputs go (default: a temp dir)")
    p.add_argument("-o", "--output", default="bench_extract.json")
    args = p.parse_args()

    import torch

    from videovae import VideoVAE

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_extract_"))
    data = make_data(work, args.clips, args.frames, args.size)
    model = args.model
    if model is None:
        model = work / "model"
        torch.manual_seed(0)
        VideoVAE(**SMALL).save_pretrained(model)
    extract = ["-m", "videovae", "extract", "--model", str(model), "--data", str(data),
               "--shard-items", "1", "--no-progress"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
    rows = [run("1 process, 1 thread", [sys.executable, *extract], 1, work / "out_1x1"),
            run(f"1 process, {args.threads} threads", [sys.executable, *extract], args.threads,
                work / f"out_1x{args.threads}"),
            run("2 processes, 1 thread each", launch + extract, 1, work / "out_2x1")]
    result = {"clips": args.clips, "frames_per_clip": args.frames, "size": args.size,
              "cpu_count": os.cpu_count(), "runs": rows,
              "speedup_2proc_vs_1proc_1thread": rows[0]["seconds"] / rows[2]["seconds"],
              f"speedup_2proc_vs_1proc_{args.threads}threads":
                  rows[1]["seconds"] / rows[2]["seconds"]}
    print(f"{'run':30s} {'seconds':>8s} {'items/s':>8s} {'frames/s':>9s}")
    for r in rows:
        print(f"{r['run']:30s} {r['seconds']:8.2f} {r['items_per_s']:8.2f} "
              f"{r['frames_per_s']:9.1f}")
    for k, v in result.items():
        if k.startswith("speedup"):
            print(f"{k}: {v:.2f}x")
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""Encode+decode speed and peak memory: videovae vs the per-frame image VAE vs Wan's VAE.

Each model runs in its own subprocess (clean peak-memory reading), on the same random clip, with
the same thread count; timings are medians over --repeats after one warm-up.

    python tools/bench_speed.py --size 128 --frames 17 -o bench_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

SMALL = dict(block_out_channels=[64, 128, 256, 256], layers_per_block=2, latent_channels=4,
             norm_num_groups=32)


def build(name: str, cfg: dict):
    import torch
    from diffusers import AutoencoderKL, AutoencoderKLWan

    from videovae import VideoVAE
    from videovae.convert import sd_vae_config

    torch.manual_seed(0)
    if name == "videovae":
        return VideoVAE(**cfg)
    if name == "image_vae_per_frame":
        return AutoencoderKL(**sd_vae_config(**cfg))
    if name == "wan":
        return AutoencoderKLWan()
    raise ValueError(name)


def worker(args) -> dict:
    import torch

    from videovae.runtime import setup_cpu

    setup_cpu()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    cfg = json.loads(args.config_json)
    model = build(args.worker, cfg).to(device).eval()
    x = torch.rand(1, 3, args.frames, args.size, args.size, device=device) * 2 - 1
    per_frame = args.worker == "image_vae_per_frame"
    if per_frame:
        x = x[0].transpose(0, 1)  # frames as a batch of images

    def run():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype,
                                             enabled=dtype != torch.float32):
            t0 = time.perf_counter()
            z = model.encode(x).latent_dist.mode()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            _ = model.decode(z).sample
            if device.type == "cuda":
                torch.cuda.synchronize()
            return t1 - t0, time.perf_counter() - t1, tuple(z.shape)

    run()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [run() for _ in range(args.repeats)]
    enc = statistics.median(t[0] for t in times)
    dec = statistics.median(t[1] for t in times)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": args.worker, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "latent_shape": times[0][2], "encode_s": enc, "decode_s": dec,
            "fps": args.frames / (enc + dec), "peak_mem_mb": peak / 2**20,
            "peak_mem_kind": "cuda_allocated" if device.type == "cuda" else "process_max_rss"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--config", help="YAML of VideoVAE settings (default: a small SD-layout config)")
    p.add_argument("--models", default="videovae,image_vae_per_frame,wan")
    p.add_argument("-o", "--output", default="bench_speed.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--config-json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    cfg = dict(SMALL)
    if args.config:
        import yaml

        data = yaml.safe_load(open(args.config)) or {}
        cfg.update(data.get("model", data))
    results = []
    for name in args.models.split(","):
        cmd = [sys.executable, __file__, "--worker", name, "--config-json", json.dumps(cfg)]
        for k in ("size", "frames", "repeats", "threads", "device", "dtype"):
            cmd += [f"--{k}", str(getattr(args, k))]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{name} failed:\n{out.stderr}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {name}: done", file=sys.stderr)
    base = results[0]
    for r in results:
        r["fps_ratio_videovae_over_this"] = base["fps"] / r["fps"]
        r["mem_ratio_videovae_over_this"] = base["peak_mem_mb"] / r["peak_mem_mb"]
    print(f"clip 1x3x{args.frames}x{args.size}x{args.size}, {args.device} {args.dtype}, "
          f"{args.threads} threads, median of {args.repeats}")
    print(f"{'model':22s} {'params(M)':>9s} {'enc(s)':>8s} {'dec(s)':>8s} {'fps':>8s} "
          f"{'peak(MB)':>9s} {'videovae fps / this':>20s}")
    for r in results:
        print(f"{r['model']:22s} {r['params_m']:9.1f} {r['encode_s']:8.3f} {r['decode_s']:8.3f} "
              f"{r['fps']:8.2f} {r['peak_mem_mb']:9.0f} {r['fps_ratio_videovae_over_this']:20.2f}")
    report = {"setup": {**vars(args), "videovae_config": cfg}, "results": results}
    report["setup"].pop("worker")
    report["setup"].pop("config_json")
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

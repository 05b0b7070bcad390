"""`videovae demo`: the three jobs end to end on a CPU, with nothing downloaded.

1. inflate an image VAE (a small SD-layout AutoencoderKL) and check that a one-frame video and a
   still clip reconstruct exactly as the image VAE would;
2. train a small video VAE on images and pan/zoom clips made from bundled photos (`videovae
   train` with configs/train/tiny_cpu.yaml settings);
3. reconstruct a held-out real-photo clip (metrics + side-by-side video, next to the bicubic
   8x baseline), then encode a long clip to a latent file and decode it back, streamed, and
   check the frame count round trip and streamed-versus-full-pass exactness.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

TRAIN = {  # the tiny_cpu.yaml recipe, inline so the demo runs from an installed package
    "model": {"block_out_channels": [32, 64, 64, 64], "layers_per_block": 1,
              "latent_channels": 4, "norm_num_groups": 8},
    "data": {"num_workers": 1, "val_clips": 2, "val_num_frames": 9, "val_resolution": [64, 64],
             "sources": [
                 {"name": "images", "type": "synthetic", "num_frames": 1, "resolution": 64,
                  "batch_size": 8, "weight": 0.5},
                 {"name": "clips", "type": "synthetic", "num_frames": 9, "resolution": 64,
                  "batch_size": 2, "weight": 0.5}]},
    "loss": {"perceptual_weight": 0.0, "kl_weight": 1e-6, "disc_weight": 0.0,
             "reg_dec_weight": 0.0},
    "optim": {"lr": 1e-3, "disc_lr": 1e-3, "warmup_steps": 20, "min_lr_ratio": 0.05},
    "train": {"ema_decay": 0.99, "checkpoint_every": 0, "log_every": 10, "val_every": 0},
}


def _inflation_check() -> dict:
    from diffusers import AutoencoderKL

    from .image_vae import inflate_from_model
    from .synthetic import load_photo, pan_zoom_clip
    from .video_io import frames_to_tensor

    torch.manual_seed(0)
    image_vae = AutoencoderKL(block_out_channels=[32, 64, 128, 128], layers_per_block=2,
                              norm_num_groups=8, latent_channels=4,
                              down_block_types=["DownEncoderBlock2D"] * 4,
                              up_block_types=["UpDecoderBlock2D"] * 4).eval()
    video_vae = inflate_from_model(image_vae).eval()
    x = frames_to_tensor(pan_zoom_clip(load_photo("astronaut"), 1, (64, 64)))
    with torch.no_grad():
        ref = image_vae(x[:, :, 0]).sample
        one = video_vae(x).sample[:, :, 0]
        still = video_vae(x.expand(-1, -1, 9, -1, -1)).sample
    return {"one_frame_max_abs_diff": (one - ref).abs().max().item(),
            "still_clip_max_abs_diff": (still - ref[:, :, None]).abs().max().item()}


def _bicubic_psnr(frames) -> float:
    from .metrics import psnr_per_frame
    from .video_io import frames_to_tensor

    x = frames_to_tensor(frames)[0].transpose(0, 1)  # (T, 3, H, W)
    low = F.interpolate(x, scale_factor=1 / 8, mode="area")
    up = F.interpolate(low, size=x.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
    return psnr_per_frame(x.transpose(0, 1)[None], up.transpose(0, 1)[None]).mean().item()


def run_demo(out_dir="videovae_demo", steps: int = 300, long_frames: int = 241) -> dict:
    from .config import from_dict
    from .pipeline import decode_file, encode_file, load_model, reconstruct_file
    from .synthetic import load_photo, pan_zoom_clip, write_clip
    from .train import train
    from .train_config import TrainConfig
    from .video_io import VideoReader

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    t0 = time.perf_counter()

    print("[1/3] inflating an SD-layout image VAE into a video VAE ...", flush=True)
    summary["inflation"] = _inflation_check()
    print(f"      one frame vs image VAE: max |diff| "
          f"{summary['inflation']['one_frame_max_abs_diff']:.2e}; still 9-frame clip: "
          f"{summary['inflation']['still_clip_max_abs_diff']:.2e}")

    print(f"[2/3] training a small video VAE for {steps} steps on images + clips from bundled "
          "photos (CPU: a few minutes) ...", flush=True)
    cfg = from_dict(TrainConfig, {**TRAIN, "train": {**TRAIN["train"], "max_steps": steps,
                                                     "output_dir": str(out / "train")}})
    model_dir = train(cfg)
    metrics = [json.loads(line) for line in
               (out / "train" / "metrics.jsonl").read_text().splitlines()]
    summary["train"] = {"steps": steps, "rec_start": metrics[0]["train/rec"],
                        "rec_end": sum(m["train/rec"] for m in metrics[-10:]) / 10,
                        "model": str(model_dir)}
    print(f"      L1 reconstruction loss {summary['train']['rec_start']:.3f} -> "
          f"{summary['train']['rec_end']:.3f}; model in {model_dir}")

    print("[3/3] held-out clip and a long clip through the file API ...", flush=True)
    inputs = out / "inputs"
    inputs.mkdir(exist_ok=True)
    held_out = pan_zoom_clip(load_photo("chelsea"), 33, (96, 128), speed=1.5, zoom=0.005)
    write_clip(inputs / "chelsea_33.mp4", held_out, fps=12, crf=0)
    long_clip = pan_zoom_clip(load_photo("rocket"), long_frames, (64, 96), speed=1.0)
    write_clip(inputs / f"rocket_{long_frames}.mp4", long_clip, fps=24, crf=0)

    vae = load_model(model_dir)
    report = reconstruct_file(vae, inputs / "chelsea_33.mp4", out / "chelsea_reconstructed.mp4",
                              metrics_path=out / "chelsea_metrics.json", side_by_side=True,
                              overwrite=True)
    summary["held_out"] = {"psnr": report["psnr_mean"], "ssim": report["ssim_mean"],
                           "bicubic_8x_psnr": _bicubic_psnr(held_out)}
    print(f"      held-out clip: PSNR {report['psnr_mean']:.2f} dB, SSIM "
          f"{report['ssim_mean']:.3f} (bicubic down/up x8 baseline: "
          f"{summary['held_out']['bicubic_8x_psnr']:.2f} dB; a few CPU minutes of training "
          "do not beat it, a real run does)")

    lat = out / f"rocket_{long_frames}.safetensors"
    info = encode_file(vae, inputs / f"rocket_{long_frames}.mp4", lat, overwrite=True)
    dec = decode_file(vae, lat, out / f"rocket_{long_frames}_decoded.mp4", overwrite=True)
    n_check = 33
    x = VideoReader(inputs / f"rocket_{long_frames}.mp4").read_all()[:n_check]
    from .video_io import frames_to_tensor

    with torch.no_grad():
        xt = frames_to_tensor(x)
        full = vae.encode(xt).latent_dist.mode()
        streamed = torch.cat(list(vae.stream_encode(xt.split(3, dim=2))), dim=2)
    summary["long"] = {"frames": long_frames, "latent_shape": info["latent_shape"],
                       "decoded_frames": dec["num_frames"],
                       "stream_vs_full_max_abs_diff": (streamed - full).abs().max().item()}
    print(f"      {long_frames} frames -> latents {tuple(info['latent_shape'])} -> "
          f"{dec['num_frames']} frames; streamed (3-frame chunks) vs full pass max |diff| "
          f"{summary['long']['stream_vs_full_max_abs_diff']:.1e}")
    summary["seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"done in {summary['seconds'] / 60:.1f} min; outputs in {out}/ "
          "(chelsea_reconstructed_side_by_side.mp4, summary.json, train/logs for TensorBoard)")
    return summary

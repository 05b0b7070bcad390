"""`videovae demo`: the three jobs end to end on a CPU, with nothing downloaded.

1. train a small SD-layout image VAE (diffusers `AutoencoderKL`) on crops of bundled photos,
   inflate it into a video VAE and check that a one-frame video and a still clip reconstruct
   exactly as the image VAE does;
2. fine-tune the video VAE on images and pan/zoom clips with `videovae train`, keeping the image
   VAE frozen for CV-VAE's latent regularization;
3. reconstruct a held-out real-photo clip with the image VAE per frame, the inflated video VAE
   and the fine-tuned one (PSNR/SSIM next to the bicubic 8x baseline, side-by-side video), then
   encode a long clip to a latent file and decode it back, streamed, checking the frame count and
   that streamed encoding equals a full pass.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

IMAGE_VAE = dict(block_out_channels=[32, 64, 128, 128], layers_per_block=1, latent_channels=4,
                 norm_num_groups=8)  # `sd_vae_config` arguments
FINE_TUNE = {  # `videovae train` settings for the video stage
    "data": {"num_workers": 1, "val_clips": 2, "val_num_frames": 9, "val_resolution": [64, 64],
             "sources": [
                 {"name": "images", "type": "synthetic", "num_frames": 1, "resolution": 64,
                  "batch_size": 8, "weight": 0.5},
                 {"name": "clips", "type": "synthetic", "num_frames": 9, "resolution": 64,
                  "batch_size": 2, "weight": 0.5}]},
    "loss": {"perceptual_weight": 0.0, "kl_weight": 1e-6, "disc_weight": 0.0,
             "reg_dec_weight": 1.0, "reg_mapping": "random"},
    "optim": {"lr": 5e-5, "warmup_steps": 10, "min_lr_ratio": 0.1},
    "train": {"ema_decay": 0.0, "checkpoint_every": 0, "log_every": 10, "val_every": 0},
}


@torch.no_grad()
def _compare_on_clip(x, image_vae, inflated, tuned) -> dict:
    """Held-out clip x (1, 3, T, H, W): image VAE per frame, inflated and fine-tuned video VAE."""
    from .metrics import mean_psnr_ssim

    frames = x[0].transpose(0, 1)
    per_frame = image_vae(frames).sample.transpose(0, 1)[None]
    low = F.interpolate(frames, scale_factor=1 / 8, mode="area")
    bicubic = F.interpolate(low, size=frames.shape[-2:], mode="bicubic",
                            align_corners=False).transpose(0, 1)[None]
    out = {}
    for name, rec in (("image_vae_per_frame", per_frame), ("video_vae_inflated", inflated(x).sample),
                      ("video_vae_fine_tuned", tuned(x).sample), ("bicubic_down_up_8x", bicubic)):
        psnr, ssim = mean_psnr_ssim(x, rec)
        out[name] = {"psnr": psnr, "ssim": ssim}
    return out


def run_demo(out_dir="videovae_demo", image_steps: int = 300, video_steps: int = 60,
             long_frames: int = 241) -> dict:
    from .config import from_dict
    from .convert import inflate_from_model
    from .data.synthetic import load_photo, pan_zoom_clip
    from .files import decode_file, encode_file, reconstruct_file
    from .io.video import VideoReader, frames_to_tensor, write_video
    from .models.registry import load_model
    from .training.config import TrainConfig
    from .training.image_vae import train_image_vae
    from .training.trainer import train

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    t0 = time.perf_counter()

    print(f"[1/3] training a small image VAE for {image_steps} steps on 64 px crops of bundled "
          "photos, then inflating it into a video VAE ...", flush=True)
    image_vae, losses = train_image_vae(IMAGE_VAE, image_steps)
    image_vae.save_pretrained(out / "image_vae")
    inflated = inflate_from_model(image_vae).eval()
    inflated.save_pretrained(out / "video_vae_inflated")
    x = frames_to_tensor(pan_zoom_clip(load_photo("astronaut"), 1, (64, 96)))
    with torch.no_grad():
        ref = image_vae(x[:, :, 0]).sample
        one = inflated(x).sample[:, :, 0]
        still = inflated(x.expand(-1, -1, 9, -1, -1)).sample
    summary["image_vae"] = {"steps": image_steps, "l1_start": losses[0],
                            "l1_end": float(np.mean(losses[-10:]))}
    summary["inflation"] = {"one_frame_max_abs_diff": (one - ref).abs().max().item(),
                            "still_clip_max_abs_diff": (still - ref[:, :, None]).abs().max().item()}
    print(f"      image VAE L1 {losses[0]:.3f} -> {summary['image_vae']['l1_end']:.3f}; "
          f"inflated video VAE vs image VAE: one frame max |diff| "
          f"{summary['inflation']['one_frame_max_abs_diff']:.1e}, still 9-frame clip "
          f"{summary['inflation']['still_clip_max_abs_diff']:.1e}")

    print(f"[2/3] fine-tuning the video VAE for {video_steps} steps on images + clips, with "
          "latent regularization against the frozen image VAE ...", flush=True)
    cfg = from_dict(TrainConfig, {**FINE_TUNE, "train": {
        **FINE_TUNE["train"], "max_steps": video_steps, "output_dir": str(out / "train"),
        "init_from_image_vae": str(out / "image_vae")}})
    model_dir = train(cfg)
    metrics = [json.loads(line) for line in
               (out / "train" / "metrics.jsonl").read_text().splitlines()]
    summary["fine_tune"] = {"steps": video_steps, "model": str(model_dir),
                            "rec_start": metrics[0]["train/rec"],
                            "rec_end": float(np.mean([m["train/rec"] for m in metrics[-10:]])),
                            "reg_dec_end": float(np.mean([m["train/reg_dec"]
                                                          for m in metrics[-10:]]))}

    print("[3/3] held-out clip and a long clip through the file API ...", flush=True)
    inputs = out / "inputs"
    inputs.mkdir(exist_ok=True)
    held_out = pan_zoom_clip(load_photo("chelsea"), 33, (96, 128), speed=1.5, zoom=0.005)
    write_video(inputs / "chelsea_33.mp4", held_out, fps=12, crf=0)
    vae = load_model(model_dir)
    summary["held_out"] = _compare_on_clip(frames_to_tensor(held_out), image_vae, inflated, vae)
    for name, m in summary["held_out"].items():
        print(f"      {name:22s} PSNR {m['psnr']:6.2f} dB  SSIM {m['ssim']:.3f}")
    reconstruct_file(vae, inputs / "chelsea_33.mp4", out / "chelsea_reconstructed.mp4",
                     metrics_path=out / "chelsea_metrics.json", side_by_side=True,
                     overwrite=True, progress=False)

    long_clip = pan_zoom_clip(load_photo("rocket"), long_frames, (64, 96), speed=1.0)
    write_video(inputs / f"rocket_{long_frames}.mp4", long_clip, fps=24, crf=0)
    lat = out / f"rocket_{long_frames}.safetensors"
    info = encode_file(vae, inputs / f"rocket_{long_frames}.mp4", lat, overwrite=True)
    dec = decode_file(vae, lat, out / f"rocket_{long_frames}_decoded.mp4", overwrite=True)
    xt = frames_to_tensor(VideoReader(inputs / f"rocket_{long_frames}.mp4").read_all()[:33])
    with torch.no_grad():
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
          "(chelsea_reconstructed_side_by_side.mp4, summary.json, train/logs for TensorBoard). "
          "Minutes of CPU training give blurry models; the pipeline is the point.")
    return summary

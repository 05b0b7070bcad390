"""`videovae demo`: the three jobs with the models shipped in the package, on a CPU, with nothing
downloaded, in a few minutes.

1. inflation: the shipped image VAE (SD layout, 16 latent channels) inflated into both video
   families; a one-frame video and every frame of a still clip reconstruct exactly as the image
   VAE does;
2. quality: a held-out real-photo clip (a camera pan over the cat photo, never trained on)
   reconstructed by the image VAE frame by frame, the shipped video VAE and bicubic 8x
   down-up, with PSNR; a PNG sheet of frames and a side-by-side video;
3. fine-tuning: `videovae train` continues the shipped video VAE on images and clips, with
   CV-VAE's latent regularization against the frozen shipped image VAE (progress bar with a time
   estimate); a loss-curve PNG; the fine-tuned model is measured on the same held-out clip;
4. long video: a 241-frame clip encoded into a latent file and decoded back, streamed, checking
   the frame count and that streamed encoding equals one full pass.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

FINE_TUNE = {  # `videovae train` settings of step 3 (init_from_* and max_steps are filled in)
    "data": {"num_workers": 1, "val_clips": 2, "val_num_frames": 9, "val_resolution": [64, 64],
             "sources": [
                 {"name": "images", "type": "synthetic", "num_frames": 1, "resolution": 64,
                  "batch_size": 8, "weight": 0.3},
                 {"name": "clips", "type": "synthetic", "num_frames": 9, "resolution": 64,
                  "batch_size": 2, "weight": 0.7}]},
    "loss": {"perceptual_weight": 0.0, "kl_weight": 1e-6, "disc_weight": 0.0,
             "reg_dec_weight": 1.0, "reg_mapping": "random"},
    "optim": {"lr": 2e-5, "warmup_steps": 5, "min_lr_ratio": 0.1},
    "train": {"ema_decay": 0.0, "checkpoint_every": 0, "log_every": 5, "val_every": 0},
}
SHEET_FRAMES = [0, 3, 6, 9, 12, 16, 24, 32]


@torch.no_grad()
def check_inflation(image_vae) -> dict:
    """Max |diff| to the image VAE of each inflated family on one frame and on a still clip."""
    from .convert import INFLATERS, inflate_from_model
    from .data.synthetic import load_photo, pan_zoom_clip
    from .io.video import frames_to_tensor

    x = frames_to_tensor(pan_zoom_clip(load_photo("astronaut"), 1, (64, 96)))
    ref = image_vae(x[:, :, 0]).sample
    out = {}
    for arch in INFLATERS:
        vae = inflate_from_model(image_vae, arch).eval()
        one = vae(x).sample[:, :, 0]
        still = vae(x.expand(-1, -1, 9, -1, -1)).sample
        out[arch] = {"one_frame_max_abs_diff": (one - ref).abs().max().item(),
                     "still_clip_max_abs_diff": (still - ref[:, :, None]).abs().max().item()}
    return out


def run_demo(out_dir="videovae_demo", fine_tune_steps: int = 60, long_frames: int = 241,
             model: str = "default") -> dict:
    from .convert import load_image_vae
    from .data.synthetic import load_photo, pan_zoom_clip
    from .files import decode_file, encode_file, reconstruct_file
    from .heldout import bicubic, evaluate, per_frame, video
    from .io.video import VideoReader, frames_to_tensor, tensor_to_frames, write_video
    from .models.registry import load_model
    from .plots import contact_sheet, plot_curves
    from .training.budget import run_training
    from .weights import default_model_dir, training_minutes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model_dir = default_model_dir(model)
    image_dir = default_model_dir("default-image-vae")
    summary = {"model": str(model_dir), "image_vae": str(image_dir)}
    print(f"videovae demo: shipped models in {model_dir.parent} (how they were trained: "
          f"{model_dir.parent / 'TRAINING.md'})", flush=True)

    print("[1/4] inflating the shipped image VAE into both video families ...", flush=True)
    image_vae, _ = load_image_vae(image_dir)
    summary["inflation"] = check_inflation(image_vae)
    for arch, d in summary["inflation"].items():
        print(f"      {arch}: one frame max |diff| {d['one_frame_max_abs_diff']:.1e}, still "
              f"9-frame clip {d['still_clip_max_abs_diff']:.1e} (fp32; 0 up to rounding)")

    print("[2/4] a held-out clip (a pan over the cat photo, never trained on) ...", flush=True)
    inputs = out / "inputs"
    inputs.mkdir(exist_ok=True)
    frames = pan_zoom_clip(load_photo("chelsea"), 33, (96, 128), speed=1.5, zoom=0.005)
    write_video(inputs / "chelsea_33.mp4", frames, fps=12, crf=0)
    clip = {"chelsea": frames_to_tensor(frames)}
    vae = load_model(model_dir)
    recs = {"image VAE per frame": per_frame(image_vae), "video VAE (shipped)": video(vae),
            "bicubic 8x down-up": bicubic(8)}
    rows = {name: evaluate(name, f, clip) for name, f in recs.items()}
    summary["held_out"] = {n: {"psnr": r["psnr"], "ssim": r["ssim"],
                               "color_error": r["color_error"]} for n, r in rows.items()}
    for name, r in rows.items():
        print(f"      {name:22s} PSNR {r['psnr']:6.2f} dB  SSIM {r['ssim']:.3f}  colour error "
              f"{max(r['color_error']):.1f}/255")
    with torch.no_grad():
        sheet = [("input", frames)] + [
            (f"{name}: {rows[name]['psnr']:.2f} dB", tensor_to_frames(f(clip["chelsea"])))
            for name, f in recs.items()]
    contact_sheet(sheet, SHEET_FRAMES, out / "chelsea_sheet.png")
    reconstruct_file(vae, inputs / "chelsea_33.mp4", out / "chelsea_reconstructed.mp4",
                     metrics_path=out / "chelsea_metrics.json", side_by_side=True,
                     overwrite=True, progress=False)

    print(f"[3/4] fine-tuning the shipped video VAE for {fine_tune_steps} steps on images and "
          "clips, with latent regularization against the frozen image VAE ...", flush=True)
    tuned_dir, metrics = run_training({**FINE_TUNE, "train": {
        **FINE_TUNE["train"], "init_from_pretrained": str(model_dir),
        "image_vae": str(image_dir)}}, out / "train", fine_tune_steps)
    curve = [[m["step"], m["train/rec"]] for m in metrics if m.get("train/rec") is not None]
    k = min(10, len(curve))  # batches alternate images and clips: show a running mean too
    smooth = [[s, float(np.mean([v for _, v in curve[max(0, i - k + 1):i + 1]]))]
              for i, (s, _) in enumerate(curve)]
    plot_curves({"reconstruction L1": curve, f"running mean ({k} steps)": smooth},
                out / "fine_tune_loss.png", title="fine-tuning: reconstruction loss per step")
    tuned = load_model(tuned_dir)
    r = evaluate("fine-tuned", video(tuned), clip)
    summary["fine_tune"] = {"steps": fine_tune_steps, "model": str(tuned_dir),
                            "rec_first": smooth[k - 1][1], "rec_last": smooth[-1][1],
                            "held_out_psnr": r["psnr"]}
    print(f"      L1 (mean of {k} steps) {smooth[k - 1][1]:.4f} -> {smooth[-1][1]:.4f}; held-out "
          f"PSNR {rows['video VAE (shipped)']['psnr']:.2f} -> {r['psnr']:.2f} dB (a minute of "
          "fine-tuning on a few photos moves a model; the shipped ones trained for "
          f"{training_minutes():.0f} minutes)")

    print(f"[4/4] a {long_frames}-frame clip through latent files, streamed ...", flush=True)
    long_clip = pan_zoom_clip(load_photo("rocket"), long_frames, (64, 96), speed=1.0)
    src = inputs / f"rocket_{long_frames}.mp4"
    write_video(src, long_clip, fps=24, crf=0)
    lat = out / f"rocket_{long_frames}.safetensors"
    info = encode_file(vae, src, lat, overwrite=True, progress=False)
    dec = decode_file(vae, lat, out / f"rocket_{long_frames}_decoded.mp4", overwrite=True,
                      progress=False)
    xt = frames_to_tensor(VideoReader(src).read_all()[:33])
    with torch.no_grad():
        full = vae.encode(xt).latent_dist.mode()
        streamed = torch.cat(list(vae.stream_encode(xt.split(3, dim=2))), dim=2)
    summary["long"] = {"frames": long_frames, "latent_shape": info["latent_shape"],
                       "decoded_frames": dec["num_frames"],
                       "stream_vs_full_max_abs_diff": (streamed - full).abs().max().item()}
    print(f"      {long_frames} frames -> latents {tuple(info['latent_shape'])} -> "
          f"{dec['num_frames']} frames; streamed (3-frame chunks) vs one pass max |diff| "
          f"{summary['long']['stream_vs_full_max_abs_diff']:.1e}")

    summary["seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"done in {summary['seconds'] / 60:.1f} min. Look at:\n"
          f"  {out / 'chelsea_sheet.png'}  frames: input, image VAE, video VAE, bicubic\n"
          f"  {out / 'chelsea_reconstructed_side_by_side.mp4'}  input | video VAE\n"
          f"  {out / 'fine_tune_loss.png'}  the fine-tuning loss curve\n"
          f"  {out / 'summary.json'}  every number above; {out / 'train'}/logs for TensorBoard")
    return summary

"""`videovae train`: the Accelerate training loop (one GPU to many; DDP, FSDP or DeepSpeed through
Accelerate's own config; CPU works too).

One step = a generator update over `grad_accum` micro-batches, then (once the GAN is on) a
discriminator update over the same micro-batches. Trainable weights stay fp32 and mixed
precision autocasts. The forward goes through the DDP-wrapped model; the discriminator is its
own prepared module, called unwrapped and frozen inside the generator step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .data import build_sources, list_files, make_loader
from .distributions import DiagonalGaussianDistribution
from .losses import VAELoss
from .metrics import mean_psnr_ssim
from .model import VideoVAE
from .train_config import TrainConfig
from .utils import setup_cpu

logger = logging.getLogger(__name__)


class AutoencoderStep(nn.Module):
    """What DDP wraps: encode, sample, decode (and decode the encoder-regularization latents).
    Holds the learned log-variance so that DDP syncs its gradient too."""

    def __init__(self, vae: VideoVAE, logvar: nn.Parameter):
        super().__init__()
        self.vae = vae
        self.logvar = logvar

    def forward(self, x, enc_reg_latents=None):
        moments = self.vae.encode(x).latent_dist.parameters
        z = DiagonalGaussianDistribution(moments).sample()
        x_hat = self.vae.decode(z).sample
        enc_rec = (self.vae.decode(enc_reg_latents).sample if enc_reg_latents is not None
                   else None)
        return x_hat, moments, z, enc_rec


class TrainState:
    """Step and counters, saved in every checkpoint."""

    def __init__(self):
        self.step = 0
        self.skipped_samples = 0
        self.nonfinite_steps = 0

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """Linear warmup to 1, then cosine decay to `min_ratio`."""
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def build_models(cfg: TrainConfig):
    """The video VAE to train, and the frozen image VAE (or None)."""
    run = cfg.train
    image_vae = None
    if run.init_from_image_vae:
        from .image_vae import inflate_from_model, load_image_vae

        image_vae, _ = load_image_vae(run.init_from_image_vae, run.image_vae_type,
                                      cfg.model.get("norm_num_groups"))
        vae = inflate_from_model(image_vae, where=run.init_from_image_vae, **cfg.model)
    elif run.init_from_pretrained:
        vae = VideoVAE.from_pretrained(run.init_from_pretrained, **cfg.model)
    else:
        vae = VideoVAE(**cfg.model)
    vae.encoder.requires_grad_(run.train_encoder)
    if vae.quant_conv is not None:
        vae.quant_conv.requires_grad_(run.train_encoder)
    vae.decoder.requires_grad_(run.train_decoder)
    if vae.post_quant_conv is not None:
        vae.post_quant_conv.requires_grad_(run.train_decoder)
    return vae, image_vae


# ----------------------------------------------------------------------------------------------
# Validation


def _val_clips(cfg: TrainConfig) -> list[torch.Tensor]:
    from .synthetic import HELD_OUT_PHOTOS, load_photo, pan_zoom_clip
    from .video_io import VideoReader

    d = cfg.data
    h, w = (d.val_resolution if isinstance(d.val_resolution, (list, tuple))
            else [d.val_resolution] * 2)[:2]
    clips = []
    if d.val_path:
        from .data.datasets import _to_clip

        for path in list_files(d.val_path, {".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif"}):
            frames = []
            for chunk in VideoReader(path).iter_chunks(d.val_num_frames):
                frames = chunk[: d.val_num_frames]
                break
            clips.append(_to_clip(frames, (h, w), np.random.default_rng(0), False, False)[None])
            if len(clips) == d.val_clips:
                break
    else:
        for i in range(d.val_clips):
            photo = load_photo(HELD_OUT_PHOTOS[i % len(HELD_OUT_PHOTOS)])
            frames = pan_zoom_clip(photo, d.val_num_frames, (h, w), speed=1.5 + i, zoom=0.01)
            clips.append(torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1)
    return clips


@torch.no_grad()
def validate(vae: VideoVAE, clips, out_dir: Path, step: int, accelerator) -> dict:
    """Reconstruct the validation clips; write metrics JSON and an (input | output) grid video."""
    from .video_io import VideoWriter, tensor_to_frames

    was_training = vae.training
    vae.eval()
    device = next(vae.parameters()).device
    psnrs, ssims, rows = [], [], []
    for x in clips:
        x = x.to(device)
        rec = vae(x).sample.clamp(-1, 1)
        psnr, ssim = mean_psnr_ssim(x, rec)
        psnrs.append(psnr)
        ssims.append(ssim)
        rows.append(torch.cat([x, rec], dim=4))
    vae.train(was_training)
    n = min(r.shape[2] for r in rows)
    grid = tensor_to_frames(torch.cat([r[:, :, :n] for r in rows], dim=3))
    out_dir.mkdir(parents=True, exist_ok=True)
    with VideoWriter(out_dir / f"step-{step:07d}.mp4", 8, grid.shape[1], grid.shape[2]) as wr:
        wr.write(grid)
    result = {"step": step, "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
              "psnr_per_clip": psnrs, "ssim_per_clip": ssims}
    (out_dir / f"step-{step:07d}.json").write_text(json.dumps(result, indent=2))
    accelerator.log({"val/psnr": result["psnr"], "val/ssim": result["ssim"]}, step=step)
    with contextlib.suppress(Exception):  # the TensorBoard image is a nicety
        tb = accelerator.get_tracker("tensorboard", unwrap=True)
        tb.add_image("val/first_middle_last",
                     np.concatenate([grid[0], grid[n // 2], grid[-1]], axis=0), step,
                     dataformats="HWC")
    return result


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _checkpoints(out: Path) -> list[Path]:
    ckpts = [p for p in (out / "checkpoints").glob("checkpoint-*") if p.name[11:].isdigit()]
    return sorted(ckpts, key=lambda p: int(p.name[11:]))


def _resume_path(cfg: TrainConfig, out: Path) -> Path | None:
    r = cfg.train.resume_from
    if not r:
        return None
    if r == "latest":
        ckpts = _checkpoints(out)
        return ckpts[-1] if ckpts else None
    path = Path(r)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _save_checkpoint(accelerator, out: Path, step: int, limit: int) -> None:
    if accelerator.is_main_process and limit > 0:
        for old in _checkpoints(out)[: max(0, len(_checkpoints(out)) - limit + 1)]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(out / "checkpoints" / f"checkpoint-{step}"))


# ----------------------------------------------------------------------------------------------
# The loop


def _all_finite(accelerator, value: torch.Tensor) -> bool:
    bad = torch.tensor([0.0 if torch.isfinite(value).all() else 1.0], device=value.device)
    return accelerator.reduce(bad, reduction="sum").item() == 0


def train(cfg: TrainConfig) -> Path:
    """Run training; returns the folder of the final model (EMA weights when EMA is on), or the
    checkpoint written when `train.stop_at` ends the run early."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed
    from diffusers.training_utils import EMAModel

    from .config import to_flat_dict

    setup_cpu()
    run = cfg.train
    out = Path(run.output_dir)
    accelerator = Accelerator(
        # without CUDA, run on the CPU (several processes use gloo: `accelerate launch
        # --multi_gpu --num_processes N` or `torchrun`)
        cpu=not torch.cuda.is_available(),
        mixed_precision=run.mixed_precision, log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    set_seed(run.seed, device_specific=True)  # different noise on every rank
    device = accelerator.device

    vae, image_vae = build_models(cfg)
    if run.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    loss_fn = VAELoss(cfg.loss, image_vae, vae.temporal_compression_ratio).to(device)
    model = AutoencoderStep(vae, loss_fn.logvar)
    params_g = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim
    opt_g = torch.optim.AdamW(params_g, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                              weight_decay=o.weight_decay)
    sched_g = torch.optim.lr_scheduler.LambdaLR(
        opt_g, lr_lambda(o.warmup_steps, run.max_steps, o.min_lr_ratio))
    disc = loss_fn.discriminator
    to_prepare = [model, opt_g]
    if disc is not None:
        opt_d = torch.optim.AdamW(disc.parameters(), lr=o.disc_lr, betas=tuple(o.betas),
                                  eps=o.eps, weight_decay=o.weight_decay)
        sched_d = torch.optim.lr_scheduler.LambdaLR(
            opt_d, lr_lambda(o.warmup_steps, run.max_steps, o.min_lr_ratio))
        to_prepare += [disc, opt_d]
    prepared = accelerator.prepare(*to_prepare)
    model, opt_g = prepared[:2]
    disc_ddp, opt_d = (prepared[2], prepared[3]) if disc is not None else (None, None)

    ema = None
    if run.ema_decay > 0:
        ema = EMAModel(vae.parameters(), decay=run.ema_decay, model_cls=VideoVAE,
                       model_config=vae.config)
        ema.to(device)
    state = TrainState()
    for obj in [state, sched_g] + ([sched_d] if disc is not None else []) + (
            [ema] if ema is not None else []):
        accelerator.register_for_checkpointing(obj)

    resume = _resume_path(cfg, out)
    if resume is not None:
        accelerator.load_state(str(resume))
        logger.info("resumed from %s at step %d", resume, state.step)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        accelerator.init_trackers("videovae", config=to_flat_dict(cfg))
    sources = build_sources(cfg.data, vae.temporal_compression_ratio)
    loader = iter(make_loader(cfg.data, sources, run.seed, accelerator.process_index,
                              state.step * run.grad_accum))
    val_clips = _val_clips(cfg) if accelerator.is_main_process else None
    metrics_file = out / "metrics.jsonl"
    last_layer = vae.decoder.conv_out.weight
    n_params = sum(p.numel() for p in vae.parameters()) / 1e6
    logger.info("training %.1fM parameters on %d process(es), %s, from step %d to %d", n_params,
                accelerator.num_processes, device, state.step, run.max_steps)

    bar = tqdm(total=run.max_steps, initial=state.step, desc="train",
               disable=not accelerator.is_local_main_process)
    stop = min(run.max_steps, run.stop_at or run.max_steps)
    while state.step < stop:
        t0 = time.perf_counter()
        micro = [next(loader) for _ in range(run.grad_accum)]
        batches = [m["pixels"].to(device) for m in micro]
        skipped = torch.tensor([float(sum(m["skipped"] for m in micro))], device=device)
        step_logs: dict[str, float] = defaultdict(float)
        recons, ok = [], True

        # ---- generator
        if disc is not None:
            disc.requires_grad_(False)
        for i, x in enumerate(batches):
            sync = i == len(batches) - 1
            with (contextlib.nullcontext() if sync else accelerator.no_sync(model)):
                with accelerator.autocast():
                    enc_lat = (loss_fn.encoder_reg_latents(x) if cfg.loss.reg_enc_weight > 0
                               else None)
                    x_hat, moments, z, enc_rec = model(x, enc_lat)
                    loss, logs = loss_fn.generator_loss(
                        x, x_hat, DiagonalGaussianDistribution(moments), z, state.step,
                        last_layer, enc_rec)
                if not _all_finite(accelerator, loss.detach()):
                    ok = False
                    break
                accelerator.backward(loss / len(batches))
            recons.append(x_hat.detach())
            for k, v in logs.items():
                step_logs[k] += float(v) / len(batches)
        if disc is not None:
            disc.requires_grad_(True)
        grad_norm = float("nan")
        if ok:
            if o.grad_clip > 0:
                grad_norm = float(accelerator.clip_grad_norm_(params_g, o.grad_clip))
            grads_ok = math.isfinite(grad_norm) or o.grad_clip <= 0
            if grads_ok or accelerator.scaler is not None:
                opt_g.step()  # with fp16 the scaler skips inf gradients and lowers its scale
            if grads_ok:
                sched_g.step()
            ok = grads_ok
        opt_g.zero_grad(set_to_none=True)

        # ---- discriminator
        if ok and loss_fn.gan_active(state.step):
            for i, (x, x_hat) in enumerate(zip(batches, recons)):
                sync = i == len(batches) - 1
                with (contextlib.nullcontext() if sync else accelerator.no_sync(disc_ddp)):
                    with accelerator.autocast():
                        logits = disc_ddp(torch.cat([x, x_hat]))  # one forward through DDP
                        real, fake = logits.chunk(2)
                        d_loss, d_logs = loss_fn.discriminator_loss_from_logits(real, fake)
                    accelerator.backward(d_loss / len(batches))
                for k, v in d_logs.items():
                    step_logs[k] += float(v) / len(batches)
            if o.grad_clip > 0:
                accelerator.clip_grad_norm_(disc.parameters(), o.grad_clip)
            opt_d.step()
            sched_d.step()
            opt_d.zero_grad(set_to_none=True)

        if ok and ema is not None:
            ema.step(vae.parameters())
        state.skipped_samples += int(accelerator.reduce(skipped, reduction="sum").item())
        if not ok:
            state.nonfinite_steps += 1
            logger.warning("step %d: non-finite loss or gradient, update skipped (%d so far)",
                           state.step, state.nonfinite_steps)
        state.step += 1
        bar.update(1)

        # ---- logging (losses averaged over ranks)
        keys = sorted(step_logs)
        vals = accelerator.reduce(torch.tensor([step_logs[k] for k in keys] or [0.0],
                                               device=device), reduction="mean").tolist()
        n_samples = sum(b.shape[0] for b in batches) * accelerator.num_processes
        record = {"step": state.step, **{f"train/{k}": v for k, v in zip(keys, vals)},
                  "train/lr": sched_g.get_last_lr()[0], "train/grad_norm": grad_norm,
                  "train/samples_per_s": n_samples / (time.perf_counter() - t0),
                  "train/skipped_samples": state.skipped_samples,
                  "train/nonfinite_steps": state.nonfinite_steps}
        if accelerator.is_main_process:
            with open(metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record.get('train/loss', float('nan')):.4f}")
        if state.step % run.log_every == 0 or state.step == run.max_steps:
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.step)

        if run.checkpoint_every and state.step % run.checkpoint_every == 0:
            _save_checkpoint(accelerator, out, state.step, run.checkpoints_total_limit)
        if (run.val_every and state.step % run.val_every == 0 and state.step < run.max_steps
                and accelerator.is_main_process):
            _with_ema(ema, vae, lambda: validate(vae, val_clips, out / "val", state.step,
                                                 accelerator))
    bar.close()

    accelerator.wait_for_everyone()
    if state.step < run.max_steps:  # stopped early: leave a checkpoint to resume from
        ckpt = out / "checkpoints" / f"checkpoint-{state.step}"
        if not ckpt.is_dir():
            _save_checkpoint(accelerator, out, state.step, run.checkpoints_total_limit)
        accelerator.end_training()
        logger.info("stopped at step %d of %d; resume with train.resume_from=latest",
                    state.step, run.max_steps)
        return ckpt
    final = out / "final"
    if accelerator.is_main_process:
        _with_ema(ema, vae, lambda: (validate(vae, val_clips, out / "val", state.step,
                                              accelerator),
                                     vae.save_pretrained(final)))
        logger.info("saved %s weights to %s", "EMA" if ema is not None else "final", final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _with_ema(ema, vae, fn):
    """Run fn with the EMA weights swapped into vae."""
    if ema is None:
        return fn()
    ema.store(vae.parameters())
    ema.copy_to(vae.parameters())
    try:
        return fn()
    finally:
        ema.restore(vae.parameters())

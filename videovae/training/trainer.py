"""`videovae train`: the Accelerate training loop (one GPU to many; DDP, FSDP or DeepSpeed through
Accelerate's own config; CPU works too). The step itself is in `step.py`, checkpoints in
`checkpointing.py`, validation in `validation.py`.

Divergence policy: a step whose loss or gradient is not finite is skipped (no update), logged
and counted. `train.max_nonfinite_steps` such steps in a row end the run with
`TrainingDivergedError` (non-zero exit). No checkpoint is written during a run of skipped
steps, so the newest checkpoint is the last good one, and a model whose weights or validation
outputs are not finite is never saved.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import to_flat_dict
from ..data import build_sources, make_loader, validation_clips
from ..errors import TrainingDivergedError, VideoVAEError, one_line
from ..io.atomic import atomic_output, to_json
from ..runtime import setup_cpu
from .build import build_models
from .checkpointing import checkpoint_path, list_checkpoints, resume_path, save_checkpoint
from .config import TrainConfig
from .losses import VAELoss
from .optim import adamw_with_schedule, build_ema, with_ema
from .step import AutoencoderForward, Stepper, TrainState
from .validation import validate

logger = logging.getLogger(__name__)


def _accelerator(run, out: Path):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed

    accelerator = Accelerator(
        # without CUDA, run on the CPU (several processes use gloo: `accelerate launch
        # --multi_gpu --num_processes N` or `torchrun`)
        cpu=not torch.cuda.is_available(),
        mixed_precision=run.mixed_precision, log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    set_seed(run.seed, device_specific=True)  # different noise on every rank
    return accelerator


def _stepper(cfg: TrainConfig, accelerator, vae, loss_fn):
    """Optimizers and schedules for the autoencoder (and discriminator), prepared."""
    run, o = cfg.train, cfg.optim
    model = AutoencoderForward(vae, loss_fn.logvar,
                               loss_fn.align.proj if loss_fn.align is not None else None)
    params_g = [p for p in model.parameters() if p.requires_grad]
    opt_g, sched_g = adamw_with_schedule(params_g, o.lr, o, run.max_steps)
    disc = loss_fn.discriminator
    if disc is None:
        model, opt_g = accelerator.prepare(model, opt_g)
        return Stepper(accelerator, model, params_g, loss_fn, opt_g, sched_g,
                       grad_clip=o.grad_clip, reg_enc=cfg.loss.reg_enc_weight > 0)
    opt_d, sched_d = adamw_with_schedule(disc.parameters(), o.disc_lr, o, run.max_steps)
    model, opt_g, disc_ddp, opt_d = accelerator.prepare(model, opt_g, disc, opt_d)
    return Stepper(accelerator, model, params_g, loss_fn, opt_g, sched_g, disc_ddp, opt_d,
                   sched_d, grad_clip=o.grad_clip, reg_enc=cfg.loss.reg_enc_weight > 0)


def train(cfg: TrainConfig) -> Path:
    """Run training; returns the folder of the final model (EMA weights when EMA is on), or the
    checkpoint written when `train.stop_at` ends the run early."""
    setup_cpu()
    run = cfg.train
    out = Path(run.output_dir)
    accelerator = _accelerator(run, out)
    device = accelerator.device
    vae, image_vae = build_models(cfg)
    if run.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    loss_fn = VAELoss(cfg.loss, image_vae, vae.temporal_compression_ratio, vae).to(device)
    stepper = _stepper(cfg, accelerator, vae, loss_fn)
    ema = build_ema(vae, run.ema_decay, device)
    state = TrainState()
    for obj in (state, stepper.sched_g, stepper.sched_d, ema):
        if obj is not None:
            accelerator.register_for_checkpointing(obj)
    resume = resume_path(run.resume_from, out)
    if resume is not None:
        try:
            accelerator.load_state(str(resume))
        except Exception as e:  # noqa: BLE001 - a readable line, not a pickle traceback
            raise VideoVAEError(f"cannot resume from {resume}: {type(e).__name__}: "
                                f"{one_line(e)} (an incomplete checkpoint? resume from another "
                                "one)") from e
        logger.info("resumed from %s at step %d", resume, state.step)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(out / "metrics.jsonl", state.step)
        # TensorBoard hides the events a resumed run writes again (steps after the checkpoint)
        accelerator.init_trackers("videovae", config=to_flat_dict(cfg), init_kwargs={
            "tensorboard": {"purge_step": state.step + 1} if resume is not None else {}})
    sources = build_sources(cfg.data, vae.temporal_compression_ratio)
    loader = iter(make_loader(cfg.data, sources, run.seed, accelerator.process_index,
                              state.step * run.grad_accum))
    val_clips = validation_clips(cfg.data) if accelerator.is_main_process else None
    logger.info("training %.1fM parameters (arch %s) on %d process(es), %s, from step %d to %d",
                sum(p.numel() for p in vae.parameters()) / 1e6, vae.arch,
                accelerator.num_processes, device, state.step, run.max_steps)

    def validate_now():
        return with_ema(ema, vae, lambda: validate(vae, val_clips, out / "val", state.step,
                                                   accelerator))

    def diverged(why: str):
        ckpts = list_checkpoints(out)
        return TrainingDivergedError(
            f"training diverged at step {state.step}: {why}; no model saved, the last good "
            f"checkpoint is {ckpts[-1] if ckpts else 'none'} (lower optim.lr, or see "
            "train.max_nonfinite_steps)")

    bar = tqdm(total=run.max_steps, initial=state.step, desc="train",
               disable=not accelerator.is_local_main_process)
    stop = min(run.max_steps, run.stop_at or run.max_steps)
    streak = 0  # non-finite steps in a row
    try:
        while state.step < stop:
            t0 = time.perf_counter()
            micro = [_next_batch(loader) for _ in range(run.grad_accum)]
            batches = [m["pixels"].to(device) for m in micro]
            ok, logs, recons, grad_norm = stepper.generator(batches, state.step)
            if ok and loss_fn.gan_active(state.step):
                logs.update(stepper.discriminator(batches, recons))
            if ok and ema is not None:
                ema.step(vae.parameters())
            skipped = torch.tensor([float(sum(m["skipped"] for m in micro))], device=device)
            state.skipped_samples += int(accelerator.reduce(skipped, reduction="sum").item())
            state.step += 1  # steps are counted from 1, as in metrics.jsonl and checkpoint names
            streak = 0 if ok else streak + 1
            if not ok:
                state.nonfinite_steps += 1
                logger.warning("step %d: non-finite loss or gradient, update skipped (%d so far, "
                               "%d in a row)", state.step, state.nonfinite_steps, streak)
            bar.update(1)
            _log_step(accelerator, run, out, state, logs, stepper, grad_norm,
                      sum(b.shape[0] for b in batches), time.perf_counter() - t0, bar)
            if run.max_nonfinite_steps and streak >= run.max_nonfinite_steps:
                raise diverged(f"{streak} non-finite steps in a row (train.max_nonfinite_steps="
                               f"{run.max_nonfinite_steps})")
            if run.checkpoint_every and state.step % run.checkpoint_every == 0:
                if streak:  # the newest checkpoint stays the last good one
                    logger.warning("step %d: no checkpoint during non-finite steps", state.step)
                elif not _weights_finite(vae, accelerator):
                    raise diverged("the weights are no longer finite")
                else:
                    save_checkpoint(accelerator, out, state.step, run.checkpoints_total_limit)
            if (run.val_every and state.step % run.val_every == 0 and state.step < run.max_steps
                    and accelerator.is_main_process):
                validate_now()
    except VideoVAEError:
        accelerator.end_training()
        raise
    finally:
        bar.close()

    accelerator.wait_for_everyone()
    if state.step < run.max_steps:  # stopped early: leave a checkpoint to resume from
        ckpt = checkpoint_path(out, state.step)
        if not ckpt.is_dir():
            save_checkpoint(accelerator, out, state.step, run.checkpoints_total_limit)
        accelerator.end_training()
        logger.info("stopped at step %d of %d; resume with train.resume_from=latest",
                    state.step, run.max_steps)
        return ckpt
    final = out / "final"
    if accelerator.is_main_process:
        if validate_now()["nonfinite"]:
            accelerator.end_training()
            raise diverged("the final model's validation outputs are not finite")
        with_ema(ema, vae, lambda: _save_final(vae, final))
        logger.info("saved %s weights to %s", "EMA" if ema is not None else "final", final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _next_batch(loader) -> dict:
    batch = next(loader)
    if "error" in batch:  # a source with only unreadable files (see StepBatches)
        raise VideoVAEError(batch["error"])
    return batch


def _weights_finite(vae, accelerator=None) -> bool:
    """Whether every weight is finite (on every rank, given the accelerator: FSDP shards)."""
    ok = torch.stack([p.detach().isfinite().all() for p in vae.parameters()]).all()
    if accelerator is None:
        return bool(ok)
    bad = (~ok).float().reshape(1).to(accelerator.device)
    return accelerator.reduce(bad, reduction="sum").item() == 0


def _save_final(vae, final: Path) -> None:
    if not _weights_finite(vae):
        raise TrainingDivergedError(f"the final weights are not finite; {final} not written")
    with atomic_output(final, is_dir=True, overwrite=True) as tmp:
        vae.save_pretrained(tmp)


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of steps <= `step` (where this run starts): a resumed run replays the
    steps after its checkpoint, and must not list them twice."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a row torn by a kill
    if len(keep) < len(lines):
        logger.warning("%s: dropped %d rows after step %d (this run writes them again)", path,
                       len(lines) - len(keep), step)
        with atomic_output(path, overwrite=True) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in keep))


def _log_step(accelerator, run, out: Path, state, logs, stepper, grad_norm, batch_samples,
              seconds, bar) -> None:
    """Losses averaged over ranks -> metrics.jsonl (every step) and TensorBoard (log_every)."""
    keys = sorted(logs)
    vals = accelerator.reduce(torch.tensor([logs[k] for k in keys] or [0.0],
                                           device=accelerator.device), reduction="mean").tolist()
    record = {"step": state.step, **{f"train/{k}": v for k, v in zip(keys, vals)},
              "train/lr": stepper.sched_g.get_last_lr()[0], "train/grad_norm": grad_norm,
              "train/samples_per_s": batch_samples * accelerator.num_processes / seconds,
              "train/step_seconds": seconds,
              "train/skipped_samples": state.skipped_samples,
              "train/nonfinite_steps": state.nonfinite_steps}
    if accelerator.is_main_process:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(to_json(record) + "\n")  # non-finite values (a skipped step) are null
        bar.set_postfix(loss=f"{record.get('train/loss', math.nan):.4f}")
    if state.step % run.log_every == 0 or state.step == run.max_steps:
        accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.step)

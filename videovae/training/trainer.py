"""`videovae train`: the Accelerate training loop (one GPU to many; DDP, FSDP or DeepSpeed through
Accelerate's own config; CPU works too). The step itself is in `step.py`, checkpoints in
`checkpointing.py`, validation in `validation.py`.

`train` reads top to bottom: check the config and the output folder (nothing is created before
both pass, so a bad config leaves no run folder), build (models, losses, optimizers, EMA, data),
resume, open the run folder, run the loop, finish (final model, or a checkpoint when stopped
early).

Output folder: a new run (no `train.resume_from`) refuses a folder that holds a run (`final/`,
`checkpoints/checkpoint-*`, `metrics.jsonl`) unless `train.overwrite` is set, which removes that
run's files first, so no stale checkpoint of it is left for `resume_from=latest`.

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
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import to_flat_dict
from ..data import build_sources, make_loader, validation_clips
from ..errors import ConfigError, TrainingDivergedError, VideoVAEError
from ..io.atomic import atomic_output, to_json
from ..runtime import setup_cpu
from .build import build_models, check_model_size
from .checkpointing import (
    Resumable,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    resume_path,
    save_checkpoint,
)
from .config import TrainConfig, check_data_paths, check_train_config
from .losses import VAELoss
from .optim import adamw_with_schedule, build_ema, with_ema
from .step import AutoencoderForward, Stepper, TrainState
from .validation import validate

logger = logging.getLogger(__name__)

RUN_FILES = ("final", "checkpoints", "metrics.jsonl", "logs", "val")  # what a run writes


def train(cfg: TrainConfig) -> Path:
    """Run training; returns the folder of the final model (EMA weights when EMA is on), or the
    checkpoint written when `train.stop_at` ends the run early."""
    setup_cpu()
    out = _check(cfg)
    run = _build(cfg, out)
    _resume(run)
    _open_run_folder(run)
    _loop(run)
    return _finish(run)


# ----------------------------------------------------------------------------------------------
# Checks (nothing is built or created before they pass)


def _check(cfg: TrainConfig) -> Path:
    """Config values, data paths, the model's size, the output folder; returns that folder."""
    check_train_config(cfg)
    check_data_paths(cfg.data)
    check_model_size(cfg)
    out = Path(cfg.train.output_dir)
    check_output_dir(out, cfg.train)
    return out


def holds_run(out: Path) -> list[str]:
    """What of a training run `out` holds: final/, checkpoints, metrics.jsonl."""
    found = [name for name in ("final", "metrics.jsonl") if (out / name).exists()]
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and any(p.name.lstrip(".").startswith("checkpoint-")
                              for p in ckpts.iterdir()):
        found.append("checkpoints")
    return found


def check_output_dir(out: Path, run) -> None:
    """A new run (no resume) into a folder that holds a run is refused unless told to
    overwrite; nothing is touched here."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"train.output_dir: {out} is a file; name a folder")
    if run.resume_from or run.overwrite:
        return
    found = holds_run(out)
    if found:
        raise ConfigError(f"{out} holds a run ({', '.join(found)}): resume it "
                          "(train.resume_from=latest) or choose another train.output_dir "
                          "(train.overwrite=true replaces it)")


def _remove_old_run(out: Path) -> None:
    """train.overwrite: remove what an earlier run wrote (the folder's other files stay)."""
    removed = []
    for name in RUN_FILES:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    if removed:
        logger.warning("train.overwrite: removed the earlier run in %s (%s)", out,
                       ", ".join(removed))


# ----------------------------------------------------------------------------------------------
# Building


@dataclass
class _Run:
    """Everything the steps of `train` share."""

    cfg: TrainConfig
    out: Path
    accelerator: Any
    vae: Any
    loss_fn: VAELoss
    stepper: Stepper
    ema: Any
    sources: list
    val_clips: list | None
    resume: Path | None = None
    state: TrainState = field(default_factory=TrainState)

    @property
    def resumable(self) -> Resumable:
        schedulers = {"autoencoder": self.stepper.sched_g}
        if self.stepper.sched_d is not None:
            schedulers["discriminator"] = self.stepper.sched_d
        return Resumable(self.state, schedulers, self.ema,
                         [n for n, _ in self.vae.named_parameters()])

    def save_checkpoint(self) -> Path:
        return save_checkpoint(self.accelerator, self.out, self.state.step,
                               self.cfg.train.checkpoints_total_limit, self.resumable)

    def validate_now(self) -> dict:
        return with_ema(self.ema, self.vae, lambda: validate(
            self.vae, self.val_clips, self.out / "val", self.state.step, self.accelerator))

    def diverged(self, why: str) -> TrainingDivergedError:
        ckpts = list_checkpoints(self.out)
        return TrainingDivergedError(
            f"training diverged at step {self.state.step}: {why}; no model saved, the last good "
            f"checkpoint is {ckpts[-1] if ckpts else 'none'} (lower optim.lr, or see "
            "train.max_nonfinite_steps)")


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


def _build(cfg: TrainConfig, out: Path) -> _Run:
    """Accelerator, models, loss, optimizers, EMA and data sources; nothing written yet."""
    run = cfg.train
    accelerator = _accelerator(run, out)
    vae, image_vae = build_models(cfg)
    if run.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    loss_fn = VAELoss(cfg.loss, image_vae, vae.temporal_compression_ratio,
                      vae).to(accelerator.device)
    stepper = _stepper(cfg, accelerator, vae, loss_fn)
    ema = build_ema(vae, run.ema_decay, accelerator.device)
    sources = build_sources(cfg.data, vae.temporal_compression_ratio)
    val_clips = validation_clips(cfg.data) if accelerator.is_main_process else None
    return _Run(cfg, out, accelerator, vae, loss_fn, stepper, ema, sources, val_clips)


# ----------------------------------------------------------------------------------------------
# Resuming and the run folder


def _resume(r: _Run) -> None:
    r.resume = resume_path(r.cfg.train.resume_from, r.out)
    if r.resume is not None:
        load_checkpoint(r.accelerator, r.resume, r.resumable)
        logger.info("resumed from %s at step %d", r.resume, r.state.step)


def _open_run_folder(r: _Run) -> None:
    """Create the run folder (after removing an earlier run there with train.overwrite), trim
    metrics.jsonl to the resumed step, start TensorBoard."""
    if r.accelerator.is_main_process:
        if r.cfg.train.overwrite and not r.cfg.train.resume_from:
            _remove_old_run(r.out)
        r.out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(r.out / "metrics.jsonl", r.state.step)
        # TensorBoard hides the events a resumed run writes again (steps after the checkpoint)
        r.accelerator.init_trackers("videovae", config=to_flat_dict(r.cfg), init_kwargs={
            "tensorboard": {"purge_step": r.state.step + 1} if r.resume is not None else {}})
    r.accelerator.wait_for_everyone()
    logger.info("training %.1fM parameters (arch %s) on %d process(es), %s, from step %d to %d",
                sum(p.numel() for p in r.vae.parameters()) / 1e6, r.vae.arch,
                r.accelerator.num_processes, r.accelerator.device, r.state.step,
                r.cfg.train.max_steps)


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


# ----------------------------------------------------------------------------------------------
# The loop


def _loop(r: _Run) -> None:
    """Steps until train.max_steps (or train.stop_at); checkpoints, validation, divergence."""
    run = r.cfg.train
    loader = iter(make_loader(r.cfg.data, r.sources, run.seed, r.accelerator.process_index,
                              r.state.step * run.grad_accum))
    bar = tqdm(total=run.max_steps, initial=r.state.step, desc="train",
               disable=not r.accelerator.is_local_main_process)
    stop = min(run.max_steps, run.stop_at or run.max_steps)
    streak = 0  # non-finite steps in a row
    try:
        while r.state.step < stop:
            streak = _step(r, loader, bar, streak)
            _after_step(r, streak)
    except VideoVAEError:
        r.accelerator.end_training()
        raise
    finally:
        bar.close()


def _step(r: _Run, loader, bar, streak: int) -> int:
    """One optimization step, counted and logged; returns the non-finite streak."""
    run, state, device = r.cfg.train, r.state, r.accelerator.device
    t0 = time.perf_counter()
    micro = [_next_batch(loader) for _ in range(run.grad_accum)]
    batches = [m["pixels"].to(device) for m in micro]
    ok, logs, recons, grad_norm = r.stepper.update_autoencoder(batches, state.step)
    if ok and r.loss_fn.gan_active(state.step):
        logs.update(r.stepper.update_discriminator(batches, recons))
    if ok and r.ema is not None:
        r.ema.step(r.vae.parameters())
    skipped = torch.tensor([float(sum(m["skipped"] for m in micro))], device=device)
    state.skipped_samples += int(r.accelerator.reduce(skipped, reduction="sum").item())
    state.step += 1  # steps are counted from 1, as in metrics.jsonl and checkpoint names
    streak = 0 if ok else streak + 1
    if not ok:
        state.nonfinite_steps += 1
        logger.warning("step %d: non-finite loss or gradient, update skipped (%d so far, "
                       "%d in a row)", state.step, state.nonfinite_steps, streak)
    bar.update(1)
    _log_step(r.accelerator, run, r.out, state, logs, r.stepper, grad_norm,
              sum(b.shape[0] for b in batches), time.perf_counter() - t0, bar)
    return streak


def _after_step(r: _Run, streak: int) -> None:
    """Divergence check, checkpoint and validation as the schedule says."""
    run, step = r.cfg.train, r.state.step
    if run.max_nonfinite_steps and streak >= run.max_nonfinite_steps:
        raise r.diverged(f"{streak} non-finite steps in a row (train.max_nonfinite_steps="
                         f"{run.max_nonfinite_steps})")
    if run.checkpoint_every and step % run.checkpoint_every == 0:
        if streak:  # the newest checkpoint stays the last good one
            logger.warning("step %d: no checkpoint during non-finite steps", step)
        elif not _weights_finite(r.vae, r.accelerator):
            raise r.diverged("the weights are no longer finite")
        else:
            r.save_checkpoint()
    if (run.val_every and step % run.val_every == 0 and step < run.max_steps
            and r.accelerator.is_main_process):
        r.validate_now()


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


def _log_step(accelerator, run, out: Path, state, logs, stepper, grad_norm, batch_samples,
              seconds, bar) -> None:
    """Losses averaged over ranks -> metrics.jsonl (every step) and TensorBoard (log_every)."""
    keys = sorted(logs)
    vals = accelerator.reduce(torch.tensor([logs[k] for k in keys] or [0.0],
                                           device=accelerator.device), reduction="mean").tolist()
    # (no logs: `vals` is one padding value)
    record = {"step": state.step, **{f"train/{k}": v for k, v in zip(keys, vals, strict=False)},
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


# ----------------------------------------------------------------------------------------------
# Finishing


def _finish(r: _Run) -> Path:
    """The final model (validated, EMA weights when EMA is on), or, stopped early by
    train.stop_at, the checkpoint to resume from."""
    run, state, accelerator = r.cfg.train, r.state, r.accelerator
    accelerator.wait_for_everyone()
    if state.step < run.max_steps:  # stopped early: leave a checkpoint to resume from
        ckpt = checkpoint_path(r.out, state.step)
        if not ckpt.is_dir():
            r.save_checkpoint()
        accelerator.end_training()
        logger.info("stopped at step %d of %d; resume with train.resume_from=latest",
                    state.step, run.max_steps)
        return ckpt
    final = r.out / "final"
    if accelerator.is_main_process:
        if r.validate_now()["nonfinite"]:
            accelerator.end_training()
            raise r.diverged("the final model's validation outputs are not finite")
        with_ema(r.ema, r.vae, lambda: _save_final(r.vae, final))
        logger.info("saved %s weights to %s", "EMA" if r.ema is not None else "final", final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _save_final(vae, final: Path) -> None:
    if not _weights_finite(vae):
        raise TrainingDivergedError(f"the final weights are not finite; {final} not written")
    with atomic_output(final, is_dir=True, overwrite=True) as tmp:
        vae.save_pretrained(tmp)

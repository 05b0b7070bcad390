"""One optimization step: an autoencoder (generator) update over `grad_accum` micro-batches, then
(once the GAN is on) a discriminator update over the same micro-batches
(`Stepper.update_autoencoder`, `Stepper.update_discriminator`).

Trainable weights stay fp32 and mixed precision autocasts. The forward goes through the
DDP-wrapped `AutoencoderForward`; the discriminator is its own prepared module, frozen inside
the generator step. A non-finite loss or gradient on any rank skips the update on every rank.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict

import torch
import torch.nn as nn

from ..models.distributions import DiagonalGaussianDistribution


class AutoencoderForward(nn.Module):
    """What DDP wraps: encode, sample, decode (and decode the encoder-regularization latents).
    Holds the loss's trainable parts (the learned log-variance, the alignment projection) so
    that DDP syncs their gradients too."""

    def __init__(self, vae, logvar: nn.Parameter, loss_modules: nn.Module | None = None):
        super().__init__()
        self.vae = vae
        self.logvar = logvar
        self.loss_modules = loss_modules

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


def _all_finite(accelerator, value: torch.Tensor) -> bool:
    """True when `value` is finite on every rank."""
    bad = torch.tensor([0.0 if torch.isfinite(value).all() else 1.0], device=value.device)
    return accelerator.reduce(bad, reduction="sum").item() == 0


def _accumulate(accelerator, module, batches):
    """(index, batch, context) per micro-batch: gradients sync only on the last one."""
    for i, x in enumerate(batches):
        last = i == len(batches) - 1
        yield i, x, contextlib.nullcontext() if last else accelerator.no_sync(module)


class Stepper:
    """Holds what a step needs (prepared model, loss, optimizers, schedules) and runs steps."""

    def __init__(self, accelerator, model, params_g, loss_fn, opt_g, sched_g, disc=None,
                 opt_d=None, sched_d=None, grad_clip: float = 1.0, reg_enc: bool = False):
        self.acc, self.model, self.loss_fn = accelerator, model, loss_fn
        self.opt_g, self.sched_g = opt_g, sched_g
        self.disc, self.opt_d, self.sched_d = disc, opt_d, sched_d
        self.grad_clip, self.reg_enc = grad_clip, reg_enc
        self.vae = accelerator.unwrap_model(model).vae
        self.params_g = params_g

    def update_autoencoder(self, batches, step: int):
        """One AdamW update of the autoencoder (the GAN's generator) over the micro-batches.
        Returns (ok, logs, reconstructions, grad_norm); ok is False when the update was skipped
        for a non-finite loss or gradient."""
        acc, loss_fn = self.acc, self.loss_fn
        logs: dict[str, float] = defaultdict(float)
        recons, ok = [], True
        raw_disc = loss_fn.discriminator
        if raw_disc is not None:
            raw_disc.requires_grad_(False)
        for _, x, ctx in _accumulate(acc, self.model, batches):
            with ctx:
                with acc.autocast():
                    enc_lat = loss_fn.encoder_reg_latents(x) if self.reg_enc else None
                    x_hat, moments, z, enc_rec = self.model(x, enc_lat)
                    loss, step_logs = loss_fn.generator_loss(
                        x, x_hat, DiagonalGaussianDistribution(moments), z, step,
                        self.vae.last_decoder_layer(), enc_rec)
                if not _all_finite(acc, loss.detach()):
                    ok = False
                    break
                acc.backward(loss / len(batches))
            recons.append(x_hat.detach())
            for k, v in step_logs.items():
                logs[k] += float(v) / len(batches)
        if raw_disc is not None:
            raw_disc.requires_grad_(True)
        grad_norm = float("nan")
        if ok:
            if self.grad_clip > 0:
                grad_norm = float(acc.clip_grad_norm_(self.params_g, self.grad_clip))
            grads_ok = math.isfinite(grad_norm) or self.grad_clip <= 0
            if grads_ok or acc.scaler is not None:
                self.opt_g.step()  # with fp16 the scaler skips inf gradients and lowers its scale
            if grads_ok:
                self.sched_g.step()
            ok = grads_ok
        self.opt_g.zero_grad(set_to_none=True)
        return ok, logs, recons, grad_norm

    def update_discriminator(self, batches, recons) -> dict[str, float]:
        """Hinge-loss update of the discriminator on real clips and the reconstructions."""
        acc = self.acc
        logs: dict[str, float] = defaultdict(float)
        for i, x, ctx in _accumulate(acc, self.disc, batches):
            with ctx:
                with acc.autocast():
                    logits = self.disc(torch.cat([x, recons[i]]))  # one forward through DDP
                    d_loss, d_logs = self.loss_fn.discriminator_loss_from_logits(
                        *logits.chunk(2))
                acc.backward(d_loss / len(batches))
            for k, v in d_logs.items():
                logs[k] += float(v) / len(batches)
        if self.grad_clip > 0:
            acc.clip_grad_norm_(self.loss_fn.discriminator.parameters(), self.grad_clip)
        self.opt_d.step()
        self.sched_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        return logs

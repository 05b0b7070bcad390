"""Training losses. `VAELoss` owns LPIPS, the discriminator and the frozen image VAE, and returns
`(loss, log_dict)` for the generator and for the discriminator step (taming's split).

Generator loss (every term's weight in `LossConfig`):
    nll      = (rec + lowpass_weight * lowpass + perceptual_weight * lpips) / exp(logvar) + logvar
               (logvar 0 unless learned)
    rec      = mean |x - x_hat| (or squared), over every pixel of every frame
    lowpass  = mean |avgpool_f(x - x_hat)|: the error of each f x f block's mean colour, frame by
               frame (`lowpass_distance`); per-pixel L1 barely pulls on a tint of a few levels,
               this term pulls on it as hard as on a per-pixel error
    lpips    = mean LPIPS over `lpips_frames` random frames per clip
    kl       = KL summed over the latent / number of pixel values: with this reduction
               kl_weight has LDM's meaning (1e-6 in SD) at any resolution and length
    reg_dec  = |psi(x) - D_img(z)|: the frozen image decoder decodes the video latents (CV-VAE's
               decoder regularization; gradients reach the video encoder)
    reg_enc  = |x - D_vid(E_img(psi(x)))|: the video decoder decodes image-encoder latents of the
               time-mapped input (CV-VAE's encoder regularization)
    gan      = -mean D(x_hat), scaled by taming's adaptive weight once step >= disc_start
    align    = VA-VAE's alignment of projected latents with frozen vision features (alignment.py)
psi maps T = 1 + r*k frames to 1 + k: `first` (frame 0 only), `slice` (frames 0, r, 2r, ...),
`average` (frame 0, then the mean of each group of r), `random` (frame 0, then one random frame
of each group; CV-VAE's choice), `key` (frame 0, then each group's first frame 1, 1 + r, ...).
Images (T = 1) go through every term.

What the image VAE sees of the video latents is the family's choice (`StreamingAutoencoder`
hooks): `cv` latents are image latents and `loss.reg_mapping` picks psi; `ktc` latents carry
the image latents in their keyframe half, so for `ktc` D_img decodes the keyframe half and is
compared with each group's key (first) frame, and reg_enc decodes video latents whose two halves
are both E_img of the key frames; psi is always `key` there, whatever `reg_mapping` says.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .alignment import LatentAlignment, PatchFeatures
from .discriminator import Discriminator3D

MAPPINGS = ("first", "slice", "average", "random", "key")


@dataclass
class LossConfig:
    rec_type: str = "l1"  # l1 | l2
    lowpass_weight: float = 0.0  # block-mean colour term (`lowpass_distance`); 0: off
    lowpass_factor: int = 8  # block size in pixels (the VAE's spatial factor)
    perceptual_weight: float = 0.5  # 0 disables LPIPS
    lpips_net: str = "vgg"  # vgg | alex | squeeze
    lpips_weights: str | None = None  # full LPIPS state_dict (trunk + lins), for offline use
    lpips_pretrained_trunk: bool = True  # False: random trunk (tests only; no download)
    lpips_frames: int = 4  # frames per clip that LPIPS sees
    kl_weight: float = 1e-6
    learn_logvar: bool = False
    logvar_init: float = 0.0
    disc_weight: float = 0.5  # 0 disables the GAN
    disc_start: int = 2000
    disc_channels: int = 64
    disc_layers: int = 3
    adaptive_disc_weight: bool = True
    reg_dec_weight: float = 1.0  # needs a frozen image VAE (train.init_from_image_vae or image_vae)
    reg_enc_weight: float = 0.0
    reg_mapping: str = "random"  # arch ktc always uses "key" (see the module docstring)
    reg_type: str = "l1"
    align_weight: float = 0.0  # semantic latent alignment (training/alignment.py); 0: off
    align_backbone: str | None = None  # local transformers folder or TorchScript file
    align_image_size: int = 224  # frames are resized to this for the backbone
    align_margin_cos: float = 0.5
    align_margin_dms: float = 0.25


def build_lpips(net: str = "vgg", weights: str | None = None, pretrained_trunk: bool = True):
    """A frozen LPIPS. Offline: `weights` = a saved full LPIPS state_dict (tools/export_lpips.py),
    or a random trunk with `pretrained_trunk=False` (tests)."""
    import lpips

    if weights is None and pretrained_trunk:
        try:
            model = lpips.LPIPS(net=net, pnet_rand=False, verbose=False)
        except Exception as e:  # noqa: BLE001 - the torchvision trunk download failed
            raise RuntimeError(
                f"LPIPS needs the torchvision {net} weights ({e.__class__.__name__}); offline, "
                "set loss.lpips_weights to a full LPIPS state_dict (tools/export_lpips.py), "
                "pre-seed $TORCH_HOME/hub/checkpoints, or set loss.lpips_pretrained_trunk=false "
                "(random trunk: tests only)") from e
    else:
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        if weights is not None:
            state = _load_lpips_weights(weights)
            missing, _ = model.load_state_dict(state, strict=False)
            if missing:  # lpips loads with strict=False and would hide this
                raise ValueError(f"{weights} is not a full LPIPS-{net} state_dict: missing "
                                 f"{len(missing)} keys ({', '.join(missing[:3])}...)")
    return model.eval().requires_grad_(False)


def _load_lpips_weights(path) -> dict:
    """loss.lpips_weights, read with weights_only=True; a file holding anything but tensors is
    refused in one line (torch's own text would advise loading it unsafely)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(f"loss.lpips_weights: {path} holds objects other than tensors; "
                          "refused (loading it could run code): export a plain state_dict with "
                          "tools/export_lpips.py") from e
    except (RuntimeError, EOFError) as e:
        raise ConfigError(f"loss.lpips_weights: {path} is not a torch weights file "
                          f"({type(e).__name__})") from e
    if not isinstance(state, dict):
        raise ConfigError(f"loss.lpips_weights: {path} holds a {type(state).__name__}, not a "
                          "state_dict")
    return state


def map_frames(x: torch.Tensor, mapping: str, ratio: int, gen: torch.Generator | None = None):
    """psi: (B, C, 1 + r*k, H, W) -> ((B, C, n, H, W), latent frame indices it pairs with)."""
    t = x.shape[2]
    k = (t - 1) // ratio
    if mapping == "first":
        return x[:, :, :1], [0]
    if mapping == "slice":
        return x[:, :, ::ratio], list(range(k + 1))
    if mapping == "average":
        rest = x[:, :, 1:].unflatten(2, (k, ratio)).mean(dim=3) if k else x[:, :, :0]
        return torch.cat([x[:, :, :1], rest], dim=2), list(range(k + 1))
    if mapping == "random":
        offs = torch.randint(1, ratio + 1, (k,), generator=gen).tolist() if k else []
        idx = [0] + [ratio * g + o for g, o in enumerate(offs)]
        return x[:, :, idx], list(range(k + 1))
    if mapping == "key":
        return x[:, :, [0] + [1 + ratio * g for g in range(k)]], list(range(k + 1))
    raise ValueError(f"reg_mapping must be one of {MAPPINGS}, got {mapping!r}")


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W)."""
    return x.transpose(1, 2).flatten(0, 1)


def lowpass_distance(x: torch.Tensor, x_hat: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """mean |avg_pool(x - x_hat)| over `factor` x `factor` blocks of each frame ((B, C, H, W) or
    (B, C, T, H, W); a partial block at the border is its own block). Its gradient per pixel is
    as large as L1's but has one sign over a block, so a model that tints a region pays for it
    as much as for a per-pixel error of the same size."""
    err = x - x_hat
    if err.dim() == 5:
        err = _frames(err)
    return F.avg_pool2d(err, factor, ceil_mode=True).abs().mean()


def _same(z: torch.Tensor) -> torch.Tensor:
    return z


def _distance(a, b, kind):
    return (a - b).abs().mean() if kind == "l1" else (a - b).pow(2).mean()


def hinge_d_loss(logits_real, logits_fake):
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


class VAELoss(nn.Module):
    """`video_vae`: the model being trained, whose latent layout hooks (`image_latents`,
    `latents_from_image`, `image_reg_mapping`) decide what the regularization compares; None
    means latents that are image latents (the `cv` layout). `latent_channels` (default: the
    video model's) sizes the alignment projection; `align_backbone` replaces the backbone that
    `cfg.align_backbone` names (tests pass a module)."""

    def __init__(self, cfg: LossConfig, image_vae=None, temporal_ratio: int = 4, video_vae=None,
                 latent_channels: int | None = None, align_backbone: nn.Module | None = None):
        super().__init__()
        if cfg.reg_mapping not in MAPPINGS:
            raise ConfigError(f"loss.reg_mapping must be one of {MAPPINGS}")
        for name in ("rec_type", "reg_type"):
            if getattr(cfg, name) not in ("l1", "l2"):
                raise ConfigError(f"loss.{name} must be l1 or l2")
        if cfg.lowpass_factor < 1:
            raise ConfigError(f"loss.lowpass_factor must be >= 1, got {cfg.lowpass_factor}")
        if (cfg.reg_dec_weight > 0 or cfg.reg_enc_weight > 0) and image_vae is None:
            raise ConfigError("latent regularization needs the frozen image VAE: set "
                              "train.init_from_image_vae or train.image_vae (or set "
                              "reg_dec_weight and reg_enc_weight to 0)")
        self.cfg = cfg
        self.ratio = temporal_ratio
        self.lpips = (build_lpips(cfg.lpips_net, cfg.lpips_weights, cfg.lpips_pretrained_trunk)
                      if cfg.perceptual_weight > 0 else None)
        self.discriminator = (Discriminator3D(3, cfg.disc_channels, cfg.disc_layers)
                              if cfg.disc_weight > 0 else None)
        self.logvar = nn.Parameter(torch.tensor(float(cfg.logvar_init)),
                                   requires_grad=cfg.learn_logvar)
        self.image_vae = image_vae.eval().requires_grad_(False) if image_vae is not None else None
        # plain functions, not the model: the loss must not own the model's parameters
        self.image_latents = video_vae.image_latents if video_vae is not None else _same
        self.latents_from_image = (video_vae.latents_from_image if video_vae is not None
                                   else _same)
        self.reg_mapping = getattr(video_vae, "image_reg_mapping", None) or cfg.reg_mapping
        if latent_channels is None and video_vae is not None:
            latent_channels = video_vae.config.latent_channels
        self.align = self._build_alignment(cfg, latent_channels, temporal_ratio, align_backbone)

    @staticmethod
    def _build_alignment(cfg, latent_channels, temporal_ratio, backbone):
        if cfg.align_weight <= 0:
            return None
        if backbone is None:
            if not cfg.align_backbone:
                raise ConfigError("loss.align_weight needs loss.align_backbone: a local "
                                  "transformers vision model folder (e.g. DINOv2) or an "
                                  "exported/TorchScript module returning (N, D, h, w) features")
            backbone = PatchFeatures(cfg.align_backbone, cfg.align_image_size)
        if latent_channels is None:
            raise ConfigError("the alignment loss needs the model's latent_channels")
        return LatentAlignment(backbone, latent_channels, temporal_ratio, cfg.align_margin_cos,
                               cfg.align_margin_dms)

    # ------------------------------------------------------------------ helpers
    def gan_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.cfg.disc_start >= 0

    def perceptual(self, x, x_hat):
        """Mean LPIPS over `lpips_frames` random frames of each clip (gradients flow)."""
        b, _, t = x.shape[:3]
        k = min(self.cfg.lpips_frames, t)
        idx = torch.stack([torch.randperm(t)[:k] for _ in range(b)]).to(x.device)
        gather = idx.view(b, 1, k, 1, 1).expand(-1, x.shape[1], -1, *x.shape[3:])
        a = _frames(torch.gather(x, 2, gather))
        r = _frames(torch.gather(x_hat, 2, gather))
        return self.lpips(a.float(), r.float()).mean()

    @torch.no_grad()
    def encoder_reg_latents(self, x: torch.Tensor, gen: torch.Generator | None = None):
        """Video latents (B, Z, n, h, w) built from the image-encoder latents of psi(x), for the
        encoder regularization."""
        target, _ = map_frames(x, self.reg_mapping, self.ratio, gen)
        z = self.image_vae.encode(_frames(target)).latent_dist.mode()
        return self.latents_from_image(z.unflatten(0, (x.shape[0], -1)).transpose(1, 2))

    def _reg_dec(self, x, z, gen):
        target, lat_idx = map_frames(x, self.reg_mapping, self.ratio, gen)
        img = self.image_vae.decode(_frames(self.image_latents(z)[:, :, lat_idx])).sample
        return _distance(_frames(target), img, self.cfg.reg_type)

    @staticmethod
    def adaptive_weight(nll, g_loss, last_layer):
        """taming: ||grad nll|| / ||grad g|| at the decoder's last layer, clamped to [0, 1e4]."""
        g1 = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
        g2 = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        return (g1.norm() / (g2.norm() + 1e-4)).clamp(0.0, 1e4).detach()

    # ------------------------------------------------------------------ the two steps
    def generator_loss(self, x, x_hat, posterior, z, step: int, last_layer=None,
                       enc_reg_recon=None, gen: torch.Generator | None = None):
        cfg = self.cfg
        logs = {}
        rec = _distance(x, x_hat, cfg.rec_type)
        logs["rec"] = rec.detach()
        nll = rec
        if cfg.lowpass_weight > 0:
            low = lowpass_distance(x, x_hat, cfg.lowpass_factor)
            logs["lowpass"] = low.detach()
            nll = nll + cfg.lowpass_weight * low
        if self.lpips is not None:
            p = self.perceptual(x, x_hat)
            logs["lpips"] = p.detach()
            nll = nll + cfg.perceptual_weight * p
        if cfg.learn_logvar:
            nll = nll / torch.exp(self.logvar) + self.logvar
            logs["logvar"] = self.logvar.detach()
        logs["nll"] = nll.detach()
        kl = posterior.kl().sum() / x.numel()
        logs["kl"] = kl.detach()
        loss = nll + cfg.kl_weight * kl
        if cfg.reg_dec_weight > 0:
            reg = self._reg_dec(x, z, gen)
            logs["reg_dec"] = reg.detach()
            loss = loss + cfg.reg_dec_weight * reg
        if cfg.reg_enc_weight > 0 and enc_reg_recon is not None:
            reg = _distance(x, enc_reg_recon, cfg.reg_type)
            logs["reg_enc"] = reg.detach()
            loss = loss + cfg.reg_enc_weight * reg
        if self.align is not None:
            align, align_logs = self.align(x, z)
            logs.update(align_logs)
            logs["align"] = align.detach()
            loss = loss + cfg.align_weight * align
        if self.gan_active(step):
            g_loss = -self.discriminator(x_hat).mean()
            if cfg.adaptive_disc_weight and last_layer is not None and self.training:
                d_weight = self.adaptive_weight(nll, g_loss, last_layer) * cfg.disc_weight
            else:
                d_weight = torch.tensor(cfg.disc_weight, device=x.device)
            logs["g_loss"] = g_loss.detach()
            logs["d_weight"] = d_weight
            loss = loss + d_weight * g_loss
        logs["loss"] = loss.detach()
        return loss, logs

    def discriminator_loss(self, x, x_hat):
        """Hinge loss of the discriminator on real clips and (detached) reconstructions."""
        logits = self.discriminator(torch.cat([x.detach(), x_hat.detach()]))
        return self.discriminator_loss_from_logits(*logits.chunk(2))

    @staticmethod
    def discriminator_loss_from_logits(logits_real, logits_fake):
        loss = hinge_d_loss(logits_real, logits_fake)
        return loss, {"d_loss": loss.detach(), "logits_real": logits_real.detach().mean(),
                      "logits_fake": logits_fake.detach().mean()}

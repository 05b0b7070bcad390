"""Semantic latent alignment (VA-VAE's vision-foundation loss): a learned 1x1 projection of the
latents is aligned with a frozen vision backbone's patch features, per frame, never mixing
frames:

    mcos = mean relu(1 - m1 - cos(P z_ij, f_ij))                  marginal cosine similarity
    mdms = mean relu(|cos(P z_i, P z_j) - cos(f_i, f_j)| - m2)     marginal distance-matrix sim.

Both are zero when the projected latents point like the features (within the margins) and
positive otherwise. Latent frame g is paired with pixel frame r*g (the last frame it sees; frame
0 for images). Gradients reach the projection and the encoder, never the backbone.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def alignment_terms(p: torch.Tensor, f: torch.Tensor, margin_cos: float, margin_dms: float):
    """(N, D, L) projected latents and features (L positions of one frame each) -> the two
    terms (scalars)."""
    mcos = F.relu(1 - margin_cos - F.cosine_similarity(p, f, dim=1)).mean()
    pn, fn = F.normalize(p, dim=1), F.normalize(f, dim=1)
    sim_p = pn.transpose(1, 2) @ pn  # (N, L, L): positions of the same frame only
    sim_f = fn.transpose(1, 2) @ fn
    mdms = F.relu((sim_p - sim_f).abs() - margin_dms).mean()
    return mcos, mdms


class PatchFeatures(nn.Module):
    """A vision backbone as (N, 3, H, W) in [-1, 1] -> (N, D, h, w) patch features: a local
    transformers model folder (ViT-style, e.g. DINOv2: tokens after the class/register tokens
    reshaped to the patch grid), or a module saved with `torch.export.save` (`.pt2`, with a
    dynamic batch dimension) or TorchScript that already returns (N, D, h, w) for ImageNet-
    normalized (N, 3, image_size, image_size) input."""

    def __init__(self, path: str, image_size: int = 224):
        super().__init__()
        from pathlib import Path

        path = Path(path)
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        if path.is_dir():
            try:
                from transformers import AutoModel
            except ImportError as e:
                raise ConfigError(f"loss.align_backbone={path} is a transformers folder, but "
                                  "transformers is not installed") from e
            self.model, self.kind = AutoModel.from_pretrained(str(path)), "transformers"
        elif path.is_file() and path.suffix == ".pt2":
            self.model, self.kind = torch.export.load(str(path)).module(), "module"
        elif path.is_file():
            self.model, self.kind = torch.jit.load(str(path), map_location="cpu"), "module"
        else:
            raise ConfigError(f"loss.align_backbone not found: {path}")

    def train(self, mode: bool = True):
        self.training = mode  # the wrapped model stays as loaded (exported programs cannot switch)
        return self

    def forward(self, x):
        x = F.interpolate((x + 1) / 2, size=(self.image_size, self.image_size),
                          mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        if self.kind == "module":
            return self.model(x)
        tokens = self.model(pixel_values=x).last_hidden_state  # (N, 1 + extra + h*w, D)
        side = self.image_size // self.model.config.patch_size
        grid = tokens[:, -side * side:]
        return grid.transpose(1, 2).reshape(x.shape[0], -1, side, side)


class LatentAlignment(nn.Module):
    """The alignment loss module: owns the learned projection and the frozen backbone."""

    def __init__(self, backbone: nn.Module, latent_channels: int, temporal_ratio: int,
                 margin_cos: float = 0.5, margin_dms: float = 0.25, probe_size: int = 64):
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        with torch.no_grad():
            dim = self.backbone(torch.zeros(1, 3, probe_size, probe_size)).shape[1]
        with torch.random.fork_rng(devices=[]):  # turning alignment on leaves the run's RNG
            torch.manual_seed(0)                  # (data, noise) exactly as it was
            self.proj = nn.Conv2d(latent_channels, dim, 1)
        self.ratio, self.margin_cos, self.margin_dms = temporal_ratio, margin_cos, margin_dms

    def train(self, mode: bool = True):
        self.training = mode
        self.proj.train(mode)  # the backbone stays frozen in eval mode
        return self

    def forward(self, x: torch.Tensor, z: torch.Tensor):
        """x (B, 3, T, H, W) pixels, z (B, Z, T', h, w) latents -> (loss, logs)."""
        frames = x[:, :, ::self.ratio][:, :, :z.shape[2]]
        b, t = frames.shape[0], frames.shape[2]
        with torch.no_grad():
            f = self.backbone(frames.transpose(1, 2).flatten(0, 1).float())  # (B*T', D, h, w)
        p = self.proj(z[:, :, :t].transpose(1, 2).flatten(0, 1).float())
        p = F.interpolate(p, size=f.shape[-2:], mode="bilinear", align_corners=False)
        mcos, mdms = alignment_terms(p.flatten(2), f.flatten(2), self.margin_cos,
                                     self.margin_dms)
        if b * t != f.shape[0]:
            raise RuntimeError("backbone changed the batch size")
        return mcos + mdms, {"align_mcos": mcos.detach(), "align_mdms": mdms.detach()}

"""The posterior of the video VAE."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution as _DiffusersDGD


class DiagonalGaussianDistribution(_DiffusersDGD):
    """diffusers' diagonal Gaussian (same `.mean .logvar .std .sample(generator) .mode()`), with
    `kl()` and `nll()` summed over every non-batch dimension (C, T, H, W), giving shape (B,).

    diffusers' own version sums over dims 1-3 only, which leaves a (B, W) tensor on video latents.
    """

    def _reduce_dims(self):
        return list(range(1, self.mean.ndim))

    def kl(self, other: "DiagonalGaussianDistribution | None" = None) -> torch.Tensor:
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)
        if other is None:
            terms = self.mean.pow(2) + self.var - 1.0 - self.logvar
        else:
            terms = ((self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0
                     - self.logvar + other.logvar)
        return 0.5 * terms.sum(dim=self._reduce_dims())

    def nll(self, sample: torch.Tensor, dims=None) -> torch.Tensor:
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)
        dims = self._reduce_dims() if dims is None else dims
        terms = np.log(2.0 * np.pi) + self.logvar + (sample - self.mean).pow(2) / self.var
        return 0.5 * terms.sum(dim=dims)

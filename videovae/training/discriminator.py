"""A 3D PatchGAN discriminator built from causal convs (images are one-frame clips)."""

from __future__ import annotations

import torch.nn as nn

from ..models.layers import CausalConv3d, FrameGroupNorm


def _groups(channels: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


class Discriminator3D(nn.Module):
    """taming's NLayerDiscriminator in 3D: strided causal 3x3x3 convs (time is halved by the
    first two layers, so a clip of 1 + 4k frames gives 1 + k logit frames), per-frame GroupNorm,
    LeakyReLU, and a 1-channel map of patch logits. Kernels 3 keep it valid down to 16 px."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers = [CausalConv3d(in_channels, channels, 3, stride=(2, 2, 2)), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, num_layers + 1):
            out = channels * min(2**i, 8)
            stride = (2 if i < 2 else 1, 2 if i < num_layers else 1, 2 if i < num_layers else 1)
            layers += [CausalConv3d(ch, out, 3, stride=stride),
                       FrameGroupNorm(_groups(out), out, eps=1e-6), nn.LeakyReLU(0.2)]
            ch = out
        layers.append(CausalConv3d(ch, 1, 3))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, CausalConv3d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.main(x)

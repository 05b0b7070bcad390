"""The `cv` family: a causal 3D-conv video VAE in the SD VAE layout, as in CV-VAE.

Video in: (B, 3, T, H, W) in [-1, 1]. Latent: (B, Z, 1 + (T-1)//4, H/8, W/8) for the default
4x8x8 model. Frame 0 is compressed alone; every later group of 4 frames gives one latent frame.
Module names mirror diffusers' `AutoencoderKL`, so an image VAE inflates name by name
(`videovae.convert.inflate`). Everything the families share lives in `base.py`.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .base import StreamingAutoencoder, init_posterior_logvar
from .layers import CausalConv3d, DownBlock3D, FrameGroupNorm, MidBlock3D, UpBlock3D, run_blocks


class Encoder3D(nn.Module):
    def __init__(self, in_channels, latent_channels, block_out_channels, layers_per_block, groups,
                 eps, kt, conv3d_layers, temporal_downsample, add_attention):
        super().__init__()
        boc = block_out_channels
        self.conv_in = CausalConv3d(in_channels, boc[0], (kt, 3, 3))
        self.down_blocks = nn.ModuleList()
        for i, ch in enumerate(boc):
            last = i == len(boc) - 1
            self.down_blocks.append(DownBlock3D(
                boc[max(i - 1, 0)], ch, layers_per_block, groups, eps, kt, conv3d_layers,
                downsample=not last, temporal_down=(not last and temporal_downsample[i])))
        self.mid_block = MidBlock3D(boc[-1], groups, eps, kt, True, conv3d_layers, add_attention)
        self.conv_norm_out = FrameGroupNorm(groups, boc[-1], eps=eps)
        self.conv_out = CausalConv3d(boc[-1], 2 * latent_channels, (kt, 3, 3))
        self.gradient_checkpointing = False

    def forward(self, x, state=None):
        x = run_blocks(self, [*self.down_blocks, self.mid_block], self.conv_in(x, state), state)
        return self.conv_out(F.silu(self.conv_norm_out(x)), state)


class Decoder3D(nn.Module):
    def __init__(self, latent_channels, out_channels, block_out_channels, layers_per_block, groups,
                 eps, kt, causal, conv3d_layers, temporal_downsample, add_attention):
        super().__init__()
        rev = list(reversed(block_out_channels))
        temporal_up = list(reversed(temporal_downsample))
        self.conv_in = CausalConv3d(latent_channels, rev[0], (kt, 3, 3), causal=causal)
        self.mid_block = MidBlock3D(rev[0], groups, eps, kt, causal, conv3d_layers, add_attention)
        self.up_blocks = nn.ModuleList()
        for i, ch in enumerate(rev):
            last = i == len(rev) - 1
            self.up_blocks.append(UpBlock3D(
                rev[max(i - 1, 0)], ch, layers_per_block + 1, groups, eps, kt, causal,
                conv3d_layers, upsample=not last, temporal_up=(not last and temporal_up[i])))
        self.conv_norm_out = FrameGroupNorm(groups, rev[-1], eps=eps)
        self.conv_out = CausalConv3d(rev[-1], out_channels, (kt, 3, 3), causal=causal)
        self.gradient_checkpointing = False

    def forward(self, z, state=None):
        x = run_blocks(self, [self.mid_block, *self.up_blocks], self.conv_in(z, state), state)
        return self.conv_out(F.silu(self.conv_norm_out(x)), state)


def default_temporal_downsample(levels: int) -> tuple[bool, ...]:
    """Which of the `levels - 1` downsampling levels also halve time when a config does not
    say: 4x wherever there are two or more (CV-VAE's levels 0 and 2 when there are three or
    more, else every level), 2x with one, none with a single level."""
    n = max(levels - 1, 0)
    return tuple(True for _ in range(n)) if n <= 2 else tuple(i in (0, 2) for i in range(n))


class AutoencoderCV(StreamingAutoencoder, ConfigMixin):
    r"""The `cv` family: a causal 3D-conv video VAE in the SD VAE layout, with a
    diffusers-compatible API. `VideoVAE` is its older name, kept as an alias (saved folders whose
    config.json says `VideoVAE` load as this class).

    Parameters:
        in_channels / out_channels: pixel channels (3).
        block_out_channels: widths of the resolution levels; each level but the last halves H, W.
        layers_per_block: resnets per encoder level (the decoder has one more, as in SD).
        latent_channels: Z, 4 (SD 1.x/2.x, SDXL) or 16 (SD3, FLUX).
        norm_num_groups, norm_eps: GroupNorm settings; statistics are always per frame.
        temporal_downsample: for each downsampling level, whether it also halves time
            (CV-VAE: levels 0 and 2, giving 4x). The decoder mirrors it.
        temporal_kernel_size: temporal taps of the 3D convs (3).
        conv3d_layers: "conv1" (CV-VAE's 2D+3D: the second conv of each resnet is 2D) or "all".
        decoder_causal: causal decoder (exact streaming). False pads time on both sides and
            decodes long latents in overlapping temporal tiles.
        mid_block_add_attention: per-frame spatial attention in the mid blocks.
        use_quant_conv / use_post_quant_conv: the 1x1 convs around the latent (SD has them,
            SD3/FLUX do not).
        scaling_factor, shift_factor, latents_mean, latents_std: latent normalization for
            diffusion models (`(z - shift) * scale`, or per-channel mean/std); not applied by
            `encode`/`decode`.
        temporal_compression_ratio / spatial_compression_ratio: derived from the above; may be
            given, and must then agree.
    """

    arch = "cv"
    class_aliases = ("VideoVAE",)
    _no_split_modules = ["ResnetBlock3D", "FrameAttention"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        temporal_downsample: tuple[bool, ...] = (True, False, True),
        temporal_kernel_size: int = 3,
        conv3d_layers: str = "conv1",
        decoder_causal: bool = True,
        mid_block_add_attention: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        force_upcast: bool = False,
        temporal_compression_ratio: int | None = None,
        spatial_compression_ratio: int | None = None,
    ):
        super().__init__()
        if conv3d_layers not in ("conv1", "all"):
            raise ValueError(f"conv3d_layers must be 'conv1' or 'all', got {conv3d_layers!r}")
        self._set_levels(block_out_channels, temporal_downsample, norm_num_groups,
                         temporal_compression_ratio, spatial_compression_ratio)
        self._check_latent_stats(latent_channels, latents_mean, latents_std)

        kt = temporal_kernel_size
        self.encoder = Encoder3D(in_channels, latent_channels, block_out_channels,
                                 layers_per_block, norm_num_groups, norm_eps, kt, conv3d_layers,
                                 temporal_downsample, mid_block_add_attention)
        self.decoder = Decoder3D(latent_channels, out_channels, block_out_channels,
                                 layers_per_block, norm_num_groups, norm_eps, kt, decoder_causal,
                                 conv3d_layers, temporal_downsample, mid_block_add_attention)
        z2 = 2 * latent_channels
        self.quant_conv = CausalConv3d(z2, z2, 1) if use_quant_conv else None
        self.post_quant_conv = (CausalConv3d(latent_channels, latent_channels, 1)
                                if use_post_quant_conv else None)

        # loaded or inflated weights replace this init
        init_posterior_logvar(
            self.quant_conv if self.quant_conv is not None else self.encoder.conv_out,
            latent_channels)

        self._init_streaming()

    # ------------------------------------------------------------------ the family's passes
    def _encode_tile(self, x, state):
        h = self.encoder(x, state)
        return self.quant_conv(h) if self.quant_conv is not None else h

    # ------------------------------------------------------------------ training hooks
    def last_decoder_layer(self):
        return self.decoder.conv_out.weight


VideoVAE = AutoencoderCV  # the older name of the `cv` family (documented alias)

"""The `ktc` family: IV-VAE's keyframe + temporal channel halves with group causal convolution.

Video in: (B, 3, T, H, W) in [-1, 1]. Latent: (B, Z, 1 + (T-1)//4, H/8, W/8) for the default
4x8x8 model, channels [0:Z/2] the keyframe half and [Z/2:Z] the temporal half. Frame 0 is its
own group; every later group of 4 frames gives one latent frame. Every layer has both halves
(`layers_ktc.py`): the keyframe half sees frames one at a time and keeps each group's first frame
when time is downsampled; the temporal half sees the whole group (group causal convs) and learns
its temporal down/upsampling. The decoder's output takes each group's first frame from the
keyframe half and the others from the temporal half. A frame depends on its own group and on
earlier groups, never on later ones, so chunks of whole groups stream exactly.

Choices the IV-VAE reference leaves open, made here:
- Widths and module names follow the SD VAE (`block_out_channels` per half, `down_blocks`,
  `mid_block`, ...), so an image VAE inflates into both halves name by name; there is no PAC
  head (the encoder ends like SD's: norm, SiLU, a 3x3 KTC conv, the optional 1x1 quant conv).
- Resnets at the latent resolution keep group causal convs (group size 1, so they read the
  previous latent frame) where IV-VAE uses 2D convs, letting the decoder's temporal half see the
  previous group.
- Norms are per half and per frame: GroupNorm by default (inflation needs it) or IV-VAE's RMS
  norm (`norm_type="rms"`, from-scratch training).
- A model built from scratch keeps PyTorch's default init everywhere (the temporal resamplers
  included); only inflation starts them as frame picking and repetition.
- The adaptive GAN weight differentiates against the keyframe half's output conv, the one
  that makes images (`last_decoder_layer`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from einops import rearrange

from .base import StreamingAutoencoder, init_posterior_logvar
from .layers import run_blocks
from .layers_ktc import (
    NORM_TYPES,
    KTCConv,
    KTCDownBlock,
    KTCMidBlock,
    KTCUpBlock,
    half_norm,
    merge_keyframes,
    starts_video,
)


class KTCEncoder(nn.Module):
    """Pixels -> [keyframe moments (2 * latent_half), temporal moments (2 * latent_half)]."""

    def __init__(self, in_channels, latent_half, block_out_channels, layers_per_block,
                 temporal_downsample, norm_type, groups, eps, add_attention):
        super().__init__()
        boc = block_out_channels
        g = 2 ** sum(bool(d) for d in temporal_downsample)  # frames per group at full rate
        self.conv_in = KTCConv(in_channels, boc[0], 3, g, split_input=False)
        self.down_blocks = nn.ModuleList()
        for i, ch in enumerate(boc):
            last = i == len(boc) - 1
            temporal = not last and bool(temporal_downsample[i])
            self.down_blocks.append(KTCDownBlock(boc[max(i - 1, 0)], ch, layers_per_block, g,
                                                 norm_type, groups, eps, not last, temporal))
            g //= 2 if temporal else 1
        self.mid_block = KTCMidBlock(boc[-1], g, norm_type, groups, eps, add_attention)
        self.conv_norm_out = half_norm(norm_type, boc[-1], groups, eps)
        self.conv_out = KTCConv(2 * boc[-1], 2 * latent_half, 3, g)
        self.gradient_checkpointing = False

    def forward(self, x, state=None):
        x = run_blocks(self, [*self.down_blocks, self.mid_block], self.conv_in(x, state), state)
        return self.conv_out(F.silu(self.conv_norm_out(x)), state)


class KTCDecoder(nn.Module):
    """Latents [keyframe half, temporal half] -> pixels, merged per group (`merge_keyframes`)."""

    def __init__(self, latent_channels, out_channels, block_out_channels, layers_per_block,
                 temporal_downsample, norm_type, groups, eps, add_attention):
        super().__init__()
        rev = list(reversed(block_out_channels))
        temporal_up = list(reversed(temporal_downsample))
        g = 1  # one frame per group at the latent rate
        self.conv_in = KTCConv(latent_channels, rev[0], 3, g)
        self.mid_block = KTCMidBlock(rev[0], g, norm_type, groups, eps, add_attention)
        self.up_blocks = nn.ModuleList()
        for i, ch in enumerate(rev):
            last = i == len(rev) - 1
            temporal = not last and bool(temporal_up[i])
            self.up_blocks.append(KTCUpBlock(rev[max(i - 1, 0)], ch, layers_per_block + 1, g,
                                             norm_type, groups, eps, not last, temporal))
            g *= 2 if temporal else 1
        self.conv_norm_out = half_norm(norm_type, rev[-1], groups, eps)
        self.conv_out = KTCConv(2 * rev[-1], out_channels, 3, g)
        self.group_size = g
        self.gradient_checkpointing = False

    def forward(self, z, state=None):
        starts = starts_video(self, state)
        x = run_blocks(self, [self.mid_block, *self.up_blocks], self.conv_in(z, state), state)
        x = self.conv_out(F.silu(self.conv_norm_out(x)), state)
        return merge_keyframes(x, starts, self.group_size)


class AutoencoderKTC(StreamingAutoencoder, ConfigMixin):
    r"""Keyframe + temporal-half video VAE (IV-VAE style) with a diffusers-compatible API.

    Parameters:
        in_channels / out_channels: pixel channels (3).
        block_out_channels: widths of the resolution levels, per half (every activation has
            twice as many channels); each level but the last halves H, W.
        layers_per_block: resnets per encoder level (the decoder has one more, as in SD).
        latent_channels: Z, both halves together (even): the keyframe half is [0:Z/2]. An
            image VAE with Z/2 channels inflates into it (8 from SD/SDXL, 32 from SD3/FLUX).
        norm_type: "group" (GroupNorm per half, `norm_num_groups` groups each; needed for
            inflation) or "rms" (IV-VAE's RMS norm per half); statistics are always per frame.
        norm_num_groups, norm_eps: norm settings.
        temporal_downsample: for each downsampling level, whether it also halves time (IV-VAE:
            levels 1 and 2, giving 4x). The decoder mirrors it.
        mid_block_add_attention: per-frame spatial attention (one per half) in the mid blocks.
        use_quant_conv / use_post_quant_conv: the 1x1 KTC convs around the latent (SD has
            them, SD3/FLUX do not).
        scaling_factor, shift_factor, latents_mean, latents_std: latent normalization for
            diffusion models; not applied by `encode`/`decode`.
        temporal_compression_ratio / spatial_compression_ratio: derived from the above; may be
            given, and must then agree.
    """

    arch = "ktc"
    _no_split_modules = ["KTCResnet", "FrameAttention"]
    image_reg_mapping = "key"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        latent_channels: int = 8,
        norm_type: str = "group",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        temporal_downsample: tuple[bool, ...] = (False, True, True),
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
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
        if latent_channels % 2:
            raise ValueError(f"latent_channels must be even (a keyframe and a temporal half), "
                             f"got {latent_channels}")
        self._set_levels(block_out_channels, temporal_downsample, norm_num_groups,
                         temporal_compression_ratio, spatial_compression_ratio)
        self._check_latent_stats(latent_channels, latents_mean, latents_std)

        half = latent_channels // 2
        levels = (block_out_channels, layers_per_block, temporal_downsample, norm_type,
                  norm_num_groups, norm_eps, mid_block_add_attention)
        self.encoder = KTCEncoder(in_channels, half, *levels)
        self.decoder = KTCDecoder(latent_channels, out_channels, *levels)
        self.quant_conv = (KTCConv(2 * latent_channels, latent_channels, 1)
                           if use_quant_conv else None)
        self.post_quant_conv = KTCConv(latent_channels, half, 1) if use_post_quant_conv else None

        # loaded or inflated weights replace this init
        moments = self.quant_conv if self.quant_conv is not None else self.encoder.conv_out
        init_posterior_logvar(moments.key, half)
        init_posterior_logvar(moments.temporal, half)

        self._init_streaming()

    # ------------------------------------------------------------------ the family's passes
    def _encode_tile(self, x, state):
        h = self.encoder(x, state)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        # [key mean, key logvar, temporal mean, temporal logvar] -> [means, logvars]
        return rearrange(h, "b (half moment c) t h w -> b (moment half c) t h w", half=2,
                         moment=2)

    # ------------------------------------------------------------------ image VAE pairing
    def image_latents(self, z):
        """The keyframe half: what the image VAE's decoder reads (it has Z/2 channels)."""
        return z[:, : z.shape[1] // 2]

    def latents_from_image(self, z_img):
        """Image latents in both halves (what inflation gives for a still clip)."""
        return torch.cat([z_img, z_img], dim=1)

    # ------------------------------------------------------------------ training hooks
    def last_decoder_layer(self):
        """The keyframe half's output conv: it makes every image and each group's first frame,
        so the adaptive GAN weight is defined for images too."""
        return self.decoder.conv_out.key.weight

"""Building blocks of the `ktc` family: IV-VAE's keyframe and temporal channel halves with group
causal convolution.

Every activation is (B, 2C, T, H, W): channels [0:C] are the keyframe half, [C:2C] the temporal
half. Time is cut into groups, the frames that map to one latent frame at that depth: frame 0 of
a video is a group of its own, then come groups of `group_size` frames (4, then 2, then 1 in the
encoder of a 4x model; the reverse in the decoder). A layer's output at frame t depends only on
frames of t's group and of earlier groups, and may depend on the later frames of its own group.

Streaming: chunks hold whole groups (the first chunk: frame 0 and whole groups). A layer that
must know whether a chunk starts the video, or that needs the last frame of the previous group,
keeps it in the `StreamState`; so chunked passes equal one full pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .layers import (
    FrameAttention,
    FrameGroupNorm,
    MidBlock,
    ResidualBlock,
    StreamState,
    upsample_nearest,
)

NORM_TYPES = ("group", "rms")


def starts_video(module: nn.Module, state: StreamState | None) -> bool:
    """Whether the chunk `module` sees now begins the video (always so for a full pass)."""
    if state is None:
        return True
    if state.get(module) is not None:
        return False
    state.set(module, True)
    return True


def _whole_groups(frames: int, group_size: int, what: str) -> int:
    if frames % group_size:
        raise ValueError(f"{what}: {frames} frames are not whole groups of {group_size}; ktc "
                         f"chunks are 1 + k*{group_size} frames first, then k*{group_size}")
    return frames // group_size


# ----------------------------------------------------------------------------------------------
# Norms


class FrameRMSNorm(nn.Module):
    """IV-VAE's RMS norm: each half's channels are divided by their root mean square at every
    position (so statistics never cross frames or tiles) and scaled by a learned gain; no bias.
    `halves=2` for a KTC activation, 1 inside one half's attention. Works on (N, C, ...)."""

    def __init__(self, channels: int, halves: int = 2, eps: float = 1e-6):
        super().__init__()
        self.halves, self.eps = halves, eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.unflatten(1, (self.halves, -1))
        stat = xs.float() if xs.dtype in (torch.float16, torch.bfloat16) else xs
        out = stat * torch.rsqrt(stat.pow(2).mean(dim=2, keepdim=True) + self.eps)
        gain = self.weight.view(1, -1, *([1] * (x.ndim - 2)))
        return out.flatten(1, 2).to(x.dtype) * gain


def half_norm(norm_type: str, channels: int, groups: int, eps: float) -> nn.Module:
    """The norm of a KTC activation with `channels` per half, statistics per half and per frame:
    GroupNorm with `groups` groups per half (2*groups groups never straddle the halves; what
    inflation needs, since image VAEs use GroupNorm), or IV-VAE's RMS norm."""
    if norm_type == "group":
        return FrameGroupNorm(2 * groups, 2 * channels, eps=eps)
    if norm_type == "rms":
        return FrameRMSNorm(2 * channels, 2, eps)
    raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")


# ----------------------------------------------------------------------------------------------
# Convolutions


class GroupCausalConv3d(nn.Conv3d):
    """IV-VAE's group causal convolution (GCConv), kernel (3, k, k); with `temporal=False` the
    kernel is (1, k, k) and it is a per-frame conv.

    Inside a group it is an ordinary two-sided conv; the frame before a group's first frame is
    the last frame of the previous group (frame 0, a group of its own, sees itself repeated, as
    a causal conv would), and the frame after a group's last frame is zero. So output frame t
    depends on its own group and the last frame of the previous one only. Spatial padding is
    zeros, k//2 per side. Streaming: the conv keeps the last input frame of each chunk.

    Computed as a causal conv of the left and centre taps over every frame, plus the right tap
    for the frames that are not the last of their group: the last frame of a group never
    touches the next group, not even through a zero weight.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 group_size: int = 1, temporal: bool = True):
        k = kernel_size
        super().__init__(in_channels, out_channels, (3 if temporal else 1, k, k),
                         padding=(0, k // 2, k // 2))
        self.group_size = group_size

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        if self.kernel_size[0] == 1:
            return super().forward(x)
        prev = None if state is None else state.get(self)
        if state is not None:
            state.set(self, x[:, :, -1:].clone())  # clone: the chunk's activation can be freed
        head = 1 if prev is None else 0  # the chunk starts the video: frame 0 is its own group
        if prev is None:
            prev = x[:, :, :1]
        g = self.group_size
        n = _whole_groups(x.shape[2] - head, g, "group causal conv")
        y = F.conv3d(torch.cat([prev, x], dim=2), self.weight[:, :, :2], self.bias,
                     padding=self.padding)
        if g > 1 and n:
            groups = x[:, :, head:].unflatten(2, (n, g))
            right = F.conv3d(groups[:, :, :, 1:].flatten(2, 3), self.weight[:, :, 2:],
                             padding=self.padding)
            y[:, :, head:].unflatten(2, (n, g))[:, :, :, :-1] += right.unflatten(2, (n, g - 1))
        return y


class KTCConv(nn.Module):
    """IV-VAE's KTC unit: a keyframe half (per-frame 2D conv) and a temporal half (group causal
    conv), both reading the whole input; the output is [keyframe, temporal], 2*out_channels.

    `split_input`: the input is itself [keyframe half, temporal half] (every layer except the
    one that reads pixels). A 1x1 unit (`kernel_size=1`) mixes no frames.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 group_size: int = 1, split_input: bool = True):
        super().__init__()
        k = kernel_size
        self.key = nn.Conv3d(in_channels, out_channels, (1, k, k), padding=(0, k // 2, k // 2))
        self.temporal = GroupCausalConv3d(in_channels, out_channels, k, group_size, k > 1)
        self.split_input = split_input

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        return torch.cat([self.key(x), self.temporal(x, state)], dim=1)


class PerHalfConv(nn.Conv3d):
    """A per-frame 3x3 conv applied to each half on its own (a grouped conv): the spatial part
    of IV-VAE's resamplers. `channels` per half."""

    def __init__(self, channels: int, stride: int = 1, padding: int = 1):
        super().__init__(2 * channels, 2 * channels, (1, 3, 3), stride=(1, stride, stride),
                         padding=(0, padding, padding), groups=2)


# ----------------------------------------------------------------------------------------------
# Blocks


class KTCResnet(ResidualBlock):
    """norm, SiLU, KTC conv, norm, SiLU, KTC conv, plus a 1x1 KTC shortcut when widths change.
    Widths are per half."""

    def __init__(self, in_channels, out_channels, group_size, norm_type, groups, eps):
        super().__init__()
        self.norm1 = half_norm(norm_type, in_channels, groups, eps)
        self.conv1 = KTCConv(2 * in_channels, out_channels, 3, group_size)
        self.norm2 = half_norm(norm_type, out_channels, groups, eps)
        self.conv2 = KTCConv(2 * out_channels, out_channels, 3, group_size)
        self.conv_shortcut = (KTCConv(2 * in_channels, out_channels, 1)
                              if in_channels != out_channels else None)


class KTCAttention(nn.Module):
    """Two independent single-head spatial attentions, one per half, each per frame."""

    def __init__(self, channels, norm_type, groups, eps):
        super().__init__()
        self.key = FrameAttention(channels, groups, eps)
        self.temporal = FrameAttention(channels, groups, eps)
        if norm_type == "rms":  # the attribute keeps FrameAttention's name
            self.key.group_norm = FrameRMSNorm(channels, 1, eps)
            self.temporal.group_norm = FrameRMSNorm(channels, 1, eps)

    def forward(self, x, state=None):
        key, tmp = x.chunk(2, dim=1)
        return torch.cat([self.key(key), self.temporal(tmp)], dim=1)


class KTCMidBlock(MidBlock):
    """resnet -> (per-half attention) -> resnet."""

    def __init__(self, channels, group_size, norm_type, groups, eps, add_attention):
        super().__init__()
        self.resnets = nn.ModuleList([
            KTCResnet(channels, channels, group_size, norm_type, groups, eps) for _ in range(2)])
        self.attentions = nn.ModuleList(
            [KTCAttention(channels, norm_type, groups, eps)] if add_attention else [])


class KTCDownsample(nn.Module):
    """Stride-2 per-half conv in space (SD's asymmetric zero pad); with `temporal`, time halves
    too: the keyframe half keeps the first frame of every pair (so each group keeps its first
    frame), the temporal half runs a learned (2, 1, 1) stride-2 conv over each pair. Frame 0 of
    the video is passed through unchanged in both halves (IV-VAE skips it too)."""

    def __init__(self, channels, temporal):
        super().__init__()
        self.conv = PerHalfConv(channels, stride=2, padding=0)
        self.time_conv = (nn.Conv3d(channels, channels, (2, 1, 1), stride=(2, 1, 1))
                          if temporal else None)

    def forward(self, x, state=None):
        x = self.conv(F.pad(x, (0, 1, 0, 1)))
        if self.time_conv is None:
            return x
        head = 1 if starts_video(self, state) else 0
        key, tmp = x.chunk(2, dim=1)
        _whole_groups(x.shape[2] - head, 2, "temporal downsampling")
        key = torch.cat([key[:, :, :head], key[:, :, head::2]], dim=2)
        rest = tmp[:, :, head:]
        if rest.shape[2]:
            tmp = torch.cat([tmp[:, :, :head], self.time_conv(rest)], dim=2)
        return torch.cat([key, tmp], dim=1)


class KTCUpsample(nn.Module):
    """With `temporal`, time doubles first: the keyframe half repeats each frame, the temporal
    half runs a 1x1 conv to two frames' worth of channels and moves them into time
    (depth-to-time); frame 0 of the video stays one frame (the 1 + 2k scheme). Then nearest x2 in
    space and a per-half 3x3 conv."""

    def __init__(self, channels, temporal):
        super().__init__()
        self.time_conv = nn.Conv3d(channels, 2 * channels, 1) if temporal else None
        self.conv = PerHalfConv(channels)

    def forward(self, x, state=None):
        if self.time_conv is not None:
            head = 1 if starts_video(self, state) else 0
            key, tmp = x.chunk(2, dim=1)
            key = torch.cat([key[:, :, :head], key[:, :, head:].repeat_interleave(2, dim=2)], 2)
            rest = tmp[:, :, head:]
            if rest.shape[2]:  # depth to time: (b, 2c, t) -> (b, c, 2t), copy 0 of each frame first
                rest = rearrange(self.time_conv(rest), "b (n c) t h w -> b c (t n) h w", n=2)
                tmp = torch.cat([tmp[:, :, :head], rest], dim=2)
            x = torch.cat([key, tmp], dim=1)
        return self.conv(upsample_nearest(x, (1, 2, 2)))


class _KTCLevel(nn.Module):
    """One resolution level: resnets (widths per half), then an optional resampler, in the
    ModuleList diffusers names `downsamplers` / `upsamplers`."""

    sampler_name: str = ""
    sampler_cls: type = nn.Module

    def __init__(self, in_channels, out_channels, num_layers, group_size, norm_type, groups, eps,
                 resample, temporal):
        super().__init__()
        self.resnets = nn.ModuleList([
            KTCResnet(in_channels if i == 0 else out_channels, out_channels, group_size,
                      norm_type, groups, eps) for i in range(num_layers)])
        setattr(self, self.sampler_name, nn.ModuleList(
            [self.sampler_cls(out_channels, temporal)] if resample else []))

    def forward(self, x, state=None):
        for layer in [*self.resnets, *getattr(self, self.sampler_name)]:
            x = layer(x, state)
        return x


class KTCDownBlock(_KTCLevel):
    sampler_name, sampler_cls = "downsamplers", KTCDownsample


class KTCUpBlock(_KTCLevel):
    sampler_name, sampler_cls = "upsamplers", KTCUpsample


def merge_keyframes(x: torch.Tensor, starts: bool, group_size: int) -> torch.Tensor:
    """(B, 2C, T, H, W) -> (B, C, T, H, W): each group's first frame (frame 0 included) from the
    keyframe half, every other frame from the temporal half. `starts`: x begins the video."""
    key, tmp = x.chunk(2, dim=1)
    pos = torch.arange(x.shape[2], device=x.device) - (1 if starts else 0)
    is_key = (pos < 0) | (pos % group_size == 0)
    return torch.where(is_key.view(1, 1, -1, 1, 1), key, tmp)

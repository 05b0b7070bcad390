"""Building blocks of the causal 3D VAE.

Every tensor is (B, C, T, H, W). Every temporal operation is causal (or, for decoders built with
`causal=False`, symmetric), normalization and attention work per frame, so encoding or decoding
in chunks with carried caches (`StreamState`) is exactly equal to one full pass.

Module and parameter names mirror diffusers' `AutoencoderKL` (`down_blocks.0.resnets.1.conv1`,
`mid_block.attentions.0.to_q`, ...), so inflating an image VAE is a name-by-name copy.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


class StreamState:
    """Carried context of one stream: the frames each temporal layer still needs from the past.

    A fresh state starts a new video; feed it every chunk of that video, in order.
    """

    def __init__(self):
        self._buffers: dict[int, object] = {}
        self._children: dict[object, StreamState] = {}

    def get(self, module: nn.Module):
        return self._buffers.get(id(module))

    def set(self, module: nn.Module, value) -> None:
        self._buffers[id(module)] = value

    def sub(self, key) -> "StreamState":
        """The state of a sub-stream (e.g. one spatial tile), created on first use."""
        if key not in self._children:
            self._children[key] = StreamState()
        return self._children[key]


def run_blocks(owner: nn.Module, blocks, x: torch.Tensor, state: StreamState | None):
    """Apply `blocks` in order; with gradient checkpointing when `owner` (an encoder or decoder
    whose `gradient_checkpointing` diffusers switches) has it on and this is a full pass."""
    for block in blocks:
        if owner.gradient_checkpointing and torch.is_grad_enabled() and state is None:
            x = owner._gradient_checkpointing_func(block, x)
        else:
            x = block(x, state)
    return x


def _expand_first(x: torch.Tensor, n: int) -> torch.Tensor:
    """n copies of the first frame of x, shape (B, C, n, H, W)."""
    return x[:, :, :1].expand(-1, -1, n, -1, -1)


class CausalConv3d(nn.Conv3d):
    """3D convolution that is causal in time: the past is padded by repeating the first frame.

    (`causal=False` makes it symmetric in time, for decoders kept for compatibility; see below.)

    Spatial padding is zeros (as in the 2D SD VAE), `kernel//2` on each side unless
    `spatial_padding` says otherwise. With `causal=False` time is padded symmetrically by
    repeating the edge frames (for decoders that are not causal; those cannot stream).

    Streaming: pass a `StreamState`; the conv keeps the frames of the padded input that later
    outputs still need (for stride 2, that is 1 frame; for stride 1, kernel-1 frames) and
    emits every output whose window is complete, so any chunking gives the full-pass result.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, spatial_padding=None,
                 causal=True):
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        st, sh, sw = (stride,) * 3 if isinstance(stride, int) else stride
        if spatial_padding is None:
            spatial_padding = (kh // 2, kw // 2)
        super().__init__(in_channels, out_channels, (kt, kh, kw), stride=(st, sh, sw),
                         padding=(0, *spatial_padding))
        self.causal = causal
        if not causal and (st != 1 or kt % 2 == 0):
            raise ValueError("a non-causal temporal conv needs an odd kernel and stride 1")

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        kt, st = self.kernel_size[0], self.stride[0]
        if kt == 1 and st == 1:
            return super().forward(x)
        if not self.causal:
            if state is not None:
                raise RuntimeError("a non-causal conv cannot stream; use temporal tiling")
            p = (kt - 1) // 2
            x = torch.cat([_expand_first(x, p), x, x[:, :, -1:].expand(-1, -1, p, -1, -1)], 2)
            return super().forward(x)
        if state is None:
            return super().forward(torch.cat([_expand_first(x, kt - 1), x], dim=2))
        past = state.get(self)
        if past is None:  # first chunk of the stream
            past = _expand_first(x, kt - 1)
        x = torch.cat([past, x], dim=2)
        n_out = (x.shape[2] - kt) // st + 1 if x.shape[2] >= kt else 0
        # keep what the next outputs need; clone so the chunk's activation can be freed
        state.set(self, x[:, :, n_out * st:].clone())
        if n_out == 0:
            shape = list(x.shape)
            shape[1], shape[2] = self.out_channels, 0
            return x.new_zeros(shape[:3] + [
                (x.shape[3] + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1,
                (x.shape[4] + 2 * self.padding[2] - self.kernel_size[2]) // self.stride[2] + 1])
        return super().forward(x[:, :, : (n_out - 1) * st + kt])


def upsample_nearest(x: torch.Tensor, scale: tuple[int, int, int]) -> torch.Tensor:
    """Nearest-neighbour upsampling of (B, C, T, H, W) by `scale` (t, h, w)."""
    if x.dtype == torch.bfloat16:  # nearest interpolate has no bf16 kernel on some builds
        return F.interpolate(x.float(), scale_factor=scale, mode="nearest").to(torch.bfloat16)
    return F.interpolate(x, scale_factor=scale, mode="nearest")


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are taken per frame (never across time).

    Same parameters as `nn.GroupNorm`, so 2D weights load unchanged. Statistics are computed
    in float32 under half-precision autocast.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return super().forward(x)
        b, c, t, h, w = x.shape
        g = self.num_groups
        xg = x.reshape(b, g, c // g, t, h * w)
        stat = xg.float() if xg.dtype in (torch.float16, torch.bfloat16) else xg
        var, mean = torch.var_mean(stat, dim=(2, 4), keepdim=True, unbiased=False)
        out = ((stat - mean) * torch.rsqrt(var + self.eps)).to(x.dtype).reshape(b, c, t, h, w)
        if self.affine:
            out = out * self.weight.view(1, c, 1, 1, 1) + self.bias.view(1, c, 1, 1, 1)
        return out


class ResidualBlock(nn.Module):
    """The SD VAE residual block's pass: norm1, SiLU, conv1, norm2, SiLU, conv2, plus the input
    (through `conv_shortcut` when widths change). Subclasses build those layers; the convs take
    the stream state."""

    def forward(self, x, state=None):
        h = self.conv1(F.silu(self.norm1(x)), state)
        h = self.conv2(F.silu(self.norm2(h)), state)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class ResnetBlock3D(ResidualBlock):
    """SD VAE residual block with a temporal `conv1` (and a temporal `conv2` too when
    `conv3d_layers == "all"`; with "conv1" it is 2D, as in CV-VAE)."""

    def __init__(self, in_channels, out_channels, groups, eps, kt=3, causal=True,
                 conv3d_layers="conv1"):
        super().__init__()
        self.norm1 = FrameGroupNorm(groups, in_channels, eps=eps)
        self.conv1 = CausalConv3d(in_channels, out_channels, (kt, 3, 3), causal=causal)
        self.norm2 = FrameGroupNorm(groups, out_channels, eps=eps)
        kt2 = kt if conv3d_layers == "all" else 1
        self.conv2 = CausalConv3d(out_channels, out_channels, (kt2, 3, 3), causal=causal)
        self.conv_shortcut = (CausalConv3d(in_channels, out_channels, 1)
                              if in_channels != out_channels else None)


class FrameAttention(nn.Module):
    """Single-head spatial self-attention applied to each frame separately (the SD mid block)."""

    def __init__(self, channels, groups, eps, frames_per_batch=16):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])
        self.frames_per_batch = frames_per_batch  # bounds attention memory on long chunks

    def _attend(self, h):
        hh = h.shape[2]
        h = rearrange(self.group_norm(h), "n c h w -> n (h w) c")
        q, k, v = (proj(h).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        return rearrange(self.to_out[0](h), "n (h w) c -> n c h w", h=hh)

    def forward(self, x, state=None):
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        out = torch.cat([self._attend(f) for f in frames.split(self.frames_per_batch)], dim=0)
        return x + rearrange(out, "(b t) c h w -> b c t h w", b=x.shape[0])


class MidBlock(nn.Module):
    """The SD mid block's pass: resnet -> (attention) -> resnet; subclasses build `resnets`
    (two) and `attentions` (zero or one)."""

    def forward(self, x, state=None):
        x = self.resnets[0](x, state)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x, state)


class MidBlock3D(MidBlock):
    """resnet -> (per-frame attention) -> resnet."""

    def __init__(self, channels, groups, eps, kt, causal, conv3d_layers, add_attention):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock3D(channels, channels, groups, eps, kt, causal, conv3d_layers)
            for _ in range(2)])
        self.attentions = nn.ModuleList(
            [FrameAttention(channels, groups, eps)] if add_attention else [])


class Downsample3D(nn.Module):
    """Stride-2 conv in space (SD's asymmetric zero pad), and in time when `temporal`.

    In time the conv is causal with stride 2 and padding kt-1, so T -> (T-1)//2 + 1 and output
    frame 0 sees input frame 0 only. Inflated with the 2D kernel in the last tap, it picks
    frames 0, 2, 4, ...
    """

    def __init__(self, channels, temporal, kt=3):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, (kt, 3, 3),
                                 stride=(2 if temporal else 1, 2, 2), spatial_padding=(0, 0))

    def forward(self, x, state=None):
        return self.conv(F.pad(x, (0, 1, 0, 1)), state)


class Upsample3D(nn.Module):
    """Nearest x2 in space (and in time when `temporal`), then a conv.

    In time every frame is repeated twice except the very first frame of the video, so
    T -> 2T - 1 (the `1 + 2k` scheme). Inflated with the 2D kernel in the last (causal) or middle
    tap, it reproduces the 2D upsampler on every frame.
    """

    def __init__(self, channels, temporal, kt=3, causal=True):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, (kt, 3, 3), causal=causal)

    def forward(self, x, state=None):
        x = upsample_nearest(x, (2 if self.temporal else 1, 2, 2))
        if self.temporal:
            first = state is None or state.get(self) is None
            if state is not None:
                state.set(self, True)
            if first:
                x = x[:, :, 1:]
        return self.conv(x, state)


class DownBlock3D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, eps, kt, conv3d_layers,
                 downsample, temporal_down):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, groups, eps, kt,
                          True, conv3d_layers) for i in range(num_layers)])
        self.downsamplers = nn.ModuleList(
            [Downsample3D(out_channels, temporal_down, kt)] if downsample else [])

    def forward(self, x, state=None):
        for layer in [*self.resnets, *self.downsamplers]:
            x = layer(x, state)
        return x


class UpBlock3D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, eps, kt, causal,
                 conv3d_layers, upsample, temporal_up):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, groups, eps, kt,
                          causal, conv3d_layers) for i in range(num_layers)])
        self.upsamplers = nn.ModuleList(
            [Upsample3D(out_channels, temporal_up, kt, causal)] if upsample else [])

    def forward(self, x, state=None):
        for layer in [*self.resnets, *self.upsamplers]:
            x = layer(x, state)
        return x

"""`VideoVAE`: a causal 3D-conv video VAE in the SD VAE layout (arch `cv`, as in CV-VAE).

Video in: (B, 3, T, H, W) in [-1, 1]. Latent: (B, Z, 1 + (T-1)//4, H/8, W/8) for the default
4x8x8 model. Frame 0 is compressed alone; every later group of 4 frames gives one latent frame.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook

from .distributions import DiagonalGaussianDistribution
from .layers import (DownBlock3D, FrameGroupNorm, MidBlock3D, StreamState, TemporalConv3d,
                     UpBlock3D)
from .tiling import blend_weights, tile_spans, tiled_apply_2d


# ----------------------------------------------------------------------------------------------
# Frame-count and size helpers


def num_latent_frames(num_frames: int, ratio: int = 4) -> int:
    """Latent frames for a clip of `num_frames` (padded up to the next 1 + ratio*k)."""
    return 1 + -(-(num_frames - 1) // ratio)


def pad_frames(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """Repeat the last frame until T = 1 + ratio*k."""
    t = x.shape[2]
    extra = (num_latent_frames(t, ratio) - 1) * ratio + 1 - t
    if extra == 0:
        return x
    return torch.cat([x, x[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)


def pad_size(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """Replicate the bottom row and right column until H and W are multiples of `ratio`."""
    ph, pw = -x.shape[3] % ratio, -x.shape[4] % ratio
    if not (ph or pw):
        return x
    b, c, t, h, w = x.shape
    x = F.pad(x.reshape(b, c * t, h, w), (0, pw, 0, ph), mode="replicate")
    return x.reshape(b, c, t, h + ph, w + pw)


def pad_video(x: torch.Tensor, temporal_ratio: int, spatial_ratio: int) -> torch.Tensor:
    """Pad frames (repeat the last) to 1 + r*k and H, W (replicate bottom/right) to multiples."""
    return pad_size(pad_frames(x, temporal_ratio), spatial_ratio)


def init_posterior_logvar(moments_conv: nn.Module, latent_channels: int,
                          logvar: float = -8.0) -> None:
    """Start a from-scratch posterior nearly deterministic: with the default init its std is ~1
    while the latent means are ~0.2, so the decoder would see mostly noise."""
    with torch.no_grad():
        moments_conv.bias[latent_channels:].fill_(logvar)


# ----------------------------------------------------------------------------------------------
# Encoder and decoder


class Encoder3D(nn.Module):
    def __init__(self, in_channels, latent_channels, block_out_channels, layers_per_block, groups,
                 eps, kt, conv2_temporal, temporal_downsample, add_attention):
        super().__init__()
        boc = block_out_channels
        self.conv_in = TemporalConv3d(in_channels, boc[0], (kt, 3, 3))
        self.down_blocks = nn.ModuleList()
        for i, ch in enumerate(boc):
            last = i == len(boc) - 1
            self.down_blocks.append(DownBlock3D(
                boc[max(i - 1, 0)], ch, layers_per_block, groups, eps, kt, conv2_temporal,
                downsample=not last, temporal_down=(not last and temporal_downsample[i])))
        self.mid_block = MidBlock3D(boc[-1], groups, eps, kt, True, conv2_temporal, add_attention)
        self.conv_norm_out = FrameGroupNorm(groups, boc[-1], eps=eps)
        self.conv_out = TemporalConv3d(boc[-1], 2 * latent_channels, (kt, 3, 3))
        self.gradient_checkpointing = False

    def forward(self, x, state=None):
        x = self.conv_in(x, state)
        for block in [*self.down_blocks, self.mid_block]:
            if self.gradient_checkpointing and torch.is_grad_enabled() and state is None:
                x = self._gradient_checkpointing_func(block, x)
            else:
                x = block(x, state)
        return self.conv_out(F.silu(self.conv_norm_out(x)), state)


class Decoder3D(nn.Module):
    def __init__(self, latent_channels, out_channels, block_out_channels, layers_per_block, groups,
                 eps, kt, causal, conv2_temporal, temporal_downsample, add_attention):
        super().__init__()
        rev = list(reversed(block_out_channels))
        temporal_up = list(reversed(temporal_downsample))
        self.conv_in = TemporalConv3d(latent_channels, rev[0], (kt, 3, 3), causal=causal)
        self.mid_block = MidBlock3D(rev[0], groups, eps, kt, causal, conv2_temporal, add_attention)
        self.up_blocks = nn.ModuleList()
        for i, ch in enumerate(rev):
            last = i == len(rev) - 1
            self.up_blocks.append(UpBlock3D(
                rev[max(i - 1, 0)], ch, layers_per_block + 1, groups, eps, kt, causal,
                conv2_temporal, upsample=not last, temporal_up=(not last and temporal_up[i])))
        self.conv_norm_out = FrameGroupNorm(groups, rev[-1], eps=eps)
        self.conv_out = TemporalConv3d(rev[-1], out_channels, (kt, 3, 3), causal=causal)
        self.gradient_checkpointing = False

    def forward(self, z, state=None):
        x = self.conv_in(z, state)
        for block in [self.mid_block, *self.up_blocks]:
            if self.gradient_checkpointing and torch.is_grad_enabled() and state is None:
                x = self._gradient_checkpointing_func(block, x)
            else:
                x = block(x, state)
        return self.conv_out(F.silu(self.conv_norm_out(x)), state)


# ----------------------------------------------------------------------------------------------
# The model


class VideoVAE(ModelMixin, AutoencoderMixin, ConfigMixin):
    r"""Causal 3D-conv video VAE with a diffusers-compatible API.

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
        arch: "cv".
        scaling_factor, shift_factor, latents_mean, latents_std: latent normalization for
            diffusion models (`(z - shift) * scale`, or per-channel mean/std); not applied by
            `encode`/`decode`.
        temporal_compression_ratio / spatial_compression_ratio: derived from the above; may be
            given, and must then agree.
    """

    _supports_gradient_checkpointing = True
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
        arch: str = "cv",
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        force_upcast: bool = False,
        temporal_compression_ratio: int | None = None,
        spatial_compression_ratio: int | None = None,
    ):
        super().__init__()
        if arch != "cv":
            raise ValueError(f"unknown arch {arch!r}: this release provides arch 'cv'")
        if conv3d_layers not in ("conv1", "all"):
            raise ValueError(f"conv3d_layers must be 'conv1' or 'all', got {conv3d_layers!r}")
        if len(temporal_downsample) != len(block_out_channels) - 1:
            raise ValueError(f"temporal_downsample needs {len(block_out_channels) - 1} entries "
                             f"(one per downsampling level), got {list(temporal_downsample)}")
        bad = [c for c in block_out_channels if c % norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups="
                             f"{norm_num_groups}")
        for name, stats in (("latents_mean", latents_mean), ("latents_std", latents_std)):
            if stats is not None and len(stats) != latent_channels:
                raise ValueError(f"{name} has {len(stats)} values for {latent_channels} channels")
        t_ratio = 2 ** sum(bool(d) for d in temporal_downsample)
        s_ratio = 2 ** (len(block_out_channels) - 1)
        for name, given, derived in (("temporal_compression_ratio", temporal_compression_ratio,
                                      t_ratio),
                                     ("spatial_compression_ratio", spatial_compression_ratio,
                                      s_ratio)):
            if given is not None and given != derived:
                raise ValueError(f"{name}={given} disagrees with the layers, which give {derived}")
        self.register_to_config(temporal_compression_ratio=t_ratio,
                                spatial_compression_ratio=s_ratio)
        # pipelines read these as attributes (Hunyuan, LTX) or from the config (CogVideoX)
        self.temporal_compression_ratio = t_ratio
        self.spatial_compression_ratio = s_ratio

        conv2_temporal = conv3d_layers == "all"
        kt = temporal_kernel_size
        self.encoder = Encoder3D(in_channels, latent_channels, block_out_channels,
                                 layers_per_block, norm_num_groups, norm_eps, kt, conv2_temporal,
                                 temporal_downsample, mid_block_add_attention)
        self.decoder = Decoder3D(latent_channels, out_channels, block_out_channels,
                                 layers_per_block, norm_num_groups, norm_eps, kt, decoder_causal,
                                 conv2_temporal, temporal_downsample, mid_block_add_attention)
        z2 = 2 * latent_channels
        self.quant_conv = TemporalConv3d(z2, z2, 1) if use_quant_conv else None
        self.post_quant_conv = (TemporalConv3d(latent_channels, latent_channels, 1)
                                if use_post_quant_conv else None)

        # loaded or inflated weights replace this init
        init_posterior_logvar(
            self.quant_conv if self.quant_conv is not None else self.encoder.conv_out,
            latent_channels)

        # memory knobs (not part of the config): chunk lengths of the internal streaming,
        # spatial tiles, and temporal tiles for non-causal decoders
        self.encode_chunk_frames = 16 * t_ratio
        self.decode_chunk_latents = 8
        self.use_tiling = False
        self.use_slicing = False
        self.tile_sample_size = 256
        self.tile_sample_overlap = 64
        self.tile_latent_frames = 8
        self.tile_latent_overlap = 2

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_image_vae(cls, path, arch: str = "cv", **overrides) -> "VideoVAE":
        """Inflate an image VAE (diffusers folder or LDM single file) into a video VAE whose
        one-frame and still-clip outputs equal the image VAE's."""
        from .image_vae import inflate_image_vae

        return inflate_image_vae(path, arch=arch, **overrides)

    # ------------------------------------------------------------------ knobs
    def enable_tiling(self, tile_sample_size: int = 256, tile_sample_overlap: int = 64,
                      tile_latent_frames: int | None = None,
                      tile_latent_overlap: int | None = None) -> None:
        """Process H/W in overlapping tiles of `tile_sample_size` pixels blended over
        `tile_sample_overlap` pixels. Non-causal decoders also decode time in tiles of
        `tile_latent_frames` latents overlapping by `tile_latent_overlap`."""
        r = self.spatial_compression_ratio
        if tile_sample_size % r or tile_sample_overlap % r:
            raise ValueError(f"tile size and overlap must be multiples of {r} pixels")
        if not 0 <= tile_sample_overlap < tile_sample_size:
            raise ValueError("tile_sample_overlap must be in [0, tile_sample_size)")
        self.use_tiling = True
        self.tile_sample_size = tile_sample_size
        self.tile_sample_overlap = tile_sample_overlap
        if tile_latent_frames is not None:
            self.tile_latent_frames = tile_latent_frames
        if tile_latent_overlap is not None:
            self.tile_latent_overlap = tile_latent_overlap
        if not 0 <= self.tile_latent_overlap < self.tile_latent_frames:
            raise ValueError("tile_latent_overlap must be in [0, tile_latent_frames)")

    def set_chunk_sizes(self, encode_frames: int | None = None,
                        decode_latents: int | None = None) -> None:
        """Frames per internal encode chunk (a multiple of the temporal ratio) and latent frames
        per decode chunk. Results do not depend on them; peak memory does."""
        r = self.temporal_compression_ratio
        if encode_frames is not None:
            if encode_frames < r or encode_frames % r:
                raise ValueError(f"encode_frames must be a positive multiple of {r}")
            self.encode_chunk_frames = encode_frames
        if decode_latents is not None:
            if decode_latents < 1:
                raise ValueError("decode_latents must be >= 1")
            self.decode_chunk_latents = decode_latents

    # ------------------------------------------------------------------ checks
    def _check_video(self, x: torch.Tensor, what: str = "video") -> None:
        if not torch.is_tensor(x) or x.ndim != 5:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{what} must be a (B, {self.config.in_channels}, T, H, W) tensor, "
                             f"got {shape}; an image is a video with T=1 (x.unsqueeze(2))")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(f"{what} has {x.shape[1]} channels, the model takes "
                             f"{self.config.in_channels} (layout is (B, C, T, H, W))")
        if not x.is_floating_point():
            raise ValueError(f"{what} must be a float tensor in [-1, 1], got {x.dtype}")
        if x.shape[2] == 0:
            raise ValueError(f"{what} has no frames")
        r = self.spatial_compression_ratio
        if x.shape[3] % r or x.shape[4] % r:
            raise ValueError(f"{what} height and width must be multiples of {r}, got "
                             f"{x.shape[3]}x{x.shape[4]}; vae(x), the file API and the CLI pad "
                             f"for you, or use videovae.pad_video")

    def _check_latent(self, z: torch.Tensor) -> None:
        zc = self.config.latent_channels
        if not torch.is_tensor(z) or z.ndim != 5 or z.shape[1] != zc or z.shape[2] == 0:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"latents must be (B, {zc}, T', h, w) with T' >= 1, got {shape}")

    # ------------------------------------------------------------------ core passes
    def _encode_tile(self, x, state):
        h = self.encoder(x, state)
        return self.quant_conv(h) if self.quant_conv is not None else h

    def _decode_tile(self, z, state):
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z, state)

    def _spatially_tiled(self, x, fn, state, scale):
        """Run fn on x, in spatial tiles when tiling is on and x is larger than one tile."""
        tile, overlap = self.tile_sample_size, self.tile_sample_overlap
        if scale > 1:  # x is a latent: tile sizes in latent pixels
            tile, overlap = tile // scale, overlap // scale
        if not self.use_tiling or max(x.shape[-2:]) <= tile:
            return fn(x, state)

        def run(t, key):
            return fn(t, None if state is None else state.sub(key))

        return tiled_apply_2d(x, run, int(tile), int(overlap), scale)

    def _encode_chunk(self, x, state):
        return self._spatially_tiled(x, self._encode_tile, state,
                                     1.0 / self.spatial_compression_ratio)

    def _decode_chunk(self, z, state):
        return self._spatially_tiled(z, self._decode_tile, state, self.spatial_compression_ratio)

    def _encode_moments(self, x):
        t_chunk = self.encode_chunk_frames
        if x.shape[2] <= 1 + t_chunk:
            return self._encode_chunk(x, None)
        state = StreamState()
        bounds = [0] + list(range(1 + t_chunk, x.shape[2], t_chunk)) + [x.shape[2]]
        return torch.cat([self._encode_chunk(x[:, :, a:b], state)
                          for a, b in zip(bounds[:-1], bounds[1:])], dim=2)

    def _decode_all(self, z):
        if not self.config.decoder_causal:
            return torch.cat(list(self._temporal_tiles(z)), dim=2)
        n = self.decode_chunk_latents
        if z.shape[2] <= n:
            return self._decode_chunk(z, None)
        state = StreamState()
        return torch.cat([self._decode_chunk(p, state) for p in z.split(n, dim=2)], dim=2)

    def _temporal_windows(self, n_latents):
        """Latent windows [a, b) for non-causal decoding (one window when tiling is off)."""
        if not self.use_tiling or n_latents <= self.tile_latent_frames:
            return [(0, n_latents)]
        return tile_spans(n_latents, self.tile_latent_frames, self.tile_latent_overlap)

    def _temporal_tiles(self, z):
        """Non-causal decoders: decode overlapping latent windows, blend them linearly in time,
        and yield each run of frames as soon as no later window touches it."""
        r = self.temporal_compression_ratio
        windows = self._temporal_windows(z.shape[2])
        spans = [(r * a, r * (b - 1) + 1) for a, b in windows]
        acc = norm = None
        base = 0  # frame index of acc[:, :, 0]
        for k, (a, b) in enumerate(windows):
            piece = self._decode_chunk(z[:, :, a:b], None)
            s, e = spans[k]
            w = blend_weights(spans, k, piece.device)
            if acc is None:
                acc = piece.new_zeros((*piece.shape[:2], 0, *piece.shape[3:]), dtype=torch.float32)
                norm = w.new_zeros(0)
            grow = e - base - acc.shape[2]
            if grow > 0:
                acc = torch.cat([acc, acc.new_zeros((*acc.shape[:2], grow, *acc.shape[3:]))], 2)
                norm = torch.cat([norm, norm.new_zeros(grow)])
            acc[:, :, s - base:e - base] += piece.float() * w.view(1, 1, -1, 1, 1)
            norm[s - base:e - base] += w
            final = spans[k + 1][0] if k + 1 < len(spans) else spans[-1][1]
            yield (acc[:, :, :final - base] / norm[:final - base].view(1, 1, -1, 1, 1)).to(
                piece.dtype)
            acc, norm, base = acc[:, :, final - base:], norm[final - base:], final

    # ------------------------------------------------------------------ public API
    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Encode (B, 3, T, H, W) in [-1, 1] (any T; H, W multiples of the spatial ratio).

        Frames are padded by repeating the last one up to 1 + r*k. Long clips are encoded in
        chunks with carried causal caches, which equals one full pass.
        """
        self._check_video(x)
        x = pad_frames(x, self.temporal_compression_ratio)
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self._encode_moments(xi) for xi in x.split(1)], dim=0)
        else:
            moments = self._encode_moments(x)
        posterior = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, num_frames: int | None = None, return_dict: bool = True):
        """Decode (B, Z, T', h, w) into 1 + r*(T'-1) frames, trimmed to `num_frames` if given."""
        self._check_latent(z)
        r = self.temporal_compression_ratio
        full = 1 + r * (z.shape[2] - 1)
        if num_frames is not None and not max(full - r, 0) < num_frames <= full:
            raise ValueError(f"num_frames={num_frames} does not fit {z.shape[2]} latent frames "
                             f"(they decode to {max(full - r + 1, 1)}..{full} frames)")
        if self.use_slicing and z.shape[0] > 1:
            x = torch.cat([self._decode_all(zi) for zi in z.split(1)], dim=0)
        else:
            x = self._decode_all(z)
        if num_frames is not None:
            x = x[:, :, :num_frames]
        return DecoderOutput(sample=x) if return_dict else (x,)

    def forward(self, sample: torch.Tensor, sample_posterior: bool = False,
                return_dict: bool = True, generator: torch.Generator | None = None,
                return_posterior: bool = False):
        """Reconstruct a video of any frame count and size (padded, then trimmed and cropped).

        With `return_posterior=True` returns `(reconstruction, posterior)` (for training).
        """
        if torch.is_tensor(sample) and sample.ndim == 5 and sample.shape[2] > 0:
            t, h, w = sample.shape[2:]
            sample = pad_video(sample, self.temporal_compression_ratio,
                               self.spatial_compression_ratio)
        else:
            t, h, w = None, None, None  # encode() raises the readable error
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        dec = self.decode(z, num_frames=t).sample[..., :h, :w]
        if return_posterior:
            return dec, posterior
        return DecoderOutput(sample=dec) if return_dict else (dec,)

    # ------------------------------------------------------------------ streaming
    def _aligned_pixel_chunks(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Regroup arbitrary pixel chunks into 1 + n*r frames, then n*r frames at a time (n*r <=
        encode_chunk_frames); the tail is padded by repeating the last frame, as `encode` does."""
        r, n = self.temporal_compression_ratio, self.encode_chunk_frames
        pending: list[torch.Tensor] = []
        count, first, ref = 0, True, None
        for chunk in chunks:
            self._check_video(chunk, "chunk")
            if ref is None:
                ref = (chunk.shape[0], *chunk.shape[3:])
            elif (chunk.shape[0], *chunk.shape[3:]) != ref:
                raise ValueError(f"chunk shape {tuple(chunk.shape)} differs from the stream's "
                                 f"(B, H, W) = {ref}")
            pending.append(chunk)
            count += chunk.shape[2]
            while count >= (1 + n if first else n):
                need = 1 + n if first else n
                buf = torch.cat(pending, dim=2)
                yield buf[:, :, :need]
                pending, count, first = [buf[:, :, need:]], count - need, False
        if first and count == 0:
            raise ValueError("the stream had no frames")
        if count:
            buf = torch.cat(pending, dim=2)
            if first:
                yield pad_frames(buf, r)
            else:  # repeat the last frame up to whole groups of r
                extra = -buf.shape[2] % r
                yield torch.cat([buf, buf[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)

    @torch.no_grad()
    def stream_encode(self, chunks: Iterable[torch.Tensor], sample_posterior: bool = False,
                      generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Encode a video given as pixel chunks of any sizes; yields latent chunks whose
        concatenation equals `encode(whole).latent_dist.mode()` (or a sample of it)."""
        state = StreamState()
        for x in self._aligned_pixel_chunks(chunks):
            posterior = DiagonalGaussianDistribution(self._encode_chunk(x, state))
            yield posterior.sample(generator) if sample_posterior else posterior.mode()

    @torch.no_grad()
    def stream_decode(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Decode latent chunks of any sizes; yields pixel chunks whose concatenation equals
        `decode(whole)`: 1 + r*(n-1) frames for the first chunk of n latents, r*n after."""
        if not self.config.decoder_causal:
            # windows overlap in time, so collect the (small) latents and decode window by window
            latents = []
            for z in chunks:
                self._check_latent(z)
                latents.append(z)
            if latents:
                yield from self._temporal_tiles(torch.cat(latents, dim=2))
            return
        state = StreamState()
        for z in chunks:
            self._check_latent(z)
            for piece in z.split(self.decode_chunk_latents, dim=2):
                yield self._decode_chunk(piece, state)

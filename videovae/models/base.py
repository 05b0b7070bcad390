"""The base class of every model family: the diffusers-style public API (encode / decode /
forward), exact chunked streaming with carried caches, spatial tiling, temporal tiling for
non-causal decoders, batch slicing, input checks and the hooks the trainer uses. The names
diffusers video pipelines read come from `pipeline_names.PipelineNamesMixin`.

A family subclasses `StreamingAutoencoder` (with `ConfigMixin`), sets `arch` (its key in
`registry.FAMILIES`) and provides:
    _encode_tile(x, state)   pixels (B, C, t, H, W) -> posterior moments (B, 2Z, t', h, w)
    _decode_tile(z, state)   latents (B, Z, t', h, w) -> pixels
    encoder_modules() / decoder_modules()   what `set_trainable` freezes
    last_decoder_layer()     the weight taming's adaptive GAN weight differentiates against
(`_decode_tile` and the module lists have defaults for families laid out like diffusers'
`AutoencoderKL`: `encoder`, `decoder` and optional `quant_conv` / `post_quant_conv`), and
sets `temporal_compression_ratio`, `spatial_compression_ratio` (`_set_ratios`, or
`_set_levels` for an SD-layout level list) and calls `_init_streaming()` in `__init__` (which
derives the names pipelines read). A family whose latents are not plain image latents
overrides `image_latents` / `latents_from_image` / `image_reg_mapping` (what the latent
regularization against the image VAE compares).

`state` is a `StreamState` (or None for one full pass); a family's layers must make chunked
passes equal one full pass for chunks of whole groups, which is all this module ever feeds them:
1 + n*r frames first, then n*r at a time.
"""

from __future__ import annotations

import math
import os
import re
from typing import Iterable, Iterator

import torch
import torch.nn as nn
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook

from ..errors import ModelLoadError
from ..frames import frame_counts_for, num_decoded_frames, pad_frames, pad_video, repeat_last_frame
from ..latents import ABSORB_KEY, absorbed_affine, network_latents
from .distributions import DiagonalGaussianDistribution
from .layers import StreamState
from .pipeline_names import PipelineNamesMixin
from .tiling import blend_temporal_windows, tile_spans, tiled_apply_2d

# Defaults of the memory knobs (not part of the config; results do not depend on them).
ENCODE_CHUNK_FRAMES = 16  # frames per internal encode step (rounded up to the temporal ratio)
DECODE_CHUNK_LATENTS = 4  # latent frames per internal decode step
TILE_SAMPLE_SIZE, TILE_SAMPLE_OVERLAP = 256, 64  # spatial tiles, in pixels
TILE_LATENT_FRAMES, TILE_LATENT_OVERLAP = 8, 2  # temporal tiles of non-causal decoders
# Pixels are in [-1, 1]; inputs beyond this are refused as another scale (0..255 frames). The
# margin leaves room for resampling overshoot.
PIXEL_RANGE_LIMIT = 1.5


def _raise_nonfinite(t: torch.Tensor, what: str):
    nan = int(torch.isnan(t).sum())
    inf = int(torch.isinf(t).sum())
    raise ValueError(f"{what} with {nan} NaN and {inf} infinite values; the model would turn "
                     "them into garbage")

def init_posterior_logvar(moments_conv: nn.Module, latent_channels: int,
                          logvar: float = -8.0) -> None:
    """Start a from-scratch posterior nearly deterministic: with the default init its std is ~1
    while the latent means are ~0.2, so the decoder would see mostly noise."""
    with torch.no_grad():
        moments_conv.bias[latent_channels:].fill_(logvar)


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_model_location(path) -> None:
    """A model location is an existing folder, or else an `owner/name` hub id."""
    p = os.fspath(path)
    if os.path.isdir(p):
        return
    if os.path.exists(p):
        raise ModelLoadError(f"{p} is a file; a model is a folder (config.json + weights)")
    if not _HUB_ID.fullmatch(p) or p.startswith((".", "/")) or ".." in p:
        raise ModelLoadError(f"no model folder at {p} (and it is not an owner/name hub id)")


class StreamingAutoencoder(PipelineNamesMixin, ModelMixin, AutoencoderMixin):
    """Base class of the video VAE families; see the module docstring."""

    #: the family's name in `videovae.models.registry.FAMILIES` (set by each family class)
    arch: str = ""
    #: other `_class_name`s a saved config.json of this family may carry (older names)
    class_aliases: tuple[str, ...] = ()

    _supports_gradient_checkpointing = True

    def _set_ratios(self, t_ratio: int, s_ratio: int, given_t: int | None,
                    given_s: int | None) -> None:
        """Record the compression ratios the layers give (config and attributes: pipelines read
        them as attributes (Hunyuan, LTX) or from the config (CogVideoX)); given values must
        agree."""
        for name, given, derived in (("temporal_compression_ratio", given_t, t_ratio),
                                     ("spatial_compression_ratio", given_s, s_ratio)):
            if given is not None and given != derived:
                raise ValueError(f"{name}={given} disagrees with the layers, which give {derived}")
        self.register_to_config(temporal_compression_ratio=t_ratio,
                                spatial_compression_ratio=s_ratio)
        self.temporal_compression_ratio = t_ratio
        self.spatial_compression_ratio = s_ratio

    @staticmethod
    def _check_latent_stats(latent_channels: int, latents_mean, latents_std) -> None:
        for name, stats in (("latents_mean", latents_mean), ("latents_std", latents_std)):
            if stats is not None and len(stats) != latent_channels:
                raise ValueError(f"{name} has {len(stats)} values for {latent_channels} channels")

    def _init_streaming(self) -> None:
        self._register_pipeline_names()
        r = self.temporal_compression_ratio
        self.encode_chunk_frames = r * -(-ENCODE_CHUNK_FRAMES // r)
        self.decode_chunk_latents = DECODE_CHUNK_LATENTS
        self.use_tiling = False
        self.use_slicing = False
        self.tile_sample_size = TILE_SAMPLE_SIZE
        self.tile_sample_overlap = TILE_SAMPLE_OVERLAP
        self.tile_latent_frames = TILE_LATENT_FRAMES
        self.tile_latent_overlap = TILE_LATENT_OVERLAP

    def _set_levels(self, block_out_channels, temporal_downsample, norm_num_groups: int,
                    given_t: int | None, given_s: int | None) -> None:
        """Check an SD-layout level list (one `temporal_downsample` flag per downsampling level,
        widths divisible by the norm groups) and record the ratios it gives."""
        if norm_num_groups < 1:
            raise ValueError(f"norm_num_groups must be >= 1, got {norm_num_groups}")
        if len(temporal_downsample) != len(block_out_channels) - 1:
            raise ValueError(f"temporal_downsample needs {len(block_out_channels) - 1} entries "
                             f"(one per downsampling level), got {list(temporal_downsample)}")
        bad = [c for c in block_out_channels if c % norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups="
                             f"{norm_num_groups}")
        self._set_ratios(2 ** sum(bool(d) for d in temporal_downsample),
                         2 ** (len(block_out_channels) - 1), given_t, given_s)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """diffusers' loader, except that a path that is neither a folder nor an `owner/name`
        hub id fails at once (diffusers would retry the hub for ~20 s when offline)."""
        check_model_location(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def from_image_vae(cls, path, arch: str | None = None, **overrides):
        """Inflate an image VAE (diffusers folder or LDM single file) into a video VAE of this
        class's family whose one-frame and still-clip outputs equal the image VAE's
        (`StreamingAutoencoder.from_image_vae(path, arch=...)` builds any family). A
        convenience over `videovae.convert.inflate_image_vae`: the models do not depend on the
        conversion package, this method imports it when called."""
        import warnings

        from ..convert import inflate_image_vae

        if cls.arch and arch not in (None, cls.arch):  # worked before the family table: kept
            warnings.warn(f"{cls.__name__}.from_image_vae(arch={arch!r}) returns another class; "
                          f"use videovae.family_class({arch!r}).from_image_vae(path) or "
                          f"videovae.convert.inflate_image_vae(path, arch={arch!r})",
                          FutureWarning, stacklevel=2)
        if not (arch or cls.arch):
            raise ValueError("StreamingAutoencoder.from_image_vae needs arch= (a key of "
                             "videovae.FAMILIES)")
        return inflate_image_vae(path, arch or cls.arch, **overrides)

    # ------------------------------------------------------------------ what decode can stream
    @property
    def decoder_streams(self) -> bool:
        """Whether the decoder is causal (exact streaming); otherwise time is decoded in
        overlapping windows."""
        return bool(self.config.get("decoder_causal", True))

    # ------------------------------------------------------------------ image VAE pairing
    #: The frame of each group that a latent frame's image part stands for, when the family
    #: fixes it (a `videovae.training.losses` mapping: `ktc` says "key", each group's first
    #: frame); None lets `loss.reg_mapping` choose.
    image_reg_mapping: str | None = None

    def image_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The part of video latents z that the image VAE's decoder reads (here: all of it)."""
        return z

    def latents_from_image(self, z_img: torch.Tensor) -> torch.Tensor:
        """Video latents built from image-VAE latents, for the encoder regularization (here:
        the image latents themselves)."""
        return z_img

    # ------------------------------------------------------------------ AutoencoderKL layout
    def _decode_tile(self, z, state):
        post_quant = getattr(self, "post_quant_conv", None)
        return self.decoder(z if post_quant is None else post_quant(z), state)

    # ------------------------------------------------------------------ training hooks
    def encoder_modules(self) -> list[nn.Module]:
        return [m for m in (self.encoder, getattr(self, "quant_conv", None)) if m is not None]

    def decoder_modules(self) -> list[nn.Module]:
        return [m for m in (getattr(self, "post_quant_conv", None), self.decoder)
                if m is not None]

    def last_decoder_layer(self) -> torch.Tensor:
        raise NotImplementedError

    def set_trainable(self, encoder: bool = True, decoder: bool = True) -> None:
        """Freeze or unfreeze the encoder side and the decoder side."""
        for flag, modules in ((encoder, self.encoder_modules()), (decoder, self.decoder_modules())):
            for m in modules:
                m.requires_grad_(flag)

    # ------------------------------------------------------------------ knobs
    def enable_tiling(self, tile_sample_size: int = TILE_SAMPLE_SIZE,
                      tile_sample_overlap: int = TILE_SAMPLE_OVERLAP,
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
        frames = self.tile_latent_frames if tile_latent_frames is None else tile_latent_frames
        overlap = self.tile_latent_overlap if tile_latent_overlap is None else tile_latent_overlap
        if not 0 <= overlap < frames:
            raise ValueError("tile_latent_overlap must be in [0, tile_latent_frames)")
        self.use_tiling = True
        self.tile_sample_size, self.tile_sample_overlap = tile_sample_size, tile_sample_overlap
        self.tile_latent_frames, self.tile_latent_overlap = frames, overlap

    def set_chunk_sizes(self, encode_frames: int | None = None,
                        decode_latents: int | None = None) -> None:
        """Frames per internal encode chunk (a multiple of the temporal ratio) and latent frames
        per decode chunk. Results do not depend on them; peak memory does."""
        r = self.temporal_compression_ratio
        if encode_frames is not None:
            if encode_frames < r or encode_frames % r:
                raise ValueError(f"encode chunk must be a positive multiple of {r} frames, got "
                                 f"{encode_frames}")
            self.encode_chunk_frames = encode_frames
        if decode_latents is not None:
            if decode_latents < 1:
                raise ValueError(f"decode chunk must be >= 1 latent frame, got {decode_latents}")
            self.decode_chunk_latents = decode_latents

    # ------------------------------------------------------------------ checks
    def _checks_values(self) -> bool:
        """Whether inputs are checked for NaN/Inf: always, except in a training step (train
        mode with gradients on), where the trainer's non-finite-step policy handles them."""
        return not (self.training and torch.is_grad_enabled())

    def _check_video(self, x: torch.Tensor, what: str = "video") -> torch.Tensor:
        """Shape, dtype and range checks; returns x cast to the model's dtype."""
        c = self.config.in_channels
        if not torch.is_tensor(x) or x.ndim != 5:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{what} must be a (B, {c}, T, H, W) tensor, got {shape}; an image "
                             "is a video with T=1 (x.unsqueeze(2))")
        if x.shape[1] != c:
            raise ValueError(f"{what} has {x.shape[1]} channels, the model takes {c} (layout is "
                             "(B, C, T, H, W))")
        if not x.is_floating_point():
            raise ValueError(f"{what} must be a float tensor in [-1, 1], got {x.dtype}")
        if x.shape[2] == 0:
            raise ValueError(f"{what} has no frames")
        r = self.spatial_compression_ratio
        if x.shape[3] % r or x.shape[4] % r:
            raise ValueError(f"{what} height and width must be multiples of {r}, got "
                             f"{x.shape[3]}x{x.shape[4]}; vae(x), the file API and the CLI pad "
                             "for you, or use videovae.pad_video")
        if x.numel():
            lo, hi = (float(v) for v in torch.aminmax(x.detach()))
            if not (math.isfinite(lo) and math.isfinite(hi)):
                if self._checks_values():
                    _raise_nonfinite(x, what)
            elif lo < -PIXEL_RANGE_LIMIT or hi > PIXEL_RANGE_LIMIT:
                raise ValueError(f"{what} values span [{lo:g}, {hi:g}]; the model takes pixels in "
                                 "[-1, 1] (for 0..255 frames use x / 127.5 - 1, for 0..1 "
                                 "frames x * 2 - 1)")
        return x.to(self.dtype)

    def _check_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Shape and value checks; returns z cast to the model's dtype."""
        zc = self.config.latent_channels
        if not torch.is_tensor(z) or z.ndim != 5 or z.shape[1] != zc or z.shape[2] == 0:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            hint = ("; a 4D tensor is one latent frame per image, as AnimateDiff and Stable "
                    "Video Diffusion decode: use the pipelines in videovae.integrations.pipelines"
                    if torch.is_tensor(z) and z.ndim == 4 else "")
            raise ValueError(f"latents must be (B, {zc}, T', h, w) with T' >= 1, got {shape}"
                             f"{hint}")
        if not z.is_floating_point():
            raise ValueError(f"latents must be a float tensor, got {z.dtype}")
        if self._checks_values() and z.numel() and not bool(torch.isfinite(z.detach()).all()):
            _raise_nonfinite(z, "latents")
        return z.to(self.dtype)

    # ------------------------------------------------------------------ chunks and tiles
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
        moments = self._spatially_tiled(x, self._encode_tile, state,
                                        1.0 / self.spatial_compression_ratio)
        if not self.config.get(ABSORB_KEY):
            return moments
        # the model absorbs the latent normalization (videovae.latents.ABSORB_KEY)
        mean, logvar = moments.chunk(2, dim=1)
        offset, gain = absorbed_affine(self.config, mean)
        gain = torch.as_tensor(gain, dtype=mean.dtype, device=mean.device)
        return torch.cat([(mean - offset) * gain, logvar + 2 * gain.abs().log()], dim=1)

    def _decode_chunk(self, z, state):
        return self._spatially_tiled(network_latents(z, self.config), self._decode_tile, state,
                                     self.spatial_compression_ratio)

    def _encode_moments(self, x):
        n = self.encode_chunk_frames
        if x.shape[2] <= 1 + n:
            return self._encode_chunk(x, None)
        state = StreamState()
        bounds = [0, *range(1 + n, x.shape[2], n), x.shape[2]]
        return torch.cat([self._encode_chunk(x[:, :, a:b], state)
                          for a, b in zip(bounds[:-1], bounds[1:], strict=True)], dim=2)

    def _decode_all(self, z):
        if not self.decoder_streams:
            return torch.cat(list(self._temporal_tiles(z)), dim=2)
        n = self.decode_chunk_latents
        if z.shape[2] <= n:
            return self._decode_chunk(z, None)
        state = StreamState()
        return torch.cat([self._decode_chunk(p, state) for p in z.split(n, dim=2)], dim=2)

    def _temporal_tiles(self, z):
        """Non-causal decoders: overlapping latent windows (one when tiling is off), blended."""
        n = z.shape[2]
        windows = ([(0, n)] if not self.use_tiling or n <= self.tile_latent_frames
                   else tile_spans(n, self.tile_latent_frames, self.tile_latent_overlap))
        return blend_temporal_windows(z, windows, lambda w: self._decode_chunk(w, None),
                                      self.temporal_compression_ratio)

    # ------------------------------------------------------------------ public API
    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Encode (B, 3, T, H, W) in [-1, 1] (any T; H, W multiples of the spatial ratio).

        Frames are padded by repeating the last one up to 1 + r*k. Long clips are encoded in
        chunks with carried causal caches, which equals one full pass. Any float dtype is cast
        to the model's; NaN/Inf values and values far outside [-1, 1] (e.g. 0..255 frames) are
        refused with a ValueError.
        """
        x = pad_frames(self._check_video(x), self.temporal_compression_ratio)
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self._encode_moments(xi) for xi in x.split(1)], dim=0)
        else:
            moments = self._encode_moments(x)
        posterior = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, temb: torch.Tensor | None = None, *,
               num_frames: int | None = None, return_dict: bool = True):
        """Decode (B, Z, T', h, w) into 1 + r*(T'-1) frames, trimmed to `num_frames` if given.

        Latents of any float dtype are cast to the model's; NaN/Inf latents are refused. The
        output is nominally in [-1, 1] but not clamped (as diffusers' AutoencoderKL: training
        needs the gradient, and pipelines clamp when they convert to pixels); clamp before
        converting to images. `temb` is there for pipelines that pass a decode timestep
        positionally (LTX: `decode(z, timestep, return_dict=False)`); it must be None, as the
        model has no timestep conditioning (`config.timestep_conditioning` is False).
        """
        if temb is not None:
            raise ValueError("this VAE has no timestep conditioning (config.timestep_conditioning "
                             "is False): decode takes no timestep; pass num_frames= by keyword")
        x = self._decode_trimmed(self._check_latent(z), num_frames)
        return DecoderOutput(sample=x) if return_dict else (x,)

    def _decode_trimmed(self, z, num_frames):
        if num_frames is not None:
            fits = frame_counts_for(z.shape[2], self.temporal_compression_ratio)
            if num_frames not in fits:
                raise ValueError(f"num_frames={num_frames} does not fit {z.shape[2]} latent "
                                 f"frames (they decode to {fits.start}..{fits.stop - 1} frames)")
        if self.use_slicing and z.shape[0] > 1:
            x = torch.cat([self._decode_all(zi) for zi in z.split(1)], dim=0)
        else:
            x = self._decode_all(z)
        return x[:, :, :num_frames] if num_frames is not None else x

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
        # the model's own latents: not checked as input (validation of a diverged model reports
        # NaN metrics instead of stopping)
        dec = self._decode_trimmed(z, t)[..., :h, :w]
        if return_posterior:
            return dec, posterior
        return DecoderOutput(sample=dec) if return_dict else (dec,)

    # ------------------------------------------------------------------ streaming
    def _aligned_pixel_chunks(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Regroup arbitrary pixel chunks into whole groups: 1 + n frames first, then n at a
        time (n = encode_chunk_frames); the tail is padded by repeating the last frame, as
        `encode` does."""
        r, n = self.temporal_compression_ratio, self.encode_chunk_frames
        pending: list[torch.Tensor] = []
        count, first, ref = 0, True, None
        for chunk in chunks:
            chunk = self._check_video(chunk, "chunk")
            if ref is None:
                ref = (chunk.shape[0], *chunk.shape[3:])
            elif (chunk.shape[0], *chunk.shape[3:]) != ref:
                raise ValueError(f"chunk shape {tuple(chunk.shape)} differs from the stream's "
                                 f"(B, H, W) = {ref}")
            pending.append(chunk)
            count += chunk.shape[2]
            while count >= (need := 1 + n if first else n):
                buf = torch.cat(pending, dim=2)
                yield buf[:, :, :need]
                pending, count, first = [buf[:, :, need:]], count - need, False
        if first and count == 0:
            raise ValueError("the stream had no frames")
        if count:
            buf = torch.cat(pending, dim=2)
            # the first chunk pads to 1 + r*k, later ones to whole groups of r
            yield pad_frames(buf, r) if first else repeat_last_frame(buf, -buf.shape[2] % r)

    @torch.no_grad()
    def stream_posterior(self, chunks: Iterable[torch.Tensor]
                         ) -> Iterator[DiagonalGaussianDistribution]:
        """Encode a video given as pixel chunks of any sizes; yields the posterior of each
        latent chunk (concatenated: `encode(whole).latent_dist`)."""
        state = StreamState()
        for x in self._aligned_pixel_chunks(chunks):
            yield DiagonalGaussianDistribution(self._encode_chunk(x, state))

    @torch.no_grad()
    def stream_encode(self, chunks: Iterable[torch.Tensor], sample_posterior: bool = False,
                      generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Encode a video given as pixel chunks of any sizes; yields latent chunks whose
        concatenation equals `encode(whole).latent_dist.mode()` (or a sample of it)."""
        for posterior in self.stream_posterior(chunks):
            yield posterior.sample(generator) if sample_posterior else posterior.mode()

    @torch.no_grad()
    def stream_decode(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Decode latent chunks of any sizes; yields pixel chunks whose concatenation equals
        `decode(whole)`: 1 + r*(n-1) frames for the first chunk of n latents, r*n after."""
        if not self.decoder_streams:
            # windows overlap in time, so collect the (small) latents and decode window by window
            latents = []
            for z in chunks:
                latents.append(self._check_latent(z))
            if latents:
                yield from self._temporal_tiles(torch.cat(latents, dim=2))
            return
        state = StreamState()
        for z in chunks:
            z = self._check_latent(z)
            for piece in z.split(self.decode_chunk_latents, dim=2):
                yield self._decode_chunk(piece, state)

    def num_decoded_frames(self, num_latents: int) -> int:
        """Frames that `num_latents` latent frames decode to (before trimming)."""
        return num_decoded_frames(num_latents, self.temporal_compression_ratio)

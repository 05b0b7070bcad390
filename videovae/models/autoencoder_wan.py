"""The `wan` family: diffusers' `AutoencoderKLWan` (Wan 2.1; Wan 2.2 TI2V with `is_residual` and
`patch_size=2`) and `AutoencoderKLQwenImage` (Qwen-Image's VAE, the same design with Wan 2.1's
layout) as a toolkit family, reading and writing each upstream folder format (`FORMATS`;
`config.upstream_format` says which a model is).

The upstream model is kept whole and untouched as the submodule `upstream` (its modules, weights
and config); this class only drives it:
- Streaming: upstream keeps its causal caches on the model (`_feat_map`) and clears them around
  every call. Here each stream's caches live in the `StreamState` the base class passes (one
  list of slots per top-level step of the encoder or decoder, filled by upstream's own blocks),
  so two streams and a backward pass can coexist. As upstream, the first frame (first latent
  frame) of a stream runs alone; later chunks may hold any number of whole groups. Chunked
  passes equal upstream's `encode` / `decode` within float rounding.
- Frame counts: `encode` pads to 1 + 4k by repeating the last frame and `decode(num_frames=)`
  trims (upstream silently drops frames beyond 1 + 4k).
- No clamping: `decode` returns the decoder's output unclamped, as the toolkit's other families
  (training needs the gradient beyond [-1, 1]; pipelines clamp when they convert to pixels).
  Upstream's `decode(z).sample` equals `decode(z).sample.clamp(-1, 1)` here.
- Gradient checkpointing (upstream has none): each top-level step is checkpointed as a pure
  function of (input, cache slots) -> (output, new cache slots), so recomputation in the
  backward pass sees the caches as they were, not as later chunks left them.
- Normalization: Wan's per-channel `latents_mean` / `latents_std` with `scaling_factor` 1 (the
  `mean_std` convention Wan pipelines apply). `scaling_factor`, `shift_factor` and
  `absorb_normalization` are written into config.json only when they differ from that
  convention (upstream ignores them, with a log line).
- Saving (`save_pretrained`) writes upstream's own folder: `AutoencoderKLWan.from_pretrained`
  (or `AutoencoderKLQwenImage.from_pretrained`) loads it without videovae, and `load_model` /
  every `--model` load it back as this family.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn as nn
from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.models.autoencoders import autoencoder_kl_qwenimage as qwen
from diffusers.models.autoencoders import autoencoder_kl_wan as wan

from ..config import PIPELINE_CONFIG_KEYS
from ..latents import ABSORB_KEY
from .base import StreamingAutoencoder, check_model_location

# the diffusers classes of this design, by config.json `_class_name`
FORMATS = {"AutoencoderKLWan": AutoencoderKLWan, "AutoencoderKLQwenImage": AutoencoderKLQwenImage}
CACHE_T = wan.CACHE_T  # frames each cached conv keeps (2 in both)
assert qwen.CACHE_T == CACHE_T
CAUSAL_CONVS = (wan.WanCausalConv3d, qwen.QwenImageCausalConv3d)
ATTENTIONS = (wan.WanAttentionBlock, qwen.QwenImageAttentionBlock)


def _init_keys(cls: type) -> tuple[str, ...]:
    return tuple(n for n in inspect.signature(cls.__init__).parameters if n != "self")


# this family's architecture entries: AutoencoderKLWan's arguments
UPSTREAM_KEYS = _init_keys(AutoencoderKLWan)
# toolkit config entries that upstream does not have, and their values in Wan's convention;
# config.json holds them only when they differ
TOOLKIT_DEFAULTS = {"scaling_factor": 1.0, "shift_factor": None, ABSORB_KEY: False}
# keys of the diffusers hub / cache that `load_config` takes too
_LOCATION_KWARGS = ("subfolder", "cache_dir", "local_files_only", "revision", "token",
                    "force_download", "proxies")
# Wan 2.1 entries that AutoencoderKLQwenImage does not have, as Qwen-Image's layout fixes them
_QWEN_FIXED = {"decoder_base_dim": None, "is_residual": False, "patch_size": None}


def _patch_area(config: dict) -> int:
    return (config.get("patch_size") or 1) ** 2


def _to_upstream(config: dict, fmt: str) -> dict:
    """This family's architecture entries -> the arguments of diffusers' class `fmt`. Upstream
    Wan counts the channels of the patchified video (pixels * patch_size**2), Qwen-Image has one
    `input_channels`; the toolkit counts pixel channels."""
    config = {k: config[k] for k in UPSTREAM_KEYS if k in config}
    if fmt == "AutoencoderKLQwenImage":
        bad = {k: config[k] for k, v in _QWEN_FIXED.items() if config.get(k, v) != v}
        if bad or config["in_channels"] != config["out_channels"]:
            raise ValueError(f"AutoencoderKLQwenImage has no {bad or 'in/out channel split'}")
        keys = _init_keys(AutoencoderKLQwenImage)
        return {k: v for k, v in {**config, "input_channels": config["in_channels"]}.items()
                if k in keys}
    a = _patch_area(config)
    return {**config, **{k: config[k] * a for k in ("in_channels", "out_channels")}}


def _from_upstream(config: dict, fmt: str) -> dict:
    config = dict(config)
    if fmt == "AutoencoderKLQwenImage":
        channels = config.pop("input_channels", 3)
        return {**config, **_QWEN_FIXED, "in_channels": channels, "out_channels": channels}
    a = _patch_area(config)
    for k in ("in_channels", "out_channels"):
        if config.get(k, 3) % a:
            raise ValueError(f"upstream {k}={config[k]} is not a multiple of patch_size**2={a}")
    return {**config, **{k: config[k] // a for k in ("in_channels", "out_channels")
                         if k in config}}


def _upstream_default(name: str):
    return inspect.signature(AutoencoderKLWan.__init__).parameters[name].default


# ---------------------------------------------------------------------------------- cached steps
# A "step" is one top-level piece of upstream's encoder or decoder: its first conv, each block,
# its head. `fn(x, slots, **kw)` runs the step on a chunk, reading and refilling `slots`, the
# step's causal caches (upstream's feat_cache entries for that step, indexed from 0).

def _cached_conv(conv: nn.Module, x: torch.Tensor, slots: list) -> torch.Tensor:
    """Upstream's rule for the convs its encoder and decoder call themselves: run on x after the
    cached frames, then keep the last CACHE_T frames of x (topped up from the old cache)."""
    past = slots[0]
    keep = x[:, :, -CACHE_T:].clone()
    if keep.shape[2] < CACHE_T and past is not None:
        keep = torch.cat([past[:, :, -1:].to(keep.device), keep], dim=2)
    out = conv(x, past)
    slots[0] = keep
    return out


def _block(block: nn.Module, x, slots, **kw):
    if isinstance(block, ATTENTIONS):  # per-frame attention: no cache
        return block(x)
    return block(x, feat_cache=slots, feat_idx=[0], **kw)


def _head(owner: nn.Module, x, slots):
    return _cached_conv(owner.conv_out, owner.nonlinearity(owner.norm_out(x)), slots)


def _pure_step(fn, x, slots, **kw):
    """`fn` on a copy of the slots: (output, new slots); the given slots stay as they were, so a
    checkpointed step recomputes with the caches it first saw."""
    slots = list(slots)
    return fn(x, slots, **kw), slots


def _slot_count(module: nn.Module) -> int:
    """An upper bound of the cache entries a step uses (one per cached causal conv)."""
    return sum(isinstance(m, CAUSAL_CONVS) for m in module.modules())


def _takes_first_chunk(block: nn.Module) -> bool:
    """Wan's up blocks take `first_chunk` (Wan 2.2's residual ones crop by it); Qwen's do not."""
    return "first_chunk" in inspect.signature(block.forward).parameters


def _encoder_steps(enc: nn.Module) -> list[tuple]:
    """(step function, cache slots, whether it takes `first_chunk`) for upstream's encoder."""
    return [(functools.partial(_cached_conv, enc.conv_in), 1, False),
            *[(functools.partial(_block, b), _slot_count(b), False) for b in enc.down_blocks],
            (functools.partial(_block, enc.mid_block), _slot_count(enc.mid_block), False),
            (functools.partial(_head, enc), 1, False)]


def _decoder_steps(dec: nn.Module) -> list[tuple]:
    """The same for upstream's decoder."""
    return [(functools.partial(_cached_conv, dec.conv_in), 1, False),
            (functools.partial(_block, dec.mid_block), _slot_count(dec.mid_block), False),
            *[(functools.partial(_block, b), _slot_count(b), _takes_first_chunk(b))
              for b in dec.up_blocks],
            (functools.partial(_head, dec), 1, False)]


def _run_steps(owner: nn.Module, steps, x, cache: list, first_chunk: bool = False):
    """Run a chunk through the steps of `owner` (upstream's encoder or decoder), updating the
    stream's `cache` (a list of slot lists, one per step); checkpointed when diffusers switched
    `owner.gradient_checkpointing` on and gradients are being recorded."""
    checkpoint = owner.gradient_checkpointing and torch.is_grad_enabled()
    for i, (fn, _, takes_first_chunk) in enumerate(steps):
        step = functools.partial(_pure_step, fn, **(
            {"first_chunk": first_chunk} if takes_first_chunk else {}))
        if checkpoint:
            x, cache[i] = owner._gradient_checkpointing_func(step, x, cache[i])
        else:
            x, cache[i] = step(x, cache[i])
    return x


def _new_cache(steps) -> list:
    return [[None] * n for _, n, _ in steps]


class AutoencoderWan(StreamingAutoencoder, ConfigMixin):
    r"""diffusers' `AutoencoderKLWan`, streamed exactly, trainable and saved in its own format.

    Parameters: those of `diffusers.AutoencoderKLWan` (`base_dim`, `decoder_base_dim`, `z_dim`,
    `dim_mult`, `num_res_blocks`, `attn_scales`, `temperal_downsample`, `dropout`,
    `latents_mean`, `latents_std`, `is_residual`, `in_channels`, `out_channels`, `patch_size`,
    `scale_factor_temporal`, `scale_factor_spatial`), with Wan 2.1's defaults, plus:
        in_channels / out_channels: pixel channels (3), also with `patch_size` (upstream's
            config counts the patchified channels: 12 for Wan 2.2's 2x2 patches).
        latent_channels: the toolkit's name of `z_dim` (either may be given; they must agree).
        latents_mean / latents_std: default to Wan 2.1's statistics for 16 channels, to none
            (scaling_factor 1) otherwise.
        scaling_factor, shift_factor: the toolkit's scalar normalization (Wan's convention:
            1 and None).
        temporal_compression_ratio / spatial_compression_ratio (and upstream's
            scale_factor_temporal / scale_factor_spatial): derived from the levels and
            `patch_size`; given values must agree.
        upstream_format: the diffusers class built and saved (`FORMATS`): "AutoencoderKLWan" or
            "AutoencoderKLQwenImage" (Wan 2.1's layout only, one `in_channels`).

    Use `load_model(folder)` (or `AutoencoderWan.from_pretrained`) on a folder saved by
    `AutoencoderKLWan.save_pretrained` or `AutoencoderKLQwenImage.save_pretrained`, or
    `AutoencoderWan.from_upstream(model)` on a loaded one.
    """

    arch = "wan"
    class_aliases = tuple(FORMATS)
    #: the diffusers class whose folder format this family reads and writes by default
    #: (`config.upstream_format` names a model's own: one of `FORMATS`)
    upstream_class = AutoencoderKLWan
    _no_split_modules = ["WanResidualBlock", "WanAttentionBlock", "WanResample",
                         "QwenImageResidualBlock", "QwenImageAttentionBlock", "QwenImageResample"]

    @register_to_config
    def __init__(
        self,
        base_dim: int = 96,
        decoder_base_dim: int | None = None,
        z_dim: int | None = None,
        dim_mult: tuple[int, ...] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_scales: tuple[float, ...] = (),
        temperal_downsample: tuple[bool, ...] = (False, True, True),
        dropout: float = 0.0,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        is_residual: bool = False,
        in_channels: int = 3,
        out_channels: int = 3,
        patch_size: int | None = None,
        scale_factor_temporal: int | None = None,
        scale_factor_spatial: int | None = None,
        latent_channels: int | None = None,
        scaling_factor: float = 1.0,
        shift_factor: float | None = None,
        temporal_compression_ratio: int | None = None,
        spatial_compression_ratio: int | None = None,
        upstream_format: str = "AutoencoderKLWan",
    ):
        super().__init__()
        if upstream_format not in FORMATS:
            raise ValueError(f"upstream_format must be one of {', '.join(FORMATS)}, got "
                             f"{upstream_format!r}")
        if z_dim is not None and latent_channels is not None and z_dim != latent_channels:
            raise ValueError(f"z_dim={z_dim} and latent_channels={latent_channels} disagree (they "
                             "are the same setting)")
        z = z_dim or latent_channels or 16
        if len(temperal_downsample) != len(dim_mult) - 1:
            raise ValueError(f"temperal_downsample needs {len(dim_mult) - 1} entries (one per "
                             f"downsampling level), got {list(temperal_downsample)}")
        if latents_mean is None and latents_std is None and z == 16:
            latents_mean, latents_std = (list(_upstream_default("latents_mean")),
                                         list(_upstream_default("latents_std")))
        self._check_latent_stats(z, latents_mean, latents_std)
        t_ratio = 2 ** sum(bool(d) for d in temperal_downsample)
        s_ratio = 2 ** (len(dim_mult) - 1) * (patch_size or 1)
        for name, given, derived in (("scale_factor_temporal", scale_factor_temporal, t_ratio),
                                     ("scale_factor_spatial", scale_factor_spatial, s_ratio)):
            if given is not None and given != derived:
                raise ValueError(f"{name}={given} disagrees with the levels, which give {derived}")
        arch = dict(base_dim=base_dim, decoder_base_dim=decoder_base_dim, z_dim=z,
                    dim_mult=list(dim_mult), num_res_blocks=num_res_blocks,
                    attn_scales=list(attn_scales), temperal_downsample=list(temperal_downsample),
                    dropout=dropout, latents_mean=latents_mean, latents_std=latents_std,
                    is_residual=is_residual, in_channels=in_channels, out_channels=out_channels,
                    patch_size=patch_size, scale_factor_temporal=t_ratio,
                    scale_factor_spatial=s_ratio)
        self.upstream = FORMATS[upstream_format](**_to_upstream(arch, upstream_format))
        # the config holds upstream Wan's entries (channels in pixels), and the toolkit's names
        self.register_to_config(**arch, latent_channels=z)
        if (patch_size or 1) == 1:  # what CogVideoX, AnimateDiff and SVD compute the ratio from
            self.register_to_config(block_out_channels=[base_dim * m for m in dim_mult])
        self._set_ratios(t_ratio, s_ratio, temporal_compression_ratio, spatial_compression_ratio)
        # explicit (saved only when true): a loaded model's config equals the saved one's
        self.register_to_config(**{ABSORB_KEY: False})
        self._init_streaming()

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_upstream(cls, upstream: nn.Module, **toolkit) -> "AutoencoderWan":
        """Wrap a loaded `AutoencoderKLWan` or `AutoencoderKLQwenImage` (kept as it is, weights
        shared); `toolkit` sets `scaling_factor` / `shift_factor` / `absorb_normalization`."""
        fmt = type(upstream).__name__
        if FORMATS.get(fmt) is not type(upstream):
            raise TypeError(f"expected one of diffusers' {', '.join(FORMATS)}, got {fmt}")
        absorb = toolkit.pop(ABSORB_KEY, None)
        keys = _init_keys(type(upstream))
        arch = _from_upstream({k: upstream.config[k] for k in keys if k in upstream.config}, fmt)
        with torch.device("meta"):  # the upstream module given replaces what this builds
            vae = cls(**arch, **toolkit, upstream_format=fmt)
        vae.upstream = upstream
        vae.register_to_config(**{ABSORB_KEY: bool(absorb)})
        return vae.train(upstream.training)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """A folder saved by `AutoencoderKLWan.save_pretrained` or
        `AutoencoderKLQwenImage.save_pretrained` (or by this class, which writes the same
        formats), loaded by diffusers' own class and wrapped. Toolkit keys among `kwargs`
        (scaling_factor, shift_factor) override the folder's."""
        path = pretrained_model_name_or_path
        check_model_location(path)
        toolkit = {k: kwargs.pop(k) for k in list(kwargs) if k in TOOLKIT_DEFAULTS}
        where = {k: kwargs[k] for k in _LOCATION_KWARGS if k in kwargs}
        saved = AutoencoderKLWan.load_config(path, **where)
        upstream_cls = FORMATS.get(saved.get("_class_name"), AutoencoderKLWan)
        upstream = upstream_cls.from_pretrained(path, *args, **kwargs)
        found = {k: saved[k] for k in TOOLKIT_DEFAULTS if k in saved}
        return cls.from_upstream(upstream, **{**found, **toolkit})

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save in upstream's format (config.json with `_class_name: AutoencoderKLWan`, or
        `AutoencoderKLQwenImage`, and upstream's weight names): the current latent statistics,
        plus the toolkit's normalization entries where they differ from Wan's convention."""
        up = self.upstream
        config = dict(up.config)
        config.update(_to_upstream(dict(self.config), self.config.upstream_format))
        for key, default in TOOLKIT_DEFAULTS.items():
            value = self.config.get(key, default)
            if value != default and not (key == ABSORB_KEY and not value):
                config[key] = value
        kept = up._internal_dict
        up._internal_dict = FrozenDict(config)
        try:
            return up.save_pretrained(save_directory, *args, **kwargs)
        finally:
            up._internal_dict = kept

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """`from_config`: upstream's `z_dim` / `scale_factor_*` are real arguments here (other
        families derive them), and `block_out_channels` is derived."""
        native = {k: config_dict[k] for k in PIPELINE_CONFIG_KEYS
                  if k in UPSTREAM_KEYS and k in config_dict}
        config_dict = {k: v for k, v in config_dict.items() if k != "block_out_channels"}
        init_dict, unused, hidden = super().extract_init_dict(config_dict, **kwargs)
        init_dict.update({k: v for k, v in native.items() if k not in kwargs})
        return init_dict, unused, hidden

    # ------------------------------------------------------------------ the family's passes
    def _encode_tile(self, x, state):
        up = self.upstream
        if self.config.patch_size:
            x = wan.patchify(x, patch_size=self.config.patch_size)
        steps = _encoder_steps(up.encoder)
        cache = None if state is None else state.get(up.encoder)
        parts = []
        if cache is None:  # a new stream: its first frame runs alone, as upstream's does
            cache = _new_cache(steps)
            parts.append(_run_steps(up.encoder, steps, x[:, :, :1], cache))
            x = x[:, :, 1:]
        if x.shape[2]:
            parts.append(_run_steps(up.encoder, steps, x, cache))
        if state is not None:
            state.set(up.encoder, cache)
        return up.quant_conv(torch.cat(parts, dim=2))

    def _decode_tile(self, z, state):
        up = self.upstream
        x = up.post_quant_conv(z)
        steps = _decoder_steps(up.decoder)
        cache = None if state is None else state.get(up.decoder)
        parts = []
        if cache is None:  # a new stream: its first latent frame runs alone, as upstream's does
            cache = _new_cache(steps)
            parts.append(_run_steps(up.decoder, steps, x[:, :, :1], cache, first_chunk=True))
            x = x[:, :, 1:]
        if x.shape[2]:
            parts.append(_run_steps(up.decoder, steps, x, cache))
        if state is not None:
            state.set(up.decoder, cache)
        out = torch.cat(parts, dim=2)
        if self.config.patch_size:
            out = wan.unpatchify(out, patch_size=self.config.patch_size)
        return out

    # ------------------------------------------------------------------ training hooks
    def encoder_modules(self) -> list[nn.Module]:
        return [self.upstream.encoder, self.upstream.quant_conv]

    def decoder_modules(self) -> list[nn.Module]:
        return [self.upstream.post_quant_conv, self.upstream.decoder]

    def last_decoder_layer(self) -> torch.Tensor:
        return self.upstream.decoder.conv_out.weight

"""What diffusers' video pipelines read from a VAE beyond encode/decode, derived from the model's
own ratios and latent normalization (a mixin of every family, see `base.py`).

Pipelines read Wan's `scale_factor_temporal` / `scale_factor_spatial` / `z_dim` and its
`temperal_downsample` list, LTX's `latents_mean` / `latents_std` tensors and
`timestep_conditioning`, CogVideoX's `invert_scale_latents`, and compute the spatial ratio from
`block_out_channels`. A family needs none of these itself.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import FrozenDict

from ..config import PIPELINE_CONFIG_KEYS
from ..latents import ABSORB_KEY, offset_and_gain

# What the pipelines built on Wan's VAE read as `vae.config.<name>` (Wan 2.1/2.2, Wan VACE and
# image-to-video, Qwen-Image, Cosmos 2, SANA-Video, ...); they also decode with the config's
# per-channel `latents_mean` / `latents_std` and ignore `scaling_factor`.
WAN_CONFIG_KEYS = ("scale_factor_temporal", "scale_factor_spatial", "z_dim")


def in_wan_convention(config) -> bool:
    """Whether Wan-style pipelines decode this config right: per-channel statistics, no other
    scale or shift, nothing absorbed (what `for_pipeline(vae, "wan")` makes)."""
    return (config.get("latents_mean") is not None and config.get("latents_std") is not None
            and config.get("scaling_factor") in (None, 1.0) and not config.get("shift_factor")
            and not config.get(ABSORB_KEY))


class ModelConfig(FrozenDict):
    """A family's config (diffusers' FrozenDict), whose Wan-pipeline names answer as attributes
    only in Wan's convention: elsewhere reading them (as a Wan pipeline does when it is built)
    fails at once with one line saying to use `for_pipeline`, instead of deep inside the
    pipeline's decode ("Could not infer dtype of NoneType"). As dict keys they are always there
    (saved, and recomputed on load)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not in_wan_convention(self):
            for key in WAN_CONFIG_KEYS:
                if key in self.__dict__:
                    object.__delattr__(self, key)

    def __getattr__(self, name):
        if name in WAN_CONFIG_KEYS and name in self:
            raise AttributeError(
                f"config.{name} is what Wan-style pipelines read, and they decode with per-channel"
                " latents_mean/latents_std, which this config does not hold in their convention: "
                "pass videovae.integrations.diffusers.for_pipeline(vae, 'wan') as the vae")
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")


class PipelineNamesMixin:
    """Config entries and attributes diffusers video pipelines read (`PIPELINE_CONFIG_KEYS`).
    The host class sets `temporal_compression_ratio` / `spatial_compression_ratio` and calls
    `_register_pipeline_names()` in `__init__`."""

    def register_to_config(self, **kwargs):
        """diffusers' registration, keeping the config a `ModelConfig`."""
        super().register_to_config(**kwargs)
        self._internal_dict = ModelConfig(self._internal_dict)

    def _register_pipeline_names(self) -> None:
        """Derive the config names diffusers video pipelines read (`PIPELINE_CONFIG_KEYS`) from
        the ratios and latent channels, at every init (the attributes are properties below);
        check `block_out_channels`, from which CogVideoX, AnimateDiff and SVD compute the
        spatial ratio."""
        t, s = self.temporal_compression_ratio, self.spatial_compression_ratio
        boc = self.config.get("block_out_channels")
        if boc is not None and 2 ** (len(boc) - 1) != s:
            raise ValueError(f"pipelines read the spatial ratio as 2**(len(block_out_channels)-1)"
                             f" = {2 ** (len(boc) - 1)}, but the layers give {s}")
        self.register_to_config(scale_factor_temporal=t, scale_factor_spatial=s,
                                z_dim=self.config.latent_channels, timestep_conditioning=False,
                                invert_scale_latents=False)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' loading, minus the derived pipeline names (recomputed by `__init__`; a
        stale value in config.json must not be registered over them), and with
        `absorb_normalization` (no family's `__init__` takes it) registered after `__init__`."""
        config_dict = {k: v for k, v in config_dict.items() if k not in PIPELINE_CONFIG_KEYS}
        absorb = config_dict.pop(ABSORB_KEY, None)
        init_dict, unused, hidden = super().extract_init_dict(config_dict, **kwargs)
        if absorb is not None:
            hidden[ABSORB_KEY] = absorb
        return init_dict, unused, hidden

    @property
    def temperal_downsample(self) -> list[bool]:
        """Wan's name (and spelling): 2**sum gives the temporal ratio, 2**len the spatial one."""
        t, s = self.temporal_compression_ratio, self.spatial_compression_ratio
        lt, ls = t.bit_length() - 1, s.bit_length() - 1
        if 2 ** lt != t or 2 ** ls != s or lt > ls:
            raise ValueError(f"ratios {t}x{s} cannot be written as Wan's temperal_downsample")
        return [False] * (ls - lt) + [True] * lt

    def _ltx_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        zc = self.config.latent_channels
        probe = torch.zeros(1, zc, 1)
        offset, gain = offset_and_gain(self.config, probe)
        scale = self.config.get("scaling_factor") or 1.0
        return ((probe + offset).flatten(), (scale / (probe + gain)).flatten())

    @property
    def latents_mean(self) -> torch.Tensor:
        """(Z,) tensor; with `latents_std`, LTX decodes `z * latents_std / scaling_factor +
        latents_mean`, which equals `videovae.latents.denormalize_latents` for every config."""
        return self._ltx_stats()[0]

    @property
    def latents_std(self) -> torch.Tensor:
        """(Z,) tensor; see `latents_mean`."""
        return self._ltx_stats()[1]

"""The `ktc` inflation rule: an image VAE with Z latent channels copied into both halves of an
`AutoencoderKTC` with 2Z latent channels (keyframe half first).

- KTC convs (keyframe half: per-frame 2D conv; temporal half: group causal conv): the keyframe
  half gets the image kernel on the keyframe input half, the temporal half gets it in the centre
  tap (the current frame inside a two-sided group) on the temporal input half; every other tap
  and the cross-half input slices are zero. The conv that reads pixels gives both halves the
  image kernel on all three input channels.
- Per-half convs (the spatial resamplers), norms and attentions: the image weights, once per
  half.
- Temporal downsampling: the keyframe half keeps each group's first frame (no weights); the
  temporal half's stride-2 conv starts as picking the later frame of each pair, so it carries
  each group's last frame. Temporal upsampling: the keyframe half repeats frames (no weights);
  the temporal half's depth-to-time conv starts as two copies of its input.

So at initialization the keyframe half of latent frame g is the image VAE's latent (mean and
logvar) of group g's first frame, the temporal half that of its last frame, and a one-frame
video and every frame of a still clip reconstruct exactly as the image VAE does. Inflation
needs `norm_type="group"` (the image VAE's GroupNorm, per half). The config half (widths,
latent channels, scaling) lives in `inflate.py`.
"""

from __future__ import annotations

import torch

from ..errors import ImageVAEError
from ..models.layers import FrameGroupNorm
from ..models.layers_ktc import KTCAttention, KTCConv, KTCDownsample, KTCUpsample, PerHalfConv


def _ktc_conv(name: str, conv: KTCConv, src) -> dict:
    """Keyframe half: the image kernel on its own input half; temporal half: in the centre tap
    on its own input half (both on every input when the conv reads pixels)."""
    w = src(f"{name}.weight")
    key = torch.zeros_like(conv.key.weight)
    tmp = torch.zeros_like(conv.temporal.weight)
    centre, cin = tmp.shape[2] // 2, w.shape[1]
    if not conv.split_input:  # reads pixels: both halves see all of them
        key[:, :, 0], tmp[:, :, centre] = w, w
    elif key.shape[1] == 2 * cin:
        key[:, :cin, 0], tmp[:, cin:, centre] = w, w
    else:
        raise ImageVAEError(f"{name}: a {tuple(w.shape)} image kernel does not fit a KTC conv "
                            f"reading {key.shape[1]} channels")
    b = src(f"{name}.bias")
    return {f"{name}.key.weight": key, f"{name}.temporal.weight": tmp,
            f"{name}.key.bias": b, f"{name}.temporal.bias": b}


def _per_half(name: str, module, src) -> dict:
    """Per-half convs and norms: the image tensor once per half, stacked on dim 0."""
    out = {}
    for k, v in module.state_dict().items():
        s = src(f"{name}.{k}")
        if s.ndim == 4 and v.ndim == 5:  # 2D kernel -> (C, C, 1, k, k)
            s = s.unsqueeze(2)
        out[f"{name}.{k}"] = torch.cat([s, s])
    return out


def _attention(name: str, attn: KTCAttention, src) -> dict:
    return {f"{name}.{half}.{k}": src(f"{name}.{k}") for half in ("key", "temporal")
            for k in attn.key.state_dict()}


def _time_down(name: str, down: KTCDownsample, src) -> dict:
    if down.time_conv is None:
        return {}
    w = torch.zeros_like(down.time_conv.weight)  # (C, C, 2, 1, 1)
    # the later frame of each pair
    w[:, :, 1, 0, 0] = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
    return {f"{name}.time_conv.weight": w,
            f"{name}.time_conv.bias": torch.zeros_like(down.time_conv.bias)}


def _time_up(name: str, up: KTCUpsample, src) -> dict:
    if up.time_conv is None:
        return {}
    c = up.time_conv.in_channels
    like = up.time_conv.weight
    eye = torch.eye(c, dtype=like.dtype, device=like.device)
    return {f"{name}.time_conv.weight": torch.cat([eye, eye]).view(2 * c, c, 1, 1, 1),
            f"{name}.time_conv.bias": torch.zeros_like(up.time_conv.bias)}


# module type -> rule(name, module, src) giving that module's state entries
RULES = ((KTCConv, _ktc_conv), (PerHalfConv, _per_half), (FrameGroupNorm, _per_half),
         (KTCAttention, _attention), (KTCDownsample, _time_down), (KTCUpsample, _time_up))


def inflate_ktc_weights(video_vae, image_state: dict) -> None:
    """Load `video_vae` (an `AutoencoderKTC`) with the rule of the module docstring."""
    def src(key):
        if key not in image_state:
            raise ImageVAEError(f"the image VAE lacks {key}, which the ktc model needs")
        return image_state[key]

    new = {}
    for name, module in video_vae.named_modules():
        for cls, rule in RULES:
            if isinstance(module, cls):
                new.update(rule(name, module, src))
    own = video_vae.state_dict()
    missing = [k for k in own if k not in new]
    if missing:
        raise ImageVAEError(f"no inflation rule gives {len(missing)} ktc weights "
                            f"({', '.join(missing[:3])}...); inflation needs norm_type='group'")
    bad = [k for k, v in new.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        shapes = [f"{k} {tuple(new[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:3]]
        raise ImageVAEError(f"image VAE weights do not fit the ktc model: {'; '.join(shapes)}")
    video_vae.load_state_dict({k: v.to(own[k].dtype) for k, v in new.items()})

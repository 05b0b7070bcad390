"""videovae models in diffusers video pipelines: the latent convention each pipeline applies,
`for_pipeline` (the model configured in it), and the frame counts a pipeline can return.

Every pipeline turns the latents its transformer denoises, `z_pipe`, into `decode`'s input its
own way (diffusers 0.42):

    Wan*                 z_pipe * latents_std + latents_mean   (config lists; no scaling_factor)
    LTX*                 z_pipe * latents_std / scaling_factor + latents_mean   (attribute tensors;
                         image-to-video normalizes the image latents without scaling_factor)
    HunyuanVideo*        z_pipe / scaling_factor
    CogVideoX*           z_pipe / scaling_factor (image-to-video: image latents * scaling_factor)
    AnimateDiff, SVD     z_pipe / scaling_factor, one 4D latent frame at a time: they need the
                         pipelines of `videovae.integrations.pipelines`, which decode a video

The toolkit's latents are `z_norm = videovae.latents.normalize_latents(z, config)`. The rule:
`for_pipeline(vae, pipeline)` returns a model for which that pipeline's `z_pipe` is `z_norm`, so
a transformer trained on videovae latent files is fed and decoded correctly:

    "mean_std" (Wan, LTX): latents_mean = offset, latents_std = 1 / gain (per channel, from
        `videovae.latents.offset_and_gain`), scaling_factor = 1, shift_factor = None. Lossless:
        `normalize_latents` gives the same z_norm before and after.
    "scale" (HunyuanVideo, CogVideoX): unchanged when there is no shift and no per-channel
        statistics (`z_norm = z * scaling_factor`); otherwise the model absorbs the rest of the
        affine (config `absorb_normalization: true`, the constants kept as they are): `encode`
        returns `z_norm / scaling_factor` and `decode` inverts it.
    "toolkit" (videovae's own pipeline classes): unchanged; they call `normalize_latents` /
        `denormalize_latents` themselves.

All of it is config, so it survives `save_pretrained` / `from_pretrained`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import warnings

import torch

from ..frames import num_decoded_frames, num_latent_frames
from ..latents import ABSORB_KEY, stored_offset_and_gain

# diffusers pipeline subpackage -> convention (every pipeline of a subpackage shares its VAE's)
CONVENTIONS = {"wan": "mean_std", "ltx": "mean_std", "hunyuan_video": "scale",
               "cogvideo": "scale", "animatediff": "per_frame",
               "stable_video_diffusion": "per_frame"}
_OURS = "toolkit"


def pipeline_convention(pipeline) -> str:
    """"mean_std", "scale" or "toolkit" for a pipeline class, instance, class name (e.g.
    "WanPipeline") or diffusers subpackage name (e.g. "wan")."""
    if isinstance(pipeline, str) and pipeline in CONVENTIONS:
        kind = CONVENTIONS[pipeline]
    else:
        cls = _pipeline_class(pipeline)
        if cls.__module__.startswith("diffusers.utils.dummy_"):
            raise ImportError(f"diffusers' {cls.__name__} needs transformers: pip install "
                              "transformers (or name the pipeline's diffusers subpackage, e.g. "
                              "\"wan\")")
        kind = None
        for klass in cls.__mro__:  # our subclasses first, then the diffusers class they extend
            module = klass.__module__
            if module.startswith("videovae."):
                kind = _OURS
                break
            parts = module.split(".")
            if module.startswith("diffusers.pipelines.") and parts[2] in CONVENTIONS:
                kind = CONVENTIONS[parts[2]]
                break
        if kind is None:
            raise ValueError(f"no known latent convention for {cls.__name__}; known: the "
                             f"pipelines of diffusers.pipelines.{{{', '.join(CONVENTIONS)}}} and "
                             "videovae.integrations.pipelines")
    if kind == "per_frame":
        name = pipeline if isinstance(pipeline, str) else _pipeline_class(pipeline).__name__
        raise ValueError(f"{name} decodes one 4D latent frame at a time, which cannot give a "
                         "video: use VideoVAEAnimateDiffPipeline / VideoVAEStableVideoDiffusion"
                         "Pipeline from videovae.integrations.pipelines")
    return kind


def _pipeline_class(pipeline) -> type:
    if isinstance(pipeline, type):
        return pipeline
    if isinstance(pipeline, str):
        import diffusers

        cls = getattr(diffusers, pipeline, None)
        if not isinstance(cls, type):
            raise ValueError(f"{pipeline!r} is not a diffusers pipeline class or one of "
                             f"{sorted(CONVENTIONS)}")
        return cls
    return type(pipeline)


def for_pipeline(vae, pipeline, inplace: bool = False):
    """`vae` configured in `pipeline`'s latent convention (see the module docstring), with the
    same normalized latents the toolkit uses. A copy unless `inplace`."""
    kind = pipeline_convention(pipeline)
    out = vae if inplace else copy.deepcopy(vae)
    config = dict(vae.config)
    if kind == "mean_std":  # start from the stored constants, absorbed or not
        probe = torch.zeros(1, config["latent_channels"], 1, dtype=torch.float64)
        offset, gain = stored_offset_and_gain(config, probe)
        out.register_to_config(latents_mean=(probe + offset).flatten().tolist(),
                               latents_std=(1.0 / (probe + gain)).flatten().tolist(),
                               scaling_factor=1.0, shift_factor=None, **{ABSORB_KEY: False})
    elif kind == "scale":
        per_channel = None not in (config.get("latents_mean"), config.get("latents_std"))
        out.register_to_config(**{ABSORB_KEY: per_channel or bool(config.get("shift_factor"))})
    return out


# ---------------------------------------------------------------------------------- frame counts
def valid_num_frames(vae, num_frames: int) -> tuple[int, ...]:
    """The frame counts nearest `num_frames` that a diffusers pipeline returns in full with this
    model (1 + r*k): `(num_frames,)` when it is one, else the one below and the one above.
    (The model itself round-trips any count: `encode` pads, `decode(num_frames=)` trims.)"""
    r = vae.temporal_compression_ratio
    up = num_decoded_frames(num_latent_frames(num_frames, r), r)
    return (num_frames,) if up == num_frames else (up - r, up)


def check_num_frames(vae, num_frames: int, strict: bool = False) -> None:
    """Warn (or raise, when `strict`) if a pipeline would silently return fewer frames than
    `num_frames`: they compute (T - 1) // r + 1 latent frames, which decode to 1 + r*k."""
    fits = valid_num_frames(vae, num_frames)
    if fits == (num_frames,):
        return
    msg = (f"num_frames={num_frames} is not 1 + {vae.temporal_compression_ratio}k: the pipeline "
           f"will return {fits[0]} frames; ask for {' or '.join(map(str, fits))} (or use a "
           "videovae.integrations.pipelines class, which trims to any count)")
    if strict:
        raise ValueError(msg)
    warnings.warn(msg, stacklevel=2)


def guard_frame_counts(pipe, strict: bool = False):
    """Make `pipe(num_frames=T)` warn, or raise when `strict`, where the pipeline would drop
    frames, and a video-to-video input of T frames raise (the pipeline sizes its noise for
    (T - 1) // r + 1 latent frames, the model pads T to 1 + r*k: the shapes would not match).
    Wraps this instance's `prepare_latents`, where every pipeline turns T into latent frames;
    returns `pipe`. videovae's own pipelines take any T and are returned as they are."""
    if pipeline_convention(pipe) == _OURS:
        return pipe
    original = pipe.prepare_latents
    signature = inspect.signature(original)

    @functools.wraps(original)
    def prepare_latents(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs).arguments
        video = bound.get("video")
        if bound.get("latents") is not None:
            pass
        elif bound.get("num_frames") is not None:
            check_num_frames(pipe.vae, int(bound["num_frames"]), strict)
        elif getattr(video, "ndim", 0) == 5:  # (B, C, T, H, W)
            fits = valid_num_frames(pipe.vae, video.shape[2])
            if fits != (video.shape[2],):
                raise ValueError(f"the video has {video.shape[2]} frames, not 1 + "
                                 f"{pipe.vae.temporal_compression_ratio}k: the pipeline sizes "
                                 f"its latents for {fits[0]} frames, the model encodes "
                                 f"{fits[1]}; pass {fits[0]} or {fits[1]} frames")
        return original(*args, **kwargs)

    pipe.prepare_latents = prepare_latents
    return pipe

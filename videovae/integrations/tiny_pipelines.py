"""Every supported diffusers video pipeline, built around a videovae model from tiny randomly
initialised components (nothing downloads): for tests and `tools/pipeline_demo.py`.

`build_pipeline(name, vae)` returns `(pipeline, call_kwargs)`: the model goes in through
`for_pipeline`, text encoders are left out (prompt embeddings are passed directly), and the
kwargs ask for `num_frames` frames of `size` x `size` in `steps` steps without guidance; add a
`generator`. Outputs are noise: the transformers are untrained.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .diffusers import for_pipeline

# short name -> pipeline class (diffusers', or videovae's for AnimateDiff and SVD)
CLASSES = {"hunyuan_video": "HunyuanVideoPipeline", "cogvideox": "CogVideoXPipeline",
           "cogvideox_i2v": "CogVideoXImageToVideoPipeline", "wan": "WanPipeline",
           "wan_v2v": "WanVideoToVideoPipeline", "ltx": "LTXPipeline",
           "ltx_i2v": "LTXImageToVideoPipeline", "animatediff": "VideoVAEAnimateDiffPipeline",
           "svd": "VideoVAEStableVideoDiffusionPipeline"}
PIPELINES = tuple(CLASSES)
TEXT_DIM, TEXT_LEN = 32, 16


def _embeds(seed: int, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _image(seed: int, size: int) -> torch.Tensor:
    """(1, 3, size, size) in [0, 1], as diffusers' image processors take tensors."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _video(seed: int, frames: int, size: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            for _ in range(frames)]


def build_pipeline(name: str, vae, *, num_frames: int = 9, size: int = 64, steps: int = 2,
                   seed: int = 0, prepare: bool = True):
    """(pipeline, call kwargs) for one of `PIPELINES`, with `for_pipeline(vae, ...)` inside
    (`prepare=False` passes the model as it is, to show what goes wrong without it)."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; one of {', '.join(PIPELINES)}")
    z = vae.config.latent_channels
    torch.manual_seed(seed)
    kwargs = dict(num_frames=num_frames, height=size, width=size, num_inference_steps=steps,
                  output_type="pt")
    text = dict(prompt_embeds=_embeds(seed + 1, 1, TEXT_LEN, TEXT_DIM))
    mask = dict(prompt_attention_mask=torch.ones(1, TEXT_LEN, dtype=torch.long))
    cls = pipeline_class(name)
    components = _components(name, z, size, num_frames)
    for module in components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()  # as from_pretrained leaves them
    pipe = cls(vae=for_pipeline(vae, cls) if prepare else vae, **components)
    if name == "hunyuan_video":
        kwargs.update(prompt_embeds=_embeds(seed + 1, 1, TEXT_LEN, 16), **mask,
                      pooled_prompt_embeds=_embeds(seed + 2, 1, 8), guidance_scale=1.0)
    elif name == "svd":
        kwargs.update(min_guidance_scale=1.0, max_guidance_scale=1.0)
    else:
        kwargs.update(text, guidance_scale=1.0, **(mask if name.startswith("ltx") else {}))
    if name in ("cogvideox_i2v", "ltx_i2v", "svd"):
        kwargs["image"] = _image(seed + 3, size)
    if name == "wan_v2v":
        del kwargs["num_frames"]  # the video's length
        kwargs["video"] = _video(seed + 3, num_frames, size)
    return pipe, kwargs


def pipeline_class(name: str) -> type:
    """The pipeline class of one of `PIPELINES`."""
    if CLASSES[name].startswith("VideoVAE"):
        from . import pipelines as module
    else:
        import diffusers as module
    return getattr(module, CLASSES[name])


# ------------------------------------------------------------------------------ the components
def _components(name, z, size, frames) -> dict:
    """Every component but the VAE."""
    if name == "hunyuan_video":
        return _hunyuan_video(z)
    if name.startswith("cogvideox"):
        return _cogvideox(z, size, frames, image=name == "cogvideox_i2v")
    if name.startswith("wan"):
        return _wan(z)
    if name.startswith("ltx"):
        return _ltx(z)
    if name == "animatediff":
        return _animatediff(z, size)
    return _svd(z, size, frames)


def _hunyuan_video(z):
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoTransformer3DModel

    transformer = HunyuanVideoTransformer3DModel(
        in_channels=z, out_channels=z, num_attention_heads=2, attention_head_dim=10,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4))
    return dict(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0))


def _cogvideox(z, size, frames, image: bool):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    # image-to-video: the image latents are concatenated on channels; learned positions
    extra = (dict(use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True)
             if image else {})
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=2 * z if image else z,
        out_channels=z, time_embed_dim=2, text_embed_dim=TEXT_DIM, num_layers=1,
        sample_width=size // 8, sample_height=size // 8, sample_frames=frames, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=TEXT_LEN, **extra)
    return dict(tokenizer=None, text_encoder=None, transformer=transformer,
                scheduler=CogVideoXDDIMScheduler())


def _wan(z):
    from diffusers import UniPCMultistepScheduler, WanTransformer3DModel

    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=z,
        out_channels=z, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    return dict(tokenizer=None, text_encoder=None, transformer=transformer,
                scheduler=UniPCMultistepScheduler(flow_shift=3.0))


def _ltx(z):
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    transformer = LTXVideoTransformer3DModel(
        in_channels=z, out_channels=z, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=TEXT_DIM)
    return dict(tokenizer=None, text_encoder=None, transformer=transformer,
                scheduler=FlowMatchEulerDiscreteScheduler())


def _animatediff(z, size):
    from diffusers import DDIMScheduler, MotionAdapter, UNet2DConditionModel

    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=size // 8, in_channels=z,
        out_channels=z, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_DIM,
        norm_num_groups=2)
    adapter = MotionAdapter(block_out_channels=(8, 16), motion_layers_per_block=1,
                            motion_norm_num_groups=2, motion_num_attention_heads=2)
    return dict(text_encoder=None, tokenizer=None, unet=unet, motion_adapter=adapter,
                scheduler=DDIMScheduler(beta_schedule="linear", clip_sample=False))


def _svd(z, size, frames):
    from diffusers import EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=size // 8,
        in_channels=2 * z, out_channels=z,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32, num_attention_heads=2, projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32, num_frames=1 + (frames - 1) // 4)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=1, num_attention_heads=4,
        image_size=size, intermediate_size=37, patch_size=size // 4))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", timestep_type="continuous", use_karras_sigmas=True,
        sigma_max=700.0, sigma_min=0.002, steps_offset=1, timestep_spacing="leading")
    return dict(image_encoder=encoder, unet=unet, scheduler=scheduler,
                feature_extractor=CLIPImageProcessor(crop_size=size, size=size))

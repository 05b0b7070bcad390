"""AnimateDiff and Stable Video Diffusion with a videovae model: their latents decode as a video.

The diffusers pipelines decode one 4D latent frame at a time (an image VAE's job). These
subclasses keep everything else and change three things:

- `num_frames` is the number of output frames, any count: the pipeline denoises
  `num_latent_frames(num_frames)` latent frames (1 + ceil((T - 1) / r)) and `decode` trims the
  1 + r*(F - 1) decoded frames back to T;
- the latents are normalized the toolkit's way (`videovae.latents.normalize_latents`, for any
  config) and decoded as one video;
- SVD's conditioning image is encoded as a one-frame video and normalized the same way (SVD's
  own VAE passes raw image latents; a UNet trained on videovae latents sees normalized ones).
  `decode_chunk_size` is ignored: the model decodes in its own chunks (`vae.set_chunk_sizes`).

Load a saved one with its class: `VideoVAEAnimateDiffPipeline.from_pretrained(path)`.
"""

from __future__ import annotations

import torch
from diffusers import AnimateDiffPipeline, StableVideoDiffusionPipeline

from .. import models  # noqa: F401 - a saved pipeline names its VAE's module, videovae.models.

# autoencoder_<arch>; diffusers loads a component only from a module already imported
from ..frames import num_decoded_frames, num_latent_frames
from ..latents import denormalize_latents, normalize_latents


class _DecodesVideo:
    """What both pipelines share: output frame counts and decoding latents as a video."""

    _output_frames: int | None = None  # set for the duration of a call

    def _run(self, call, num_frames: int, **kwargs):
        r = self.vae.temporal_compression_ratio
        self._output_frames = num_frames
        try:
            return call(num_frames=num_latent_frames(num_frames, r), **kwargs)
        finally:
            self._output_frames = None

    def _decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents (B, Z, F, h, w) -> video (B, 3, T, H, W) in float32."""
        z = denormalize_latents(latents.to(self.vae.dtype), self.vae.config)
        return self.vae.decode(z, num_frames=self._output_frames).sample.float()


class VideoVAEAnimateDiffPipeline(_DecodesVideo, AnimateDiffPipeline):
    """`AnimateDiffPipeline` for a videovae model: `num_frames` output frames (any count)."""

    @torch.no_grad()
    def __call__(self, prompt=None, num_frames: int = 17, **kwargs):
        return self._run(super().__call__, num_frames, prompt=prompt, **kwargs)

    def decode_latents(self, latents, decode_chunk_size: int = 16):
        return self._decode_video(latents)


class VideoVAEStableVideoDiffusionPipeline(_DecodesVideo, StableVideoDiffusionPipeline):
    """`StableVideoDiffusionPipeline` for a videovae model: `num_frames` output frames (default:
    what `unet.config.num_frames` latent frames decode to)."""

    @torch.no_grad()
    def __call__(self, image, height: int = 576, width: int = 1024,
                 num_frames: int | None = None, **kwargs):
        if num_frames is None:
            num_frames = num_decoded_frames(self.unet.config.num_frames,
                                            self.vae.temporal_compression_ratio)
        return self._run(super().__call__, num_frames, image=image, height=height, width=width,
                         **kwargs)

    def _encode_vae_image(self, image, device, num_videos_per_prompt,
                          do_classifier_free_guidance):
        image = image.to(device=device, dtype=self.vae.dtype)
        z = self.vae.encode(image.unsqueeze(2)).latent_dist.mode()
        image_latents = normalize_latents(z, self.vae.config)[:, :, 0]
        image_latents = image_latents.repeat(num_videos_per_prompt, 1, 1, 1)
        if do_classifier_free_guidance:  # as SVD: zeros for the unconditional half
            image_latents = torch.cat([torch.zeros_like(image_latents), image_latents])
        return image_latents

    def decode_latents(self, latents, num_frames, decode_chunk_size: int = 14):
        return self._decode_video(latents.transpose(1, 2))  # SVD keeps (B, F, Z, h, w)

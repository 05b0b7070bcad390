"""Image-latent compatibility, measured: decode each latent frame of a video's latents with the
source image VAE (diffusers' image API, `AutoencoderKL.decode`) and compare it with the input
frame that latent frame stands for (CV-VAE's claim that its latents are the image VAE's, made
checkable).

Which frame a latent frame stands for is the family's (`vae.image_reg_mapping`; default
"slice": frames 0, r, 2r, ..., what inflation's temporal downsampling keeps; "key": each group's
first frame, 0, 1, 1 + r, ...), and which part of the latent the image VAE reads too
(`vae.image_latents`). Right after inflation the PSNR equals the image VAE's own
reconstruction PSNR of those frames; training a video VAE without latent regularization lets it
drift.
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..latents import network_latents
from ..metrics import psnr_per_frame


def paired_frame(k: int, ratio: int, mapping: str = "slice") -> int:
    """Index of the input frame latent frame `k` stands for."""
    if mapping == "key":
        return 0 if k == 0 else ratio * (k - 1) + 1
    return ratio * k


@torch.no_grad()
def image_vae_psnr(vae, image_vae, chunks: Iterable[torch.Tensor],
                   size: tuple[int, int] | None = None) -> dict:
    """Stream one video, given as pixel chunks (B, 3, t, H, W) in [-1, 1], through `vae`'s
    encoder and decode every latent frame with `image_vae`; PSNR against the paired input frames
    (cropped to `size` = (h, w) if given). Returns {"image_vae_psnr": mean dB,
    "per_latent_frame": [dB, ...] (mean over the batch), "paired_frames": [...], "mapping"}."""
    r = vae.temporal_compression_ratio
    mapping = getattr(vae, "image_reg_mapping", None) or "slice"
    image_part = getattr(vae, "image_latents", lambda z: z)
    needed = {paired_frame(k, r, mapping) % r for k in range(1, r + 1)}
    frames: dict[int, torch.Tensor] = {}  # input frames some latent frame stands for
    count, last = 0, None

    def recording(source):
        nonlocal count, last
        for x in source:
            for i in range(x.shape[2]):
                if count + i == 0 or (count + i) % r in needed:
                    frames[count + i] = x[:, :, i:i + 1]
            count, last = count + x.shape[2], x[:, :, -1:]
            yield x

    psnrs, paired = [], []
    param = next(image_vae.parameters())
    for z in vae.stream_encode(recording(chunks)):
        z = image_part(network_latents(z, vae.config))
        for i in range(z.shape[2]):
            t = paired_frame(len(paired), r, mapping)
            if t >= count:  # in the padding, which repeats the last frame
                t = count - 1
            target = frames.pop(t, last)
            img = image_vae.decode(z[:, :, i].to(param.device, param.dtype)).sample
            a, b = target, img[:, :, None].to(target.device, target.dtype).clamp(-1, 1)
            if size is not None:
                a, b = a[..., :size[0], :size[1]], b[..., :size[0], :size[1]]
            psnrs.append(psnr_per_frame(a, b).mean().item())
            paired.append(t)
    return {"image_vae_psnr": sum(psnrs) / len(psnrs), "per_latent_frame": psnrs,
            "paired_frames": paired, "mapping": mapping}

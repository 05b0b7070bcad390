"""Generate a video with a diffusers video pipeline that uses a videovae model as its VAE.

Without `--pipeline-dir` the pipeline is built from tiny randomly initialised components (no
download, seconds on a CPU; the video is noise, since nothing is trained); with it, a local
pipeline folder is loaded and its VAE replaced. Either way the model goes in through
`videovae.integrations.diffusers.for_pipeline`, which puts it in that pipeline's latent
convention. The pipeline's transformer must have been trained on this model's latents for the
video to mean anything.

    python tools/pipeline_demo.py --pipeline wan -o wan.mp4
    python tools/pipeline_demo.py --pipeline svd --model my_video_vae --frames 11 -o svd.mp4
    python tools/pipeline_demo.py --pipeline-dir path/to/wan-pipeline --model my_video_vae \\
        --prompt "a red fox in the snow" --frames 33 --size 480x832 --steps 30 -o fox.mp4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def load_folder_pipeline(folder: Path, vae):
    """A local diffusers pipeline folder with its VAE replaced by `vae` (in its convention)."""
    import diffusers

    from videovae.integrations import pipelines as ours
    from videovae.integrations.diffusers import for_pipeline

    name = json.loads((folder / "model_index.json").read_text())["_class_name"]
    # AnimateDiff / SVD folders load as videovae's subclasses, which decode a video
    name = {"AnimateDiffPipeline": "VideoVAEAnimateDiffPipeline",
            "StableVideoDiffusionPipeline": "VideoVAEStableVideoDiffusionPipeline"}.get(name, name)
    cls = getattr(ours, name, None) or getattr(diffusers, name)
    return cls.from_pretrained(folder, vae=for_pipeline(vae, cls))


def main(args) -> None:
    from videovae import load_model
    from videovae.integrations.diffusers import check_num_frames
    from videovae.integrations.tiny_pipelines import build_pipeline
    from videovae.io.video import write_video
    from videovae.models.registry import family_class

    h, w = (int(v) for v in args.size.lower().split("x")) if "x" in args.size else (
        int(args.size),) * 2
    if args.model:
        vae = load_model(args.model)
    else:
        torch.manual_seed(args.seed)
        vae = family_class(args.arch)(block_out_channels=(32, 64, 64, 64), layers_per_block=1,
                                      norm_num_groups=8, latent_channels=args.latent_channels)
    vae.eval()
    if args.pipeline_dir:
        pipe = load_folder_pipeline(Path(args.pipeline_dir), vae)
        kwargs = dict(prompt=args.prompt, num_frames=args.frames, height=h, width=w,
                      num_inference_steps=args.steps)
        if args.image:
            from PIL import Image

            kwargs["image"] = Image.open(args.image).convert("RGB")
    else:
        if h != w:
            raise SystemExit("the tiny pipelines are square: pass --size N")
        pipe, kwargs = build_pipeline(args.pipeline, vae, num_frames=args.frames, size=h,
                                      steps=args.steps, seed=args.seed)
    if "VideoVAE" not in type(pipe).__name__:  # videovae's own pipelines return any count
        check_num_frames(pipe.vae, args.frames)
    pipe.to(args.device)
    kwargs["output_type"] = "np"
    with torch.no_grad():
        frames = pipe(**kwargs, generator=torch.Generator().manual_seed(args.seed)).frames[0]
    video = (np.asarray(frames).clip(0, 1) * 255).round().astype(np.uint8)
    write_video(args.output, video, fps=args.fps)
    print(f"{type(pipe).__name__} with {type(pipe.vae).__name__} "
          f"({pipe.vae.config.latent_channels} channels): wrote {args.output}, "
          f"{video.shape[0]} frames of {video.shape[1]}x{video.shape[2]}")


if __name__ == "__main__":
    from videovae.integrations.tiny_pipelines import PIPELINES
    from videovae.models import DEFAULT_ARCH, families

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default="wan", choices=PIPELINES,
                   help="tiny random pipeline to build (without --pipeline-dir)")
    p.add_argument("--pipeline-dir", help="a local diffusers pipeline folder instead")
    p.add_argument("--model", help="videovae model folder (default: a small random model)")
    p.add_argument("--arch", default=DEFAULT_ARCH, choices=families(),
                   help="family of the random model")
    p.add_argument("--latent-channels", type=int, default=16)
    p.add_argument("--prompt", default="", help="with --pipeline-dir")
    p.add_argument("--image", help="conditioning image (image-to-video, with --pipeline-dir)")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", default="64", help="N or HxW")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--output", default="pipeline_demo.mp4")
    main(p.parse_args())

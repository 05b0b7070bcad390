"""videovae models in other libraries' pipelines.

`videovae.integrations.diffusers`: latent conventions of diffusers video pipelines,
`for_pipeline`, frame counts. `videovae.integrations.pipelines`: AnimateDiff and Stable Video
Diffusion pipelines that decode a video (they need `transformers`).
`videovae.integrations.image_vae`: image-latent compatibility (each latent frame decoded by the
source image VAE). `videovae.integrations.tiny_pipelines`: every supported pipeline built from
tiny random components (tests, demo).
"""

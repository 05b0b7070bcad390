"""Files on disk: video reading/writing, data listings, atomic outputs, the latent file format."""

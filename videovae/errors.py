"""One base error for every bad-input condition the toolkit detects.

The command line catches `VideoVAEError` (and the OS errors of files) and prints one line; each
subclass names the kind of input that was wrong. They are `ValueError`s, so code that catches
`ValueError` keeps working.
"""


class VideoVAEError(ValueError):
    """Bad input: a wrong shape or range, a file that cannot be used, a config that does not fit."""


class ConfigError(VideoVAEError):
    """A config file or override that does not fit the schema."""


class ImageVAEError(VideoVAEError):
    """A path that is not a usable image VAE, or one that disagrees with the requested config."""


class ModelLoadError(VideoVAEError):
    """A model folder that is missing, incomplete or of an unknown family."""


class VideoReadError(VideoVAEError):
    """A file that cannot be read as a video (not a video, empty, truncated)."""


class LatentFileError(VideoVAEError):
    """A latent file that is missing, incomplete, or from another model."""

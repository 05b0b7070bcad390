"""One base error for every bad-input condition the toolkit detects.

The command line catches `VideoVAEError` (and the OS errors of files) and prints one line
(`one_line`); each subclass names the kind of input that was wrong. They are `ValueError`s, so
code that catches `ValueError` keeps working. This module imports nothing (the command line's
errors must not wait for torch).
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


class TrainingDivergedError(VideoVAEError):
    """Training stopped because it diverged: too many consecutive non-finite steps, or weights
    or outputs that are no longer finite. The last good checkpoint is kept."""


# ----------------------------------------------------------------------------------------------
# One line per error

OOM_HINT = ("use --tile 512 (vae.enable_tiling()) and smaller chunks (--chunk-frames, "
            "--decode-chunk)")


def is_out_of_memory(e: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError, or an allocator's failure message."""
    text = str(e).lower()
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or "out of memory" in text or "can't allocate memory" in text)


def one_line(e: BaseException) -> str:
    """The first line of an error's message (its type when it has none); out-of-memory errors
    get a hint."""
    text = str(e).strip()
    msg = text.splitlines()[0] if text else type(e).__name__
    if is_out_of_memory(e):
        msg = f"out of memory ({msg}); {OOM_HINT}"
    return msg

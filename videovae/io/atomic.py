"""Outputs that appear whole or not at all: write to a temporary name beside the target, publish
it when complete, remove the temporary on any failure (SIGINT and, in the CLI, SIGTERM too).

Publishing re-checks the target atomically: a new file is hard-linked into place (which fails if
something appeared there meanwhile, e.g. a second `encode` to the same new output), so two
writers can never both report success while one result is silently lost. Outputs get the modes
an ordinary `open()` / `mkdir()` would give (0666 / 0777 less the umask); a replaced file keeps
its mode.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
import threading
from pathlib import Path

from ..errors import VideoVAEError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _exists_msg(path: Path) -> str:
    return f"{path} already exists (pass --overwrite to replace it)"


def check_output_path(path: Path, overwrite: bool = False, is_dir: bool = False) -> None:
    """Fail early when an output cannot be written: missing parent, read-only, existing, or a
    folder where a file is to go."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"output directory is not writable: {parent}")
    if not is_dir and path.is_dir():
        raise IsADirectoryError(f"output {path} is a folder; name a file")
    if path.exists() and not overwrite and not (path.is_dir() and not any(path.iterdir())):
        raise FileExistsError(_exists_msg(path))


def _identity(path) -> tuple:
    """What makes two paths one file: an existing file's (device, inode), which symlinks and
    hard links share; else the path with its symlinks resolved."""
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", st.st_dev, st.st_ino)


def check_distinct_paths(outputs, inputs=()) -> None:
    """Refuse an output that is one of the inputs or another output (the same path after
    resolving symlinks, or the same file through a hard link), whatever `--overwrite` says:
    writing it would destroy the input, or one output would silently replace the other.
    `outputs` and `inputs` are (label, path) pairs; labels name the option in the error."""
    seen = {}
    for label, path in outputs:
        key = _identity(path)
        if key in seen:
            other_label, other = seen[key]
            raise VideoVAEError(f"outputs {other} ({other_label}) and {path} ({label}) are the "
                                "same file; give them different names")
        seen[key] = (label, path)
    for in_label, in_path in inputs:
        hit = seen.get(_identity(in_path))
        if hit is not None:
            label, path = hit
            same = "" if str(path) == str(in_path) else " (the same file)"
            raise VideoVAEError(f"output {path} ({label}) is the {in_label} {in_path}{same}; "
                                "choose another output name")


def _new_mode(path: Path, is_dir: bool) -> int:
    if path.exists() and path.is_dir() == is_dir:
        return path.stat().st_mode & 0o7777
    return (0o777 if is_dir else 0o666) & ~current_umask()


def _normalize_file_modes(folder: Path) -> None:
    """Give everything under a new `folder` the mode `open()` / `mkdir()` would have (0666 /
    0777 less the umask; a file keeps its execute bits, masked too): safetensors writes 0600,
    which would hide a model from the rest of a team."""
    mask = current_umask()
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            if not (Path(root) / name).is_symlink():
                os.chmod(Path(root) / name, 0o777 & ~mask)
        for name in files:
            f = Path(root) / name
            if not f.is_symlink():
                os.chmod(f, (0o666 | (f.stat().st_mode & 0o111)) & ~mask)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _publish(tmp: Path, path: Path, is_dir: bool, overwrite: bool) -> None:
    """Move the finished temporary into place, re-checking the target atomically."""
    if not overwrite:
        try:
            if is_dir:
                os.rename(tmp, path)  # replaces at most an empty folder, never a full one
            else:
                os.link(tmp, path)  # fails if anything appeared at `path`
                tmp.unlink()
            return
        except FileExistsError:
            raise FileExistsError(_exists_msg(path)) from None
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise FileExistsError(_exists_msg(path)) from None
            if is_dir or e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP,
                                         errno.EMLINK):
                raise
            if path.exists():  # a file system without hard links: best effort
                raise FileExistsError(_exists_msg(path)) from None
            os.replace(tmp, path)
            return
    if not path.exists() and not path.is_symlink():
        os.replace(tmp, path)
        return
    if not is_dir:
        os.replace(tmp, path)  # atomic: the old file stays whole until the new one is in place
        return
    # replacing a folder (or a file by a folder): move the old one aside, then delete it
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    old.rmdir()
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    _remove(old)


@contextlib.contextmanager
def atomic_output(path, is_dir: bool = False, overwrite: bool = False):
    """Yield a temporary path beside `path`; publish it only if the block succeeds."""
    path = Path(path)
    check_output_path(path, overwrite, is_dir)
    parent = path.parent if str(path.parent) else Path(".")
    mode = _new_mode(path, is_dir)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
        os.chmod(tmp, mode)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                    dir=parent)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)  # again: some writers (safetensors) replace the file with a 0600 one
        if is_dir:  # and inside a folder, the files they wrote (a model's weights) the same way
            _normalize_file_modes(tmp)
        _publish(tmp, path, is_dir, overwrite)
    except BaseException as e:
        _remove(tmp)
        # OSError 28, or safetensors' own error carrying its text (our own errors already name
        # what failed: an inner output's, say)
        if is_disk_full(e) and not isinstance(e, VideoVAEError):
            raise VideoVAEError(f"cannot write {path}: no space left on device (nothing was "
                                "written; the earlier file, if any, is unchanged)") from e
        raise


def is_disk_full(e: BaseException) -> bool:
    """Whether a write failed because the disk is full (however the writer reports it)."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    return isinstance(e, Exception) and "no space left on device" in str(e).lower()


# ----------------------------------------------------------------------------------------------
# JSON that is always valid


def json_safe(obj):
    """`obj` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(obj, **kwargs) -> str:
    """Strict JSON text: non-finite numbers become null."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def write_json(path, obj, overwrite: bool = True) -> None:
    """Write `obj` as strict, indented JSON, atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(to_json(obj, indent=2) + "\n")

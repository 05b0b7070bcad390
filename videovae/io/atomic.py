"""Outputs that appear whole or not at all: write to a temporary name beside the target, rename
when complete, remove the temporary on any failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def check_output_path(path: Path, overwrite: bool = False) -> None:
    """Fail early when an output cannot be written: missing parent, read-only, or existing."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"output directory is not writable: {parent}")
    if path.exists() and not overwrite and not (path.is_dir() and not any(path.iterdir())):
        raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")


@contextlib.contextmanager
def atomic_output(path, is_dir: bool = False, overwrite: bool = False):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    check_output_path(path, overwrite)
    parent = path.parent if str(path.parent) else Path(".")
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                    dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if path.exists() and is_dir:
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise

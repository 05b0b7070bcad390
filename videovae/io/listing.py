"""Which files a data path names: a folder (scanned recursively) or a CSV/JSONL manifest with a
`path` column. The one list of video and image suffixes the toolkit reads and writes."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import stat
from pathlib import Path
from typing import Iterator

from ..errors import VideoVAEError


def input_file_mode(path, what: str) -> str | None:
    """None for an existing regular file; else what `path` is instead ("a directory", "a pipe
    (FIFO)", "a socket", "a device": a FIFO would block every reader forever). A missing path
    is a FileNotFoundError naming `what`."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    return ("a pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device")

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif", ".m4v", ".mpg",
                            ".mpeg"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES
# containers the H.264 writer can fill
WRITABLE_VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".m4v")
LATENT_SUFFIX = ".safetensors"


def check_output_suffix(path, suffixes, what: str) -> None:
    """Refuse an output name whose suffix is not one of `suffixes` (before any work is done)."""
    suffix = Path(path).suffix.lower()
    if suffix not in suffixes:
        raise VideoVAEError(f"output {path}: {suffix or 'no suffix'} is not {what} "
                            f"(use {', '.join(suffixes)})")


def is_image(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def walk_files(root: Path) -> Iterator[Path]:
    """Every file under `root`, following symlinked folders: each folder is listed once (a link
    to a folder already listed, e.g. a link loop, is skipped with a warning). Folders reached
    without a link are listed before linked ones, so a file keeps its own path when a link also
    leads to it."""
    seen: set[tuple[int, int]] = set()
    real, linked = [root], []
    while real or linked:
        folder = real.pop() if real else linked.pop()
        try:
            st = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError as e:
            logger.warning("cannot list %s: %s", folder, e)
            continue
        if (st.st_dev, st.st_ino) in seen:
            logger.warning("skipping %s: it links to a folder already listed", folder)
            continue
        seen.add((st.st_dev, st.st_ino))
        for entry in entries:
            p = folder / entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if not is_dir:
                yield p
            else:
                (linked if entry.is_symlink() else real).append(p)


def list_files(path, suffixes=MEDIA_SUFFIXES) -> list[Path]:
    """Files under a folder (recursive, following symlinked folders once, sorted) or listed in a
    CSV/JSONL manifest (`path` column; relative paths are resolved against the manifest's
    folder, not the working directory)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if path.is_dir():
        files = sorted(p for p in walk_files(path) if p.suffix.lower() in suffixes)
    elif path.suffix.lower() == ".csv":
        files = [path.parent / p for p in _csv_paths(path)]
    elif path.suffix.lower() in (".jsonl", ".json"):
        files = [path.parent / p for p in _jsonl_paths(path)]
    else:
        raise VideoVAEError(f"{path}: expected a folder or a .csv/.jsonl manifest")
    if not files:
        raise VideoVAEError(f"no {'/'.join(sorted(suffixes))} files found in {path}")
    return files


def _read_manifest(path: Path) -> str:
    """The manifest's text; a UTF-8 byte-order mark (spreadsheets' "CSV UTF-8") is dropped."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise VideoVAEError(f"{path}: a manifest must be UTF-8 text ({e.reason} at byte "
                            f"{e.start})") from None


def _csv_paths(path: Path) -> list[str]:
    """The `path` column of a CSV manifest (header matched without case or surrounding spaces);
    empty cells are skipped."""
    reader = csv.reader(io.StringIO(_read_manifest(path), newline=""))
    header = next(reader, None)
    if header is None:
        return []
    names = [h.strip().lower() for h in header]
    if "path" not in names:
        found = ", ".join(repr(h) for h in header) or "none"
        hint = " (columns are separated by commas)" if any(";" in h for h in header) else ""
        raise VideoVAEError(f"{path}: a manifest needs a 'path' column; found {found}{hint}")
    col = names.index("path")
    return [row[col] for row in reader if len(row) > col and row[col].strip()]


def jsonl_objects(text: str, where) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of JSON Lines text; a line that is not a
    JSON object is an error naming `where` and the line."""
    objects = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise VideoVAEError(f"{where}:{n}: not a JSON object ({e})") from None
        if not isinstance(item, dict):
            raise VideoVAEError(f"{where}:{n}: not a JSON object ({type(item).__name__})")
        objects.append((n, item))
    return objects


def _jsonl_paths(path: Path) -> list[str]:
    """The `path` of every line of a JSONL manifest (one JSON object per line)."""
    paths = []
    for n, item in jsonl_objects(_read_manifest(path), path):
        if "path" not in item:
            raise VideoVAEError(f"{path}:{n}: manifest entry without 'path'")
        if not isinstance(item["path"], str) or not item["path"]:
            raise VideoVAEError(f"{path}:{n}: 'path' must be a non-empty string, got "
                                f"{item['path']!r}")
        paths.append(item["path"])
    return paths

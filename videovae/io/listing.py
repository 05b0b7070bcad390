"""Which files a data path names: a folder (scanned recursively) or a CSV/JSONL manifest with a
`path` column. The one list of video and image suffixes the toolkit reads and writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import VideoVAEError

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


def list_files(path, suffixes=MEDIA_SUFFIXES) -> list[Path]:
    """Files under a folder (recursive, sorted) or listed in a CSV/JSONL manifest (`path` column;
    relative paths are resolved against the manifest's folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
    elif path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "path" not in rows[0]:
            raise VideoVAEError(f"{path}: a manifest needs a 'path' column")
        files = [path.parent / r["path"] for r in rows]
    elif path.suffix.lower() in (".jsonl", ".json"):
        files = []
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as e:
                    raise VideoVAEError(f"{path}:{i + 1}: not a JSON object ({e})") from e
                if not isinstance(item, dict) or "path" not in item:
                    raise VideoVAEError(f"{path}:{i + 1}: manifest entry without 'path'")
                files.append(path.parent / item["path"])
    else:
        raise VideoVAEError(f"{path}: expected a folder or a .csv/.jsonl manifest")
    if not files:
        raise VideoVAEError(f"no {'/'.join(sorted(suffixes))} files found in {path}")
    return files

"""Accelerate `save_state` checkpoints in `OUT/checkpoints/checkpoint-<step>`: listing, the one
to resume from, saving with rotation.

A checkpoint is written into `OUT/checkpoints/.checkpoint-<step>.partial` and renamed to
`checkpoint-<step>` only when every file of it is written, so a `checkpoint-<step>` folder is
always complete and `train.resume_from=latest` never picks a half-written one. Older
checkpoints are rotated out only after the new one is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "checkpoint-"


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoint-<step> folders under `out/checkpoints`, oldest first."""
    ckpts = [p for p in (Path(out) / "checkpoints").glob(f"{PREFIX}*")
             if p.name[len(PREFIX):].isdigit() and p.is_dir()]
    return sorted(ckpts, key=lambda p: int(p.name[len(PREFIX):]))


def checkpoint_path(out: Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"{PREFIX}{step}"


def _partial_path(out: Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f".{PREFIX}{step}.partial"


def _empty_files(path: Path) -> list[str]:
    """Files of a checkpoint folder that are empty (or a folder without files)."""
    files = [f for f in path.rglob("*") if f.is_file()]
    return [f.name for f in files if f.stat().st_size == 0] if files else ["(no files)"]


def resume_path(resume_from: str | None, out: Path) -> Path | None:
    """`latest` -> the newest complete checkpoint (None if there is none); a folder -> itself.

    A `checkpoint-<step>` folder holding an empty file (left by a kill mid-write before
    checkpoints were published by renaming, or by an interrupted copy) is passed over, with a
    warning, for the next older one."""
    if not resume_from:
        return None
    if resume_from == "latest":
        for ckpt in reversed(list_checkpoints(out)):
            empty = _empty_files(ckpt)
            if not empty:
                return ckpt
            logger.warning("skipping incomplete checkpoint %s (empty: %s)", ckpt,
                           ", ".join(empty))
        return None
    path = Path(resume_from)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def save_checkpoint(accelerator, out: Path, step: int, limit: int) -> Path:
    """Save the full training state; keep at most `limit` checkpoints (0: keep all).

    Every rank writes into the same partial folder (Accelerate's layout); the main process
    publishes it by renaming and only then deletes the oldest checkpoints."""
    path, partial = checkpoint_path(out, step), _partial_path(out, step)
    if accelerator.is_main_process:
        partial.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists():  # left by a run that was killed while saving
            shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _publish(partial, path)
        if limit > 0:
            for old in list_checkpoints(out)[:-limit]:
                if old != path:
                    shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return path


def _publish(partial: Path, path: Path) -> None:
    """Rename the finished folder into place (an existing checkpoint of the same step, from a
    run resumed from an earlier one, is replaced)."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.rename(path, old)
    os.rename(partial, path)
    if old is not None:
        shutil.rmtree(old)
    logger.info("saved checkpoint %s", path)

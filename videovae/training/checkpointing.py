"""Accelerate `save_state` checkpoints in `OUT/checkpoints/checkpoint-<step>`: listing, the one
to resume from, saving with rotation."""

from __future__ import annotations

import shutil
from pathlib import Path


def list_checkpoints(out: Path) -> list[Path]:
    """checkpoint-<step> folders under `out/checkpoints`, oldest first."""
    ckpts = [p for p in (Path(out) / "checkpoints").glob("checkpoint-*")
             if p.name[11:].isdigit()]
    return sorted(ckpts, key=lambda p: int(p.name[11:]))


def checkpoint_path(out: Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"checkpoint-{step}"


def resume_path(resume_from: str | None, out: Path) -> Path | None:
    """`latest` -> the newest checkpoint (None if there is none); a folder -> itself."""
    if not resume_from:
        return None
    if resume_from == "latest":
        ckpts = list_checkpoints(out)
        return ckpts[-1] if ckpts else None
    path = Path(resume_from)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def save_checkpoint(accelerator, out: Path, step: int, limit: int) -> Path:
    """Save the full training state; keep at most `limit` checkpoints (0: keep all)."""
    if accelerator.is_main_process and limit > 0:
        ckpts = list_checkpoints(out)
        for old in ckpts[: max(0, len(ckpts) - limit + 1)]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    path = checkpoint_path(out, step)
    accelerator.save_state(str(path))
    return path

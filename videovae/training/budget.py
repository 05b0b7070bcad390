"""Training for a time budget rather than a step count (`tools/compare_arch.py`,
`tools/train_default.py`).

A short probe run measures the seconds per step; that sets the step count, and so the
learning-rate schedule, of the real run. The step time is the trainer's own measure (the time of
the step, without data loading and validation), the mean over the probe
(sources with different batch shapes take turns).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..config import from_dict
from .config import TrainConfig
from .trainer import train


def reset_accelerate_state() -> None:
    """Accelerate keeps process-wide singletons; each training run in one process starts anew."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def merge(base: dict, extra: dict) -> dict:
    """`base` with `extra`'s sections merged in (one level deep, as the YAML sections are)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in extra.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def run_training(settings: dict, out: Path, steps: int) -> tuple[Path, list[dict]]:
    """`videovae train` with the config `settings` for `steps` steps writing to `out` (a new run:
    an earlier run there is replaced, `train.overwrite`); returns the final model folder and the
    rows of metrics.jsonl."""
    reset_accelerate_state()
    cfg = from_dict(TrainConfig, merge(settings, {"train": {
        "max_steps": steps, "output_dir": str(out), "overwrite": True}}))
    final = train(cfg)
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return final, rows


def train_for_minutes(settings: dict, out: Path, minutes: float, probe_steps: int = 6) -> dict:
    """Probe the step time, then train for about `minutes` of steps. Returns the run's record:
    model folder, steps, seconds, first and last reconstruction loss."""
    _, probe = run_training(settings, Path(out) / "probe", probe_steps)
    step_s = [m["train/step_seconds"] for m in probe]
    per_step = float(np.mean(step_s[1:] or step_s))  # the first step warms up
    steps = max(1, int(minutes * 60 / per_step))
    t0 = time.perf_counter()
    final, rows = run_training(settings, Path(out) / "run", steps)
    recs = [m["train/rec"] for m in rows if m.get("train/rec") is not None]
    return {"model": str(final), "steps": steps, "probe_s_per_step": per_step,
            "wall_seconds": time.perf_counter() - t0,
            "rec_start": recs[0], "rec_end": float(np.mean(recs[-20:]))}

"""Training checkpoints in `OUT/checkpoints/checkpoint-<step>`: listing, the one to resume from,
saving with rotation, and resuming without running code from the folder.

A checkpoint is written into `OUT/checkpoints/.checkpoint-<step>.partial` and renamed to
`checkpoint-<step>` only when every file of it is written, so a `checkpoint-<step>` folder is
always complete and `train.resume_from=latest` never picks a half-written one. Older
checkpoints are rotated out only after the new one is complete.

A checkpoint folder holds:

    model.safetensors, model_1.safetensors   the trained modules (Accelerate's `save_state`)
    optimizer.bin, optimizer_1.bin           AdamW states (tensors, numbers)
    random_states_<rank>.pkl                 RNG states (tensors, numpy arrays)
    scaler.pt                                the fp16 gradient scaler, when there is one
    train_state.json                         step, counters, learning-rate schedules, EMA settings
    ema.safetensors                          the EMA weights, by parameter name

Nothing the toolkit itself keeps is pickled. A folder can come from anywhere (a download, a
colleague), so resuming first reads every pickle-bearing file with `torch.load(...,
weights_only=True)` and an allow-list of what RNG states hold (numpy arrays): a file holding
anything else, a file of another kind, or the pickled `custom_checkpoint_*.pkl` of earlier
versions is refused with one line before Accelerate reads anything, so no code from the folder
ever runs. (Accelerate's sharded FSDP and DeepSpeed checkpoints keep pickled metadata, so they
are refused too: use FSDP's FULL_STATE_DICT for runs that must resume.)
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import VideoVAEError, one_line

logger = logging.getLogger(__name__)

PREFIX = "checkpoint-"
STATE_FILE = "train_state.json"
EMA_FILE = "ema.safetensors"
LAYOUT = 2  # train_state.json's "layout"; 1 was Accelerate's pickled custom_checkpoint_*.pkl
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")  # read with weights_only=True
SAFE_SUFFIXES = (".safetensors", ".json")  # no code in these formats


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


# ----------------------------------------------------------------------------------------------
# What the toolkit keeps beside Accelerate's files


class Resumable:
    """The training state a checkpoint holds beside Accelerate's model, optimizer and RNG files:
    the step counters (`TrainState`), the learning-rate schedules by name, and the EMA (diffusers
    `EMAModel`, or None) of the model whose parameter names are `param_names`."""

    def __init__(self, state, schedulers: dict, ema=None, param_names: list[str] = ()):
        self.state, self.schedulers, self.ema = state, schedulers, ema
        self.param_names = list(param_names)

    def write(self, folder: Path) -> None:
        doc = {"layout": LAYOUT, "train_state": self.state.state_dict(),
               "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
               "ema": None}
        if self.ema is not None:
            doc["ema"] = {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}
            save_file({n: p.detach().cpu().contiguous()
                       for n, p in zip(self.param_names, self.ema.shadow_params, strict=True)},
                      str(folder / EMA_FILE))
        (folder / STATE_FILE).write_text(json.dumps(doc, indent=1))

    def read(self, folder: Path) -> None:
        """Restore from `folder` (JSON and safetensors only); errors are one line."""
        doc = _read_state_file(folder)
        counters = doc.get("train_state")
        if (not isinstance(counters, dict) or set(counters) != set(self.state.state_dict())
                or not all(type(v) is int for v in counters.values())):
            raise _cannot(folder, f"{STATE_FILE}: train_state must hold the integers "
                                  f"{', '.join(sorted(self.state.state_dict()))}")
        schedules = doc.get("schedulers")
        if not isinstance(schedules, dict) or set(schedules) != set(self.schedulers):
            raise _cannot(folder, f"{STATE_FILE}: schedulers must be "
                                  f"{sorted(self.schedulers)} (another loss setup?)")
        self.state.load_state_dict(counters)
        for name, sched in self.schedulers.items():
            sched.load_state_dict(schedules[name])
        self._read_ema(folder, doc.get("ema"))

    def _read_ema(self, folder: Path, settings) -> None:
        if self.ema is None:
            return  # (a checkpoint with EMA resumed with train.ema_decay=0: the EMA is dropped)
        if not isinstance(settings, dict) or not (folder / EMA_FILE).is_file():
            raise _cannot(folder, f"it holds no EMA ({EMA_FILE}); resume with train.ema_decay=0")
        try:
            weights = load_file(str(folder / EMA_FILE))
        except (SafetensorError, OSError) as e:
            raise _cannot(folder, f"{EMA_FILE}: {one_line(e)}") from e
        if sorted(weights) != sorted(self.param_names):
            raise _cannot(folder, f"{EMA_FILE} holds the weights of another model")
        for name, shadow in zip(self.param_names, self.ema.shadow_params, strict=True):
            have = weights[name]
            if have.shape != shadow.shape:
                raise _cannot(folder, f"{EMA_FILE}: {name} has shape {list(have.shape)}, the "
                                      f"model {list(shadow.shape)}")
            shadow.copy_(have)  # (keeps the shadow's device and dtype)
        self.ema.load_state_dict({k: v for k, v in settings.items() if k != "shadow_params"})


def _read_state_file(folder: Path) -> dict:
    try:
        doc = json.loads((folder / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _cannot(folder, f"{STATE_FILE}: {one_line(e)}") from e
    if not isinstance(doc, dict) or doc.get("layout") != LAYOUT:
        raise _cannot(folder, f"{STATE_FILE} is not of layout {LAYOUT}")
    return doc


def _cannot(folder: Path, why: str) -> VideoVAEError:
    return VideoVAEError(f"cannot resume from {folder}: {why}")


# ----------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(accelerator, out: Path, step: int, limit: int, resumable: Resumable) -> Path:
    """Save the full training state; keep at most `limit` checkpoints (0: keep all).

    Every rank writes into the same partial folder (Accelerate's layout); the main process adds
    `resumable`'s files, publishes the folder by renaming and only then deletes the oldest
    checkpoints."""
    path, partial = checkpoint_path(out, step), _partial_path(out, step)
    if accelerator.is_main_process:
        partial.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists():  # left by a run that was killed while saving
            shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        resumable.write(partial)
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


# ----------------------------------------------------------------------------------------------
# Resuming


def load_checkpoint(accelerator, folder: Path, resumable: Resumable) -> None:
    """Restore everything from `folder` after checking that no file of it can run code; any
    failure is one `VideoVAEError` line naming the folder."""
    folder = Path(folder)
    check_checkpoint(folder)
    try:
        accelerator.load_state(str(folder), load_kwargs={"weights_only": True})
    except pickle.UnpicklingError as e:  # (checked above; torch's text would advise unsafe loading)
        raise _cannot(folder, "a file holds objects other than tensors (refused)") from e
    except Exception as e:  # noqa: BLE001 - a readable line, not a loader's traceback
        raise _cannot(folder, f"{type(e).__name__}: {one_line(e)} (an incomplete checkpoint? "
                              "resume from another one)") from e
    resumable.read(folder)


def check_checkpoint(folder: Path) -> None:
    """Refuse a folder that is incomplete, of an older layout, or holds any file that is not
    safetensors / JSON / a weights-only torch file (tensors, numbers, numpy arrays)."""
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    pickled = [f.name for f in files if f.name.startswith("custom_checkpoint_")]
    if pickled:
        raise _cannot(folder, f"{pickled[0]} is pickled training state (the layout of earlier "
                              "videovae versions), which is never loaded because unpickling "
                              "can run code; start a new run")
    empty = [f.name for f in files if f.stat().st_size == 0]
    if empty or not (folder / STATE_FILE).is_file():
        what = f"empty file(s) {', '.join(empty)}" if empty else f"no {STATE_FILE}"
        raise _cannot(folder, f"{what} (an incomplete checkpoint? resume from another one)")
    for f in files:
        if f.suffix not in SAFE_SUFFIXES:
            _check_weights_only(folder, f)


def _safe_globals() -> list:
    """What Accelerate's RNG states need beside tensors: numpy arrays (numpy's MT19937 state)."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)),
            codecs.encode]


def _check_weights_only(folder: Path, f: Path) -> None:
    name = f.relative_to(folder)
    if f.suffix not in PICKLE_SUFFIXES or not zipfile.is_zipfile(f):
        raise _cannot(folder, f"{name} is not safetensors, JSON or a torch tensor file (sharded "
                              "FSDP and DeepSpeed state keeps pickles: use FSDP's "
                              "FULL_STATE_DICT to resume); refused, loading it could run code")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            torch.load(f, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise _cannot(folder, f"{name} holds objects other than tensors, numbers and arrays; "
                              "refused, loading it could run code") from e
    except Exception as e:  # noqa: BLE001 - a damaged file: one line
        raise _cannot(folder, f"{name} cannot be read ({type(e).__name__}: {one_line(e)}); an "
                              "incomplete checkpoint? resume from another one") from e

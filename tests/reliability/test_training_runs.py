"""Training runs that meet faults: a SIGKILL after a checkpoint or while one is written (then
train.resume_from=latest), corrupt videos in the data, a learning rate that diverges, a bad
config. Each killed run is a real process; the other runs are in this process."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from videovae.cli import main as cli_main

from helpers import reset_accelerate_state

ROOT = Path(__file__).resolve().parents[2]
TRAIN_CONFIG = ROOT / "configs" / "train" / "tiny_cpu.yaml"
SMALL_DATA = "data.sources=[{type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]"
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


def train_args(out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--config", str(TRAIN_CONFIG), "model.block_out_channels=[8,16,16,16]",
            "model.layers_per_block=1", "model.norm_num_groups=4", f"train.output_dir={out}",
            f"train.max_steps={steps}", "train.log_every=1", "train.val_every=0",
            "train.checkpoint_every=3", "data.num_workers=0", "data.val_clips=1",
            "data.val_num_frames=5", "data.val_resolution=[32,32]", "optim.warmup_steps=2",
            SMALL_DATA, *extra]


def metrics(out: Path, strict: bool = True) -> list[dict]:
    """The rows of metrics.jsonl (not strict: while it is being written, whole lines only)."""
    path = out / "metrics.jsonl"
    rows = []
    for ln in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(ln))
        except json.JSONDecodeError:
            if strict:
                raise
    return rows


def ckpt_steps(out: Path) -> list[int]:
    """The steps of the complete checkpoints (`checkpoint-<step>` folders) of a run."""
    d = out / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in d.iterdir()
                  if p.name.startswith("checkpoint-") and p.name.split("-")[1].isdigit())


class _Log(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def train_here(*args) -> tuple[int, str]:
    """`videovae train ...` in this process with one thread (as the killed processes run):
    exit code and the log. For module fixtures, which cannot use caplog."""
    log, logger = _Log(), logging.getLogger("videovae")
    level, threads = logger.level, torch.get_num_threads()
    logger.addHandler(log)
    logger.setLevel(logging.INFO)
    torch.set_num_threads(1)
    try:
        rc = cli_main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)
        logger.removeHandler(log)
        logger.setLevel(level)
        reset_accelerate_state()
    return rc, "\n".join(log.messages)


def start(process_env, stderr: Path, *args, code=None) -> subprocess.Popen:
    """Start `python -m videovae ...` (or `python -c code ...`), its stderr into a file (a pipe
    nobody reads while the run is watched could fill up)."""
    head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "videovae"]
    with open(stderr, "w") as f:
        return subprocess.Popen([*head, *map(str, args)], stdout=subprocess.DEVNULL, stderr=f,
                                env=process_env)


def stop(proc: subprocess.Popen, stderr: Path) -> str:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)
    return stderr.read_text()


# ----------------------------------------------------------------------------------------------
# Two runs SIGKILLed (started together, a process each): one after a checkpoint, one while it
# writes a checkpoint


RESUME_ARGS = ("train.checkpoint_every=4",)
RESUME_STEPS = 12

KILL_IN_SAVE = """
import os, signal, sys
from pathlib import Path
import accelerate.checkpointing as ckpt
real = ckpt.save
def save(obj, f, *a, **k):
    if "checkpoint-6" in str(f) and Path(f).name.startswith("optimizer"):
        Path(f).write_bytes(b"")  # what the kernel has of the file when the process dies
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *a, **k)
ckpt.save = save
from videovae.cli import main
sys.exit(main(sys.argv[1:]))
"""

PARTIAL_ARGS = ("train.checkpoint_every=2", "train.checkpoints_total_limit=1",
                "train.ema_decay=0")


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory, process_env):
    """Run A (12 steps, a checkpoint every 4) is SIGKILLed after a checkpoint, once a later step
    is logged. Run B (8 steps, a checkpoint every 2, limit 1) SIGKILLs itself while it writes
    checkpoint-6's optimizer file; the number of complete checkpoints on its disk is counted at
    every poll. A copy of B as it was left is kept."""
    d = tmp_path_factory.mktemp("killed")
    a_run, b_run = d / "a" / "run", d / "b" / "run"
    a = start(process_env, d / "a.txt", *train_args(a_run, RESUME_STEPS, *RESUME_ARGS))
    b = start(process_env, d / "b.txt", *train_args(b_run, 8, *PARTIAL_ARGS), code=KILL_IN_SAVE)
    killed_at, counts = None, []
    try:
        deadline = time.time() + 300
        while (a.poll() is None or b.poll() is None) and time.time() < deadline:
            if killed_at is None and a.poll() is None:
                ck, m = ckpt_steps(a_run), metrics(a_run, strict=False)
                if ck and m and m[-1]["step"] > ck[-1]:
                    a.kill()
                    killed_at = (ck[-1], m[-1]["step"])
            if b.poll() is None:
                n = len(ckpt_steps(b_run))
                if n or counts:
                    counts.append(n)
            time.sleep(0.002)
    finally:
        a_err, b_err = stop(a, d / "a.txt"), stop(b, d / "b.txt")
    assert killed_at is not None, f"run A ended (rc={a.returncode}) before it was killed: " \
                                  f"{a_err[-2000:]}"
    assert b.returncode == -signal.SIGKILL, f"run B: rc={b.returncode}: {b_err[-2000:]}"
    shutil.copytree(b_run, d / "b" / "copy")
    return {"a": a_run, "killed_at": killed_at, "b": b_run, "b_copy": d / "b" / "copy",
            "counts": counts, "listing": sorted(p.name for p in (b_run / "checkpoints").iterdir())}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, killed_runs):
    """Run A resumed with train.resume_from=latest, and an uninterrupted reference run."""
    run = killed_runs["a"]
    ref = tmp_path_factory.mktemp("reference") / "run"
    before = metrics(run)
    rc, log = train_here(*train_args(ref, RESUME_STEPS, *RESUME_ARGS))
    assert rc == 0, log[-2000:]
    rc, log = train_here(*train_args(run, RESUME_STEPS, *RESUME_ARGS, "train.resume_from=latest"))
    assert rc == 0, log[-2000:]
    resumed = re.search(r"resumed from \S+checkpoint-(\d+) at step (\d+)", log)
    assert resumed, f"no 'resumed from' in the log: {log[-2000:]}"
    return {"ref": ref, "run": run, "killed_at": killed_runs["killed_at"], "before": before,
            "after": metrics(run), "resumed_step": int(resumed.group(2))}


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_resumes_as_if_never_stopped(killed_and_resumed):
    """Resumes from the last checkpoint; the replayed steps' losses and the final weights are
    an uninterrupted run's (to 1e-5: two runs)."""
    r = killed_and_resumed
    start_step = r["resumed_step"]
    assert start_step == r["killed_at"][0], (start_step, r["killed_at"])
    ref = {m["step"]: m for m in metrics(r["ref"])}
    got = {m["step"]: m for m in r["after"]}
    for key in ("train/loss", "train/rec", "train/grad_norm"):
        diff = max(abs(ref[s][key] - got[s][key]) for s in range(start_step + 1, RESUME_STEPS + 1))
        assert diff <= 1e-5, (key, diff)
    a = load_file(str(r["ref"] / "final" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(r["run"] / "final" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= 1e-5, diff


@pytest.mark.slow
def test_metrics_list_each_step_once_after_that_resume(killed_and_resumed):
    """Steps 1..12 in order, each once; the rows before the checkpoint unchanged."""
    r = killed_and_resumed
    assert [m["step"] for m in r["after"]] == list(range(1, RESUME_STEPS + 1))
    start_step = r["resumed_step"]
    assert r["after"][:start_step] == r["before"][:start_step]


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_resumes_from_the_last_complete_one(killed_runs):
    """The half-written checkpoint stays a .partial folder; latest resumes from the newest
    complete one and the run ends normally."""
    run = killed_runs["b"]
    assert killed_runs["listing"] == [".checkpoint-6.partial", "checkpoint-4"]
    partial_opt = [p for p in (run / "checkpoints" / ".checkpoint-6.partial").iterdir()
                   if p.name.startswith("optimizer")]
    assert partial_opt and partial_opt[0].stat().st_size == 0
    rc, log = train_here(*train_args(run, 8, *PARTIAL_ARGS, "train.resume_from=latest"))
    assert rc == 0, log[-2000:]
    assert re.search(r"resumed from \S+/checkpoint-4 at step 4", log), log[-2000:]
    assert [m["step"] for m in metrics(run)] == list(range(1, 9))
    assert (run / "final" / "diffusion_pytorch_model.safetensors").is_file()


@pytest.mark.slow
def test_rotation_never_leaves_zero_complete_checkpoints(killed_runs):
    """With checkpoints_total_limit=1, from the first checkpoint on, one complete checkpoint was
    on disk at every poll of the run, also while it was killed mid-write."""
    counts = killed_runs["counts"]
    assert counts and min(counts) >= 1, (len(counts), min(counts, default=None))


@pytest.mark.slow
def test_latest_passes_over_a_checkpoint_folder_with_an_empty_optimizer_file(killed_runs):
    """A `checkpoint-<step>` folder with a 0-byte optimizer file (what older versions left on
    SIGKILL): latest resumes from the newest complete one, checkpoint-4."""
    ck = killed_runs["b_copy"] / "checkpoints"
    os.rename(ck / ".checkpoint-6.partial", ck / "checkpoint-6")
    rc, log = train_here(*train_args(killed_runs["b_copy"], 8, *PARTIAL_ARGS,
                                     "train.resume_from=latest"))
    assert rc == 0, log[-2000:]
    assert re.search(r"resumed from \S+/checkpoint-4 at step 4", log), log[-2000:]


# ----------------------------------------------------------------------------------------------
# Bad data, divergence, bad config


@pytest.mark.slow
def test_corrupt_videos_in_the_data_are_skipped_and_counted(tmp_path, run_cli, make_video):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        make_video(data / f"good{i}.mp4", 9, (40, 40), speed=1.0 + i)
    for i in range(3):
        (data / f"broken{i}.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + b"x" * 200)
    run = tmp_path / "run"
    src = ("data.sources=[{name: clips, type: video, path: " + str(data) +
           ", num_frames: 5, resolution: 32, batch_size: 1}]")
    run_cli(*train_args(run, 6, src, "train.checkpoint_every=0")).ok()
    m = metrics(run)
    assert (run / "final").is_dir()
    assert m and m[-1].get("train/skipped_samples", 0) > 0, m[-1:]


@pytest.mark.slow
def test_a_diverging_run_fails_saves_no_model_and_writes_strict_json(tmp_path, run_cli, caplog):
    """optim.lr=1e3: rc 1 'training diverged', no final model; every JSON written (validation,
    metrics) is strict JSON; the warnings name the skipped steps as metrics.jsonl does."""
    caplog.set_level("INFO", logger="videovae")
    run = tmp_path / "run"
    res = run_cli(*train_args(run, 40, "optim.lr=1e3", "train.max_nonfinite_steps=3",
                              "train.val_every=2", "train.checkpoint_every=5"))
    res.fails("training diverged")
    assert not (run / "final").exists()

    def no_nan(token):
        raise AssertionError(f"bare {token} in JSON")

    for f in sorted((run / "val").glob("*.json")) if (run / "val").is_dir() else []:
        json.loads(f.read_text(), parse_constant=no_nan)
    rows = [json.loads(ln, parse_constant=no_nan)
            for ln in (run / "metrics.jsonl").read_text().splitlines()]
    warned = [int(s) for s in re.findall(r"step (\d+): non-finite", caplog.text)]
    skipped = [r["step"] for r in rows if r.get("train/grad_norm") is None]
    assert warned and warned == skipped, (warned, skipped)


@pytest.mark.parametrize("config, override, patterns", [
    pytest.param(TRAIN_CONFIG, "optim.lr=fast", ["optim.lr"], id="bad-override-value"),
    pytest.param(None, None, ["not found", "missing.yaml"], id="missing-config-file"),
])
def test_a_bad_config_is_one_line(tmp_path, run_cli, config, override, patterns):
    res = run_cli("train", "--config", config or tmp_path / "missing.yaml",
                  *([override] if override else []))
    res.fails(*patterns)

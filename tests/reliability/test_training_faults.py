"""`videovae train` against crafted checkpoints, reused output folders and bad configs (issue 19:
F07 code execution on resume, F09 a new run into a run's folder, F03/F04/H04 config checks
before anything is created, G11 a pickled LPIPS weights file).

Every refusal is one `videovae train: error:` line, rc 1, and leaves no new run folder."""

import io
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from videovae.cli import main as cli
from videovae.training.budget import reset_accelerate_state

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "train" / "tiny_cpu.yaml")
TINY = ["model.block_out_channels=[8,16,16,16]", "model.layers_per_block=1",
        "model.norm_num_groups=4", "train.val_every=0", "train.log_every=1",
        "data.num_workers=0", "data.val_clips=1", "data.val_num_frames=5",
        "data.val_resolution=[32,32]", "optim.warmup_steps=2",
        "data.sources=[{type: synthetic, num_frames: 5, resolution: 32, batch_size: 1}]"]
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


class Payload:
    """Unpickling this creates the file `marker`: what a crafted file could do with any code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_payload(path: Path, marker: Path, kind: str) -> None:
    """A payload as torch.save writes it (zip) or as a bare pickle."""
    if kind == "torch":
        buf = io.BytesIO()
        torch.save({"state": Payload(marker)}, buf)
        path.write_bytes(buf.getvalue())
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))


def train_cli(out: Path, *extra: str) -> int:
    return cli(["train", "--config", CONFIG, *TINY, f"train.output_dir={out}", *extra])


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert "weights_only" not in err, err  # never torch's advice to load unsafely
    return [line for line in err.splitlines() if line.startswith("videovae train: error:")]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A genuine checkpoint-2 of a tiny run (EMA on)."""
    out = tmp_path_factory.mktemp("genuine") / "run"
    try:
        assert train_cli(out, "train.max_steps=2", "train.checkpoint_every=2") == 0
    finally:
        reset_accelerate_state()
    return out / "checkpoints" / "checkpoint-2"


def test_the_payload_runs_when_unpickled(tmp_path):
    """(The payload the cases below plant does create its file when unpickled unsafely.)"""
    marker = tmp_path / "PWNED"
    write_payload(tmp_path / "p.pkl", marker, "pickle")
    pickle.loads((tmp_path / "p.pkl").read_bytes())
    assert marker.exists()


def test_a_checkpoint_pickles_nothing_of_the_toolkit(checkpoint):
    """Training state is JSON and safetensors; only Accelerate's optimizer and RNG files are
    torch files (read with weights_only=True). The F07 cases cover each of them."""
    from videovae.training.checkpointing import check_checkpoint

    names = sorted(p.name for p in checkpoint.iterdir())
    assert names == ["ema.safetensors", "model.safetensors", "optimizer.bin",
                     "random_states_0.pkl", "train_state.json"]
    check_checkpoint(checkpoint)  # a genuine folder passes the safety check


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torch", "pickle"])
@pytest.mark.parametrize("name", ["optimizer.bin", "random_states_0.pkl",
                                  "custom_checkpoint_0.pkl", "pytorch_model_fsdp_0/.metadata"])
def test_f07_resume_never_runs_code_from_the_checkpoint(tmp_path, capsys, checkpoint, name,
                                                        kind):
    """F07: a payload in any pickle-bearing file of a checkpoint folder (or in the
    custom_checkpoint_0.pkl of the older, pickled layout, or the pickled metadata of a sharded
    FSDP checkpoint) is refused before it is read unsafely: one line naming the file, the marker
    never created, no run folder."""
    crafted = tmp_path / "checkpoint-2"
    shutil.copytree(checkpoint, crafted)
    (crafted / name).parent.mkdir(exist_ok=True)
    marker = tmp_path / "PWNED"
    write_payload(crafted / name, marker, kind)
    out = tmp_path / "run2"
    rc = train_cli(out, "train.max_steps=4", f"train.resume_from={crafted}")
    lines = error_lines(capsys)
    assert not marker.exists(), "code from the checkpoint ran"
    assert rc == 1 and len(lines) == 1, lines
    assert f"cannot resume from {crafted}: {name}" in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize("layout", ["final/config.json", "metrics.jsonl",
                                    "checkpoints/checkpoint-3/model.safetensors",
                                    "checkpoints/.checkpoint-4.partial/model.safetensors"])
def test_f09_a_new_run_into_a_folder_holding_a_run_is_refused(tmp_path, capsys, layout):
    """F09: without train.resume_from, a folder holding a finished or started run is refused
    before anything is touched."""
    out = tmp_path / "run"
    (out / layout).parent.mkdir(parents=True)
    (out / layout).write_text("{}\n")
    before = snapshot(out)
    rc = train_cli(out, "train.max_steps=2", "train.checkpoint_every=2")
    lines = error_lines(capsys)
    assert rc == 1 and len(lines) == 1, lines
    assert lines[0] == (f"videovae train: error: {out} holds a run ({layout.split('/')[0]}): "
                        "resume it (train.resume_from=latest) or choose another "
                        "train.output_dir (train.overwrite=true replaces it)")
    assert snapshot(out) == before


@pytest.mark.slow
def test_f09_overwrite_removes_the_old_run_first(tmp_path, capsys):
    """A finished run (checkpoints 2 and 4), then a new run with another seed: refused, the old
    run intact; with train.overwrite=true the old run is gone, its checkpoint-4 too (a later
    resume_from=latest cannot continue it); the user's own files in the folder stay."""
    out = tmp_path / "run"
    assert train_cli(out, "train.max_steps=4", "train.checkpoint_every=2") == 0
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    reset_accelerate_state()
    second = ("train.max_steps=2", "train.checkpoint_every=2", "train.seed=2")
    assert train_cli(out, *second) == 1
    assert len(error_lines(capsys)) == 1 and snapshot(out) == before
    reset_accelerate_state()
    assert train_cli(out, *second, "train.overwrite=true") == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "notes.txt").read_text() == "mine\n"
    assert (out / "final" / "config.json").is_file()
    old = before["final/diffusion_pytorch_model.safetensors"]
    assert (out / "final" / "diffusion_pytorch_model.safetensors").read_bytes() != old


def _source(**kw) -> str:
    src = {"type": "synthetic", "num_frames": 5, "resolution": 32, "batch_size": 1, **kw}
    return "data.sources=[{" + ", ".join(f"{k}: {v}" for k, v in src.items()) + "}]"


@pytest.mark.parametrize("overrides, field", [
    (["train.log_every=0"], "train.log_every"),  # F03: ZeroDivisionError after step 1
    ([_source(resolution=0)], "data.sources[0].resolution"),  # F03: ZeroDivisionError
    ([_source(batch_size=0)], "data.sources[0].batch_size"),  # F03: a torch.stack error
    (["train.checkpoint_every=-1"], "train.checkpoint_every"),  # F03: a checkpoint every step
    (["data.sources=[]"], "data.sources"),  # F03: after the run folder was made
    ([_source(type="video", path="/nonexistent/clips")], "data.sources[0].path"),  # F04
    # H04: 12.5 G parameters; the size is known from the config before any allocation
    (["model.block_out_channels=[4096,4096,4096,4096]"], "block_out_channels"),
    (["train.overwrite=true", "train.resume_from=latest"], "train.overwrite"),
], ids=["log_every", "resolution", "batch_size", "checkpoint_every", "no_sources",
        "missing_path", "huge_model", "overwrite_and_resume"])
def test_f03_f04_h04_bad_config_is_one_line_and_leaves_no_run_folder(tmp_path, capsys,
                                                                     overrides, field):
    out = tmp_path / "run"
    args = ["train", "--config", CONFIG, f"train.output_dir={out}", "train.max_steps=3",
            "data.num_workers=0", *overrides]
    rc = cli(args)
    lines = error_lines(capsys)
    assert rc == 1 and len(lines) == 1, lines
    assert field in lines[0], lines[0]
    assert not out.exists()


def test_g11_a_pickled_lpips_weights_file_is_one_line(tmp_path, capsys):
    """G11: the payload never runs (weights_only) and the error is ours, not torch's advice to
    load the file with weights_only=False."""
    marker = tmp_path / "PWNED"
    weights = tmp_path / "lpips.pth"
    write_payload(weights, marker, "torch")
    out = tmp_path / "run"
    rc = train_cli(out, "train.max_steps=1", "loss.perceptual_weight=1",
                   f"loss.lpips_weights={weights}")
    lines = error_lines(capsys)
    assert rc == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"videovae train: error: loss.lpips_weights: {weights} holds "
                               "objects other than tensors"), lines[0]
    assert not marker.exists() and not out.exists()

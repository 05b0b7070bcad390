"""What only a real `python -m videovae` process shows: a fast --help, two processes writing one
output, and Ctrl-C in the middle of a long encode or decode over an existing output."""

import signal
import subprocess
import sys
import time

import pytest
import torch

from videovae import load_model
from videovae.io.latent_file import load_latents, save_latents
from videovae.io.video import tensor_to_frames, write_video

from helpers import photo_clip

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _names(d):
    return sorted(p.name for p in d.iterdir())


def test_help_is_fast_and_imports_no_torch(run_process):
    code = ("import sys\nfrom videovae import cli\ntry:\n    cli.main(['--help'])\n"
            "except SystemExit as e:\n    print('help-exit', e.code, file=sys.stderr)\n"
            "print('heavy', sorted(m for m in ('torch', 'diffusers', 'numpy') "
            "if m in sys.modules), file=sys.stderr)\n")
    res = run_process(code=code)
    assert "help-exit 0" in res.err and "heavy []" in res.err, res.err[-3000:]
    assert "encode" in res.out and "decode" in res.out, res.out
    res2 = run_process("--help")
    assert res2.rc == 0, res2.err
    assert max(res.seconds, res2.seconds) < 3, (res.seconds, res2.seconds)


def test_two_encodes_to_one_new_output_cannot_both_succeed(tmp_path, model_dir, clip,
                                                           start_process):
    d = tmp_path / "out"
    d.mkdir()
    out = d / "z.safetensors"
    procs = [start_process("encode", clip[0], "--model", model_dir, "--no-progress", "-o", out,
                           "--chunk-frames", "4") for _ in range(2)]
    results = []  # (exit code, stderr)
    for p in procs:
        err = p.communicate(timeout=300)[1]
        results.append((p.returncode, err))
    assert sorted(rc for rc, _ in results) == [0, 1], results
    loser = next(err for rc, err in results if rc != 0)
    line = next((ln for ln in loser.splitlines() if ": error: " in ln), "")
    assert "already exists" in line, loser
    assert load_latents(out)[1]["num_frames"] == 11  # a whole latent file
    assert _names(d) == ["z.safetensors"]  # no temporary left


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, model_dir, process_env):
    """An encode of a long clip and a decode of long latents, each over an existing output
    (--overwrite), started together; each gets SIGINT 0.3 s after its temporary appeared beside
    the output. Per command: its folder, the output, exit code and stderr."""
    d = tmp_path_factory.mktemp("interrupted")
    clip = d / "long.mp4"  # 400 frames of 64x64: long enough to be interrupted
    write_video(clip, tensor_to_frames(photo_clip(400, (64, 64), photo="astronaut", speed=1.0)),
                fps=10)
    lat = d / "long.safetensors"  # 100 latent frames: 397 frames of 64x64 once decoded
    z = torch.randn(4, 100, 8, 8, generator=torch.Generator().manual_seed(0))
    save_latents(lat, z, load_model(model_dir), num_frames=397, fps=10.0, height=64, width=64,
                 normalized=False)
    runs = {"encode": (["encode", clip, "--chunk-frames", "4"], "long.safetensors"),
            "decode": (["decode", lat, "--decode-chunk", "1"], "long.mp4")}
    state = {}
    for command, (args, name) in runs.items():
        (d / command).mkdir()
        out = d / command / name
        out.write_bytes(b"old output")
        proc = subprocess.Popen(
            [sys.executable, "-m", "videovae", *map(str, args), "--model", str(model_dir),
             "--no-progress", "-o", str(out), "--overwrite"], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env=process_env)
        state[command] = {"dir": d / command, "out": out, "proc": proc, "temp_seen": None,
                          "ran_on": None}
    try:
        deadline = time.time() + 180
        while time.time() < deadline and any(s["ran_on"] is None for s in state.values()):
            for s in state.values():
                if s["ran_on"] is not None:
                    continue
                if s["temp_seen"] is None:
                    if any(p.name.startswith(f".{s['out'].stem}.") for p in s["dir"].iterdir()):
                        s["temp_seen"] = time.time()
                    elif s["proc"].poll() is not None:
                        s["ran_on"] = False  # ended before its temporary was seen
                elif time.time() > s["temp_seen"] + 0.3:  # well into the work
                    s["ran_on"] = s["proc"].poll() is None
                    if s["ran_on"]:
                        s["proc"].send_signal(signal.SIGINT)
            time.sleep(0.01)
    finally:
        for s in state.values():
            if s["ran_on"] is None:
                s["proc"].kill()
            s["err"] = s["proc"].communicate(timeout=120)[1]
            s["rc"] = s["proc"].returncode
    return state


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_ctrl_c_over_an_existing_output_keeps_it_and_removes_the_temporary(interrupted,
                                                                           command):
    s = interrupted[command]
    assert s["temp_seen"] and s["ran_on"], f"ended before the signal: {s['err'][-3000:]}"
    assert s["rc"] == 130, s["err"][-3000:]
    assert s["err"].strip().splitlines()[-1] == "videovae: interrupted", s["err"][-3000:]
    assert "Traceback" not in s["err"], s["err"][-3000:]
    assert s["out"].read_bytes() == b"old output"
    assert _names(s["dir"]) == [s["out"].name]  # the temporary removed

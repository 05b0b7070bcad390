"""Fixtures of the reliability cases: bad inputs and operator faults met through the command line
(in this process, or as a real process where a case needs one), the Python API and the trainer.

A command's result is a `Run`; `Run.fails(...)` is the check every refused command must pass:
exit code 1, no traceback, exactly one `videovae <command>: error: ...` line on stderr (log
records, progress bars and FFmpeg/decord's own noise aside) matching every given pattern, no
output, and nothing left beside it (temporaries, partial files).
"""

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from videovae.cli import main as cli_main
from videovae.io.video import tensor_to_frames, write_video

from helpers import photo_clip

ROOT = Path(__file__).resolve().parents[2]  # this checkout; the subprocesses run it too

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
# a tqdm progress bar (drawn with \r, so a log line can follow it on the same line)
PROGRESS = re.compile(r"^[\w ]*:\s*\d+%\|[^|]*\|\s*\d+/\d+ \[[^\]]*\]")
# what FFmpeg and decord print to stderr from C in a subprocess ("[mov,mp4,... @ 0x...] moov
# atom not found", "[14:51:15] /github/.../video_reader.cc:83: ERROR opening ...")
NATIVE_NOISE = re.compile(r"^\[[^\]]*(@ 0x[0-9a-f]+|\d\d:\d\d:\d\d)\] ")
ERROR_LINE = re.compile(r"^videovae [\w-]+: error: ")


def _names(folder: Path, keep=()) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.name not in keep)


@dataclass
class Run:
    """A finished command: exit code, stdout, stderr and wall time."""
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        """stderr lines with progress bars taken out."""
        out = []
        for ln in self.err.splitlines():  # (splits at \r too)
            while PROGRESS.match(ln):
                ln = PROGRESS.sub("", ln, count=1)
            if ln.strip():  # (a cleared bar leaves spaces before the next line)
                out.append(ln.strip())
        return out

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.lines if ERROR_LINE.match(ln)]

    @property
    def other_lines(self) -> list[str]:
        """stderr lines that are neither log records, native decoder noise nor the error."""
        return [ln for ln in self.lines if not LOG_LINE.match(ln)
                and not NATIVE_NOISE.match(ln) and not ERROR_LINE.match(ln)]

    def ok(self) -> "Run":
        assert self.rc == 0, self.err[-3000:]
        return self

    def fails(self, *patterns: str, outputs=(), rc: int = 1, keep=()) -> str:
        """Exit code `rc` and one readable error line matching every regex (case-insensitive);
        no traceback; no output, and nothing but `keep` beside each output. Returns the line."""
        assert self.rc == rc, f"rc={self.rc} (expected {rc}): {self.err[-3000:]}"
        assert "Traceback" not in self.err, self.err[-3000:]
        assert len(self.error_lines) == 1, self.err[-3000:]
        assert not self.other_lines, self.other_lines
        line = self.error_lines[0]
        for pat in patterns:
            assert re.search(pat, line, re.IGNORECASE), f"/{pat}/ not in: {line}"
        for out in map(Path, outputs):
            assert not out.exists(), f"output left behind: {out}"
            if out.parent.is_dir():
                assert _names(out.parent, keep) == [], f"left beside the output: {line}"
        return line


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (as the subprocesses run): with models this small,
    more threads only add overhead, and a lot of it on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_video():
    """`make_video(path, frames, (height, width), fps=10, speed=2)`: a pan over a bundled photo,
    written as H.264; returns the path."""
    def make(path: Path, frames: int, size, fps=10.0, speed=2.0) -> Path:
        clip = photo_clip(frames, tuple(size), photo="astronaut", speed=speed)
        write_video(path, tensor_to_frames(clip), fps=fps)
        return path
    return make


@pytest.fixture
def run_cli(capsys):
    """Run `videovae ...` in this process: `run_cli("encode", path, ...)` -> Run."""
    def run(*args) -> Run:
        capsys.readouterr()
        start = time.perf_counter()
        rc = cli_main([str(a) for a in args])
        seconds = time.perf_counter() - start
        out, err = capsys.readouterr()
        return Run(rc, out, err, seconds)
    return run


@pytest.fixture(scope="session")
def process_env():
    """The environment of `python -m videovae` subprocesses: this checkout, one thread."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture
def run_process(process_env, tmp_path):
    """Run `python -m videovae ...` (or `python -c code ...`) as a process -> Run."""
    def run(*args, code: str | None = None, timeout=300, **kw) -> Run:
        head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "videovae"]
        start = time.perf_counter()
        p = subprocess.run([*head, *map(str, args)],
                           capture_output=True, text=True, env=process_env, cwd=tmp_path,
                           timeout=timeout, check=False, **kw)
        return Run(p.returncode, p.stdout, p.stderr, time.perf_counter() - start)
    return run


@pytest.fixture
def start_process(process_env, tmp_path):
    """Start `python -m videovae ...` (or `python -c code ...`) without waiting for it."""
    procs = []

    def start(*args, code: str | None = None) -> subprocess.Popen:
        head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "videovae"]
        p = subprocess.Popen([*head, *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=process_env, cwd=tmp_path)
        procs.append(p)
        return p

    yield start
    for p in procs:  # (a failed test's processes are not left running)
        if p.poll() is None:
            p.kill()
        p.communicate()


@pytest.fixture(scope="module")
def latent_file(tmp_path_factory, model_dir, clip):
    """The `clip` fixture's video encoded by the `model_dir` model."""
    from videovae import load_model
    from videovae.files import encode_file

    path = tmp_path_factory.mktemp("latents") / "clip.safetensors"
    encode_file(load_model(model_dir), clip[0], path, progress=False)
    return path

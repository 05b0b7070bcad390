"""`videovae extract`: shards + index, windows and buckets, resume after a kill, the latent
dataset, and a 2-process run that is bit-identical to a 1-process one."""

import json
import os
import subprocess
import sys

import pytest
import torch

from videovae.cli import main as cli
from videovae.data import LatentDataset
from videovae.extract import ExtractOptions, Extractor, frame_ranges, nearest_bucket, run_extract
from videovae.io.video import VideoReader, frames_to_tensor
from videovae.latents import normalize_latents

from helpers import TOL, launch_processes, tiny_vae, write_media

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_media(root)  # 2 images, 2 videos of 12 frames (40x48), 1 corrupt video
    return root


def _files(out):
    """Every output file except the summary (which names the process count): bytes by path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "summary.json"}


def _extract(model, data, out, **opts):
    return run_extract(model, data, out, ExtractOptions(**opts), progress=False)


def test_frame_ranges_and_buckets():
    opts = ExtractOptions(window_frames=5, window_stride=4)
    assert frame_ranges(12, opts) == [(0, 5), (4, 9)]
    assert frame_ranges(4, opts) == []
    assert frame_ranges(40, ExtractOptions(frame_buckets=[17, 33, 65])) == [(0, 33)]
    assert frame_ranges(7, ExtractOptions()) == [(0, 7)]
    assert nearest_bucket(40, 48, [(16, 32), (32, 16)]) == (16, 32)
    assert nearest_bucket(48, 40, [(16, 32), (32, 16)]) == (32, 16)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        ExtractOptions(window_frames=6).check(4)


def test_windows_index_dataset_and_encode_agree(tmp_path, media, model_dir):
    out = tmp_path / "out"
    summary = _extract(model_dir, media, out, window_frames=5, window_stride=4, moments=True,
                       shard_items=2)
    # 2 videos x 2 windows; the images are shorter than a window and the corrupt file fails
    assert summary["seconds"] > 0 and {k: v for k, v in summary.items() if k != "seconds"} == {
        "items": 5, "failed_items": 3, "windows": 4, "frames": 20, "shards": 3, "processes": 1}
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["source"].split("/")[-1] for f in failures] == ["i0.png", "i1.png", "broken.mp4"]
    assert "cannot read" in failures[2]["error"]
    ds = LatentDataset(out)
    assert len(ds) == 4 and [(r["item"], r["start"]) for r in ds.rows] == [
        (3, 0), (3, 4), (4, 0), (4, 4)]
    vae = tiny_vae(seed=5)
    for i in range(len(ds)):
        item = ds[i]
        frames = VideoReader(item["source"]).read_frames(list(range(item["start"],
                                                                   item["stop"])))
        with torch.no_grad():
            post = vae.encode(frames_to_tensor(frames)).latent_dist
        assert list(item["latents"].shape) == item["latent_shape"] == [4, 2, 5, 6]
        assert (item["latents"] - post.mean[0]).abs().max() <= TOL
        assert (item["std"] - post.std[0]).abs().max() <= TOL
    # the index lists every tensor of every shard, and nothing else
    from safetensors import safe_open

    keys = set()
    for shard in sorted((out / "shards").glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            keys |= {f"{shard.name}:{k}" for k in f.keys()}
    listed = {f"{r['shard'].split('/')[-1]}:{r['key']}/{t}" for r in ds.rows
              for t in ("latents", "std")}
    assert keys == listed
    # sampling draws from the posterior, reproducibly
    a, b = LatentDataset(out, sample=True)[0], LatentDataset(out, sample=True)[0]
    assert torch.equal(a["latents"], b["latents"])
    assert not torch.equal(a["latents"], ds[0]["latents"])


def test_buckets_and_normalized_latents(tmp_path, media):
    model = tmp_path / "model"
    tiny_vae(seed=5, latents_mean=[0.1, -0.2, 0.3, 0.0],
             latents_std=[2.0, 0.5, 1.0, 4.0]).save_pretrained(model)
    raw, norm = tmp_path / "raw", tmp_path / "norm"
    for out, normalize in ((raw, False), (norm, True)):
        _extract(model, media / "videos", out, frame_buckets=[5, 9], sizes=[(16, 32), (32, 16)],
                 normalize=normalize, moments=True)
    r, n = LatentDataset(raw)[0], LatentDataset(norm)[0]
    assert (r["height"], r["width"], r["num_frames"]) == (16, 32, 9)
    assert r["latent_shape"] == [4, 3, 2, 4] and n["normalized"] and not r["normalized"]
    vae = tiny_vae(seed=5, latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[2.0, 0.5, 1.0, 4.0])
    expect = normalize_latents(r["latents"][None], vae.config)[0]
    assert (n["latents"] - expect).abs().max() <= TOL
    # the std scales by the normalization's gain, scaling_factor / latents_std
    scale = vae.config.scaling_factor / torch.tensor([2.0, 0.5, 1.0, 4.0]).view(4, 1, 1, 1)
    assert (n["std"] - r["std"] * scale).abs().max() <= TOL


def test_killed_run_resumes_to_the_same_output(tmp_path, media, model_dir, monkeypatch):
    clean = tmp_path / "clean"
    _extract(model_dir, media, clean, shard_items=1)
    out = tmp_path / "killed"
    real = Extractor.run_shard

    def dies_at_shard_3(self, k):
        if k == 3:
            raise KeyboardInterrupt  # a kill while shard 3 is being encoded
        return real(self, k)

    monkeypatch.setattr(Extractor, "run_shard", dies_at_shard_3)
    with pytest.raises(KeyboardInterrupt):
        _extract(model_dir, media, out, shard_items=1)
    monkeypatch.undo()
    done = sorted(p.name for p in (out / "shards").glob("*.jsonl")
                  if not p.name.endswith("failures.jsonl"))
    assert done == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
    assert not (out / "index.jsonl").exists()
    # a shard whose tensors were written but whose index was not is incomplete: redone
    (out / "shards" / "shard-00004.safetensors").write_bytes(b"half-written")
    calls = []
    monkeypatch.setattr(Extractor, "run_shard",
                        lambda self, k: calls.append(k) or real(self, k))
    _extract(model_dir, media, out, shard_items=1)
    assert calls == [3, 4]  # complete shards were skipped
    assert _files(out) == _files(clean)
    # resuming with other options is refused
    with pytest.raises(ValueError, match="other options \\(shard_items 1 -> 2\\)"):
        _extract(model_dir, media, out, shard_items=2)


def test_nothing_readable_is_an_error(tmp_path, model_dir, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.mp4").write_text("not a video")
    rc = cli(["extract", "--model", str(model_dir), "--data", str(tmp_path / "data"), "-o",
              str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("videovae extract: error: nothing could be read")
    failures = (tmp_path / "out" / "failures.jsonl").read_text()
    assert "a.mp4" in failures and "cannot read" in failures


@pytest.mark.slow
def test_two_processes_give_the_same_bytes_as_one(tmp_path, media, model_dir):
    args = ["-m", "videovae", "extract", "--model", str(model_dir), "--data", str(media),
            "--shard-items", "1", "--moments", "--window-frames", "5", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "-o", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*launch_processes(2), *args, "-o", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    a, b = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert len([k for k in a if k.endswith(".safetensors")]) == 2  # the two readable videos
    assert a == b


def test_threads_option_fixes_torch_threads_and_refuses_zero(tmp_path, media, model_dir, capsys):
    """`--threads N` reaches `run_extract` (the same N gives the same bytes on any process
    count); a count below 1 is refused before any work."""
    args = ["extract", "--model", str(model_dir), "--data", str(media / "videos"),
            "--no-progress", "--window-frames", "5"]
    assert cli([*args, "-o", str(tmp_path / "bad"), "--threads", "0"]) == 1
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    before = torch.get_num_threads()
    try:
        assert cli([*args, "-o", str(tmp_path / "one"), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "one" / "index.jsonl").is_file()

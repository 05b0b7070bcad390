"""Data sets and extraction (issue 19): resuming `extract` with changed inputs (E11-E13) or under
another name of the same data folder, the process and thread count, shard paths of a latent data
set (G09), CSV/JSONL manifests (E01, E04), and `learnability`'s latents folder, output names,
model names and clip count (H02, H05, H06)."""

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from videovae.data import LatentDataset
from videovae.errors import VideoVAEError
from videovae.extract import (
    ExtractOptions,
    Extractor,
    run_extract,
    shard_count,
    shard_range,
    torch_threads,
)
from videovae.io.listing import list_files
from videovae.learnability import ProbeConfig
from videovae.learnability import run as learn_run
from videovae.weights import default_model_dir

from helpers import launch_processes, tiny_vae

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state", "one_thread")

PROBE = ProbeConfig(steps=2, batch_size=2, width=16, depth=1, heads=2, eval_every=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, make_video):
    """Six 5-frame 24x32 videos."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(6):
        make_video(root / f"v{i}.mp4", 5, (24, 32), speed=1.0 + i)
    return root


@pytest.fixture
def data(tmp_path, videos):
    """A copy of `videos` that a test may change: tmp_path/data."""
    return shutil.copytree(videos, tmp_path / "data")


def _extract(model, data, out, threads=None, **opts):
    opts = {"shard_items": 1, **opts}
    return run_extract(model, data, out, ExtractOptions(**opts), threads=threads, progress=False)


def _killed_extract(monkeypatch, model, data, out, at_shard=2):
    """An extraction killed while encoding shard `at_shard` (shards before it are complete)."""
    real = Extractor.run_shard

    def dies(self, k):
        if k == at_shard:
            raise KeyboardInterrupt
        return real(self, k)

    with monkeypatch.context() as m:
        m.setattr(Extractor, "run_shard", dies)
        with pytest.raises(KeyboardInterrupt):
            _extract(model, data, out)


def _files(out):
    """Every output file but the summary (which names the process count and time): bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "summary.json"}


# ---------------------------------------------------------------------------------------------
# E11, E12, E13: a resume with changed inputs is refused in one line; nothing is written


@pytest.mark.parametrize("case, change, pattern", [
    ("E13", "add a file", r"other data \(7 files now, 6 when it started\)"),
    ("E13", "replace a file", r"other data \(the same number of files, but other names"),
    ("E11", "other weights", r"other model weights \(weights hash [0-9a-f]{16}, now [0-9a-f]{16}"),
    ("E12", "--dtype bf16", r"another dtype \(float32 -> bfloat16\)"),
    ("E12", "--tile 16", r"another tiling \(none -> tile 16 overlap 0\)"),
])
def test_resume_with_changed_inputs_is_refused(case, change, pattern, tmp_path, data, model_dir,
                                               monkeypatch, run_cli):
    out = tmp_path / "ex"
    _killed_extract(monkeypatch, model_dir, data, out)
    model, extra = model_dir, []
    if change == "add a file":  # its name sorts first: every later item would shift
        shutil.copy(data / "v5.mp4", data / "a_new.mp4")
    elif change == "replace a file":
        (data / "v1.mp4").unlink()
        shutil.copy(data / "v5.mp4", data / "v1b.mp4")
    elif change == "other weights":  # the same config, other weights
        model = tmp_path / "other"
        tiny_vae(seed=6).save_pretrained(model)
    else:
        extra = change.split()
    before = _files(out)
    run_cli("extract", "--model", model, "--data", data, "-o", out, "--shard-items", "1",
            "--no-progress", *extra).fails(pattern, r"resume with the same model")
    assert _files(out) == before  # nothing was added to the mixed-up folder


@pytest.mark.parametrize("first, then", [("data", "./data/"), ("data", "ABS"), ("ABS", "data")])
def test_resume_under_another_name_of_the_data_folder(first, then, tmp_path, data, model_dir,
                                                      monkeypatch):
    """E13's other half: `data`, `./data/` and the absolute path are one data set."""
    monkeypatch.chdir(tmp_path)
    spell = {"data": "data", "./data/": "./data/", "ABS": str(data)}
    _extract(model_dir, spell[first], tmp_path / "clean")
    out = tmp_path / "ex"
    _killed_extract(monkeypatch, model_dir, spell[first], out)
    summary = _extract(model_dir, spell[then], out)
    assert summary["items"] == 6 and summary["windows"] == 6
    assert _files(out) == _files(tmp_path / "clean")


# ---------------------------------------------------------------------------------------------
# Process and thread count: every process has work; the tolerance of the README; fixed threads


@pytest.mark.parametrize("files, shard_items, processes, sizes", [
    (2, 16, 2, [1, 1]),  # was one shard: the second process idled
    (16, 16, 2, [8, 8]),
    (17, 16, 2, [8, 9]),
    (5, 16, 4, [1, 1, 1, 2]),
    (3, 16, 8, [1, 1, 1]),  # fewer files than processes: one each
    (40, 16, 1, [13, 13, 14]),  # at most shard_items each
    (6, 1, 1, [1] * 6),
])
def test_every_process_has_work(files, shard_items, processes, sizes):
    n = shard_count(files, shard_items, processes)
    got = [len(shard_range(k, files, n)) for k in range(n)]
    assert got == sizes and sum(got) == files
    assert [i for k in range(n) for i in shard_range(k, files, n)] == list(range(files))
    busy = {k % processes for k in range(n)}
    assert len(busy) == min(files, processes)


class _FakeAccelerator:
    """Rank 0 of `num_processes`, as far as the shard layout is concerned."""
    is_main_process, process_index, device = True, 0, torch.device("cpu")

    def __init__(self, num_processes):
        self.num_processes = num_processes

    def wait_for_everyone(self):
        pass


def test_shard_layout_is_fixed_by_the_first_run(tmp_path, videos, model_dir):
    """A run on 2 processes (6 files, --shard-items 16: 2 shards) resumed on 1 continues the
    layout of the first run."""
    from videovae import load_model

    out = tmp_path / "ex"
    first = Extractor(load_model(model_dir), videos, out, ExtractOptions(), _FakeAccelerator(2))
    first.prepare_output()
    assert first.num_shards == 2 and json.loads((out / "meta.json").read_text())[
        "num_shards"] == 2
    summary = _extract(model_dir, videos, out, shard_items=16)
    assert summary["shards"] == 2 and summary["windows"] == 6
    rows = LatentDataset(out).rows
    assert [r["shard"] for r in rows] == ["shards/shard-00000.safetensors"] * 3 + [
        "shards/shard-00001.safetensors"] * 3


def test_latents_agree_across_thread_counts_and_fixed_threads_give_equal_bytes(
        tmp_path, make_video, model_dir):
    """The README's promise: other thread counts agree to 1e-5 (SiLU's vectorized loop rounds
    differently where a thread's share ends); the same `threads` gives identical bytes."""
    data = tmp_path / "data"
    data.mkdir()
    make_video(data / "a.mp4", 9, (64, 64))
    for name, ambient, threads in (("one", 1, None), ("three", 3, None), ("fixed", 3, 1)):
        with torch_threads(ambient):
            _extract(model_dir, data, tmp_path / name, threads=threads)
            assert torch.get_num_threads() == ambient  # (restored after the run)
    z = {name: LatentDataset(tmp_path / name)[0]["latents"] for name in ("one", "three", "fixed")}
    assert (z["three"] - z["one"]).abs().max() <= 1e-5
    assert _files(tmp_path / "fixed") == _files(tmp_path / "one")


@pytest.mark.slow
def test_two_processes_share_a_small_folder_and_agree_with_one(tmp_path, videos, model_dir,
                                                               process_env):
    """3 files with the default --shard-items 16: 2 shards, one per process; the latents agree
    with a 1-process run on 2 threads within the README's tolerance."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        shutil.copy(videos / f"v{i}.mp4", data)
    args = ["-m", "videovae", "extract", "--model", str(model_dir), "--data", str(data),
            "--no-progress"]
    one = subprocess.run([sys.executable, *args, "-o", str(tmp_path / "one")],
                         env={**process_env, "OMP_NUM_THREADS": "2"}, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*launch_processes(2), *args, "-o", str(tmp_path / "two")],
                         env=process_env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["shards"] == 2
    a, b = LatentDataset(tmp_path / "one"), LatentDataset(tmp_path / "two")
    assert [r["source"] for r in a.rows] == [r["source"] for r in b.rows]
    assert sorted({r["shard"] for r in b.rows}) == ["shards/shard-00000.safetensors",
                                                    "shards/shard-00001.safetensors"]
    for i in range(len(a)):
        assert (a[i]["latents"] - b[i]["latents"]).abs().max() <= 1e-5


# ---------------------------------------------------------------------------------------------
# G09: shards are read only inside the data set folder


def _dataset(tmp_path, shard: str):
    ds, secret = tmp_path / "ds", tmp_path / "secret"
    (ds / "shards").mkdir(parents=True)
    secret.mkdir()
    for folder in (ds / "shards", secret):
        save_file({"k/latents": torch.full((1, 1, 1, 1), 42.0)}, str(folder / "x.safetensors"))
    os.symlink(secret / "x.safetensors", ds / "shards" / "link.safetensors")
    os.symlink(secret, ds / "linked_folder")
    (ds / "meta.json").write_text("{}")
    shard = shard.replace("SECRET", str(secret))
    (ds / "index.jsonl").write_text(json.dumps({"shard": shard, "key": "k", "has_std": False}))
    return ds


@pytest.mark.parametrize("shard", ["../secret/x.safetensors", "SECRET/x.safetensors",
                                   "shards/link.safetensors", "linked_folder/x.safetensors",
                                   "shards/../../secret/x.safetensors"])
def test_latent_dataset_refuses_shards_outside_its_folder(shard, tmp_path):
    ds = _dataset(tmp_path, shard)
    with pytest.raises(VideoVAEError, match=r"index.jsonl:1: shard .* lies outside the data set "
                                            r"folder"):
        LatentDataset(ds)[0]


def test_latent_dataset_reads_shards_inside_its_folder(tmp_path):
    ds = _dataset(tmp_path, "shards/x.safetensors")
    link = tmp_path / "ds_link"  # the folder itself may be reached through a link
    os.symlink(ds, link)
    assert LatentDataset(link)[0]["latents"].item() == 42.0


# ---------------------------------------------------------------------------------------------
# E01, E04: manifests


@pytest.mark.parametrize("name, text", [
    ("bom", "\ufeffpath\nv0.mp4\n"),  # Excel's "CSV UTF-8"
    ("upper", "Path,label\nv0.mp4,x\n"),
    ("spaces", " path ,label\nv0.mp4,x\n"),
])
def test_csv_manifest_headers_accepted(name, text, tmp_path, videos):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text, encoding="utf-8")
    shutil.copy(videos / "v0.mp4", tmp_path)
    assert list_files(manifest) == [tmp_path / "v0.mp4"]


@pytest.mark.parametrize("text, patterns", [
    ("file\nv0.mp4\n", [r"needs a 'path' column; found 'file'"]),
    ("path;label\nv0.mp4;x\n", [r"found 'path;label'", "separated by commas"]),
    ("\ufeffname,size\nv0.mp4,1\n", [r"found 'name', 'size'"]),
])
def test_csv_manifest_without_path_column_says_what_it_found(text, patterns, tmp_path,
                                                             model_dir, run_cli):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text, encoding="utf-8")
    out = tmp_path / "out" / "ex"
    out.parent.mkdir()
    run_cli("extract", "--model", model_dir, "--data", manifest, "-o", out,
            "--no-progress").fails(str(manifest.name), *patterns, outputs=[out])


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_manifest_paths_are_relative_to_the_manifest_and_the_index_opens_anywhere(
        kind, tmp_path, videos, model_dir, monkeypatch, run_cli):
    """E04: run from elsewhere/deep with --data ../../ds/m.jsonl -o ../outs/run1."""
    ds = tmp_path / "ds"
    (ds / "clips").mkdir(parents=True)
    shutil.copy(videos / "v0.mp4", ds / "clips" / "a.mp4")
    if kind == "jsonl":
        (ds / "m.jsonl").write_text(json.dumps({"path": "clips/a.mp4"}) + "\n")
    else:
        (ds / "m.csv").write_text("\ufeffpath\nclips/a.mp4\n", encoding="utf-8")
    deep = tmp_path / "elsewhere" / "deep"
    deep.mkdir(parents=True)
    (tmp_path / "elsewhere" / "outs").mkdir()
    monkeypatch.chdir(deep)
    run_cli("extract", "--model", model_dir, "--data", f"../../ds/m.{kind}", "-o",
            "../outs/run1", "--no-progress").ok()
    monkeypatch.chdir(tmp_path)  # the index is read from anywhere
    rows = LatentDataset(tmp_path / "elsewhere" / "outs" / "run1").rows
    assert [r["source"] for r in rows] == [str(ds / "clips" / "a.mp4")]
    assert os.path.isabs(rows[0]["source"]) and os.path.isfile(rows[0]["source"])


# ---------------------------------------------------------------------------------------------
# H02, H05, H06 and the new user's findings: learnability


@pytest.fixture(scope="module")
def clips_data(tmp_path_factory, make_video):
    """Two 12-frame videos: 4 clips of 5 frames."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(2):
        make_video(root / f"c{i}.mp4", 12, (40, 48), speed=1.0 + i)
    return root


def _learn(models, data, out, **kw):
    return learn_run.learnability([str(m) for m in models], data, out, PROBE, frames=5,
                                  resolution=32, progress=False, **kw)


def test_learnability_of_dotdot_writes_only_its_outputs(tmp_path, clips_data, monkeypatch,
                                                        caplog):
    """H06: `--model ..` from the model's samples/ folder: the latents folder is not named
    after '..', so the user's files there stay; the model is named after its folder; fewer
    clips than asked (64) are said in the log, the report and the table."""
    model = tmp_path / "mymodel"
    tiny_vae(seed=5).save_pretrained(model)
    samples = model / "samples"
    samples.mkdir()
    mine = {n: f"mine {n}" for n in ("index.jsonl", "summary.json", "meta.json")}
    for n, text in mine.items():
        (samples / n).write_text(text)
    monkeypatch.chdir(samples)
    with caplog.at_level(logging.WARNING, logger="videovae"):
        report = _learn([".."], clips_data, "learn.json")
    assert {n: (samples / n).read_text() for n in mine} == mine
    assert sorted(p.name for p in samples.iterdir()) == sorted(
        [*mine, "learn.json", "learn.md", "learn.png", "learn_latents"])
    (name, r), = report["models"].items()
    assert name == "mymodel"
    assert (r["clips_asked"], r["clips_used"]) == (64, 4)
    assert "4 clips used of the 64 asked" in (samples / "learn.md").read_text()
    assert any("fewer than the 64 asked" in rec.getMessage() for rec in caplog.records)


def test_learnability_keys_latents_by_the_model_not_its_folder_name(tmp_path, clips_data):
    """H02: v1/final, then v2/final (same config, other weights) into the same report."""
    for v, seed in (("v1", 5), ("v2", 6)):
        tiny_vae(seed=seed).save_pretrained(tmp_path / v / "final")
    out = tmp_path / "learn.json"
    r1 = _learn([tmp_path / "v1" / "final"], clips_data, out, clips=4)["models"]["final"]
    r2 = _learn([tmp_path / "v2" / "final"], clips_data, out, clips=4,
                overwrite=True)["models"]["final"]
    assert r1["latents"] != r2["latents"]
    assert r1["latents_mean"] != r2["latents_mean"]
    again = _learn([tmp_path / "v1" / "final"], clips_data, out, clips=4,
                   overwrite=True)["models"]["final"]
    assert again["latents"] == r1["latents"]  # the same model reuses its own latents
    assert again["latents_mean"] == r1["latents_mean"]


@pytest.mark.parametrize("out, existing, error", [
    ("learn.md", [], "name the report .json"),
    ("learn.png", [], "name the report .json"),
    ("learn.json", ["learn.json"], "already exists"),
    ("learn.json", ["learn.md"], "already exists"),
    ("learn.json", ["learn_latents"], "is a file"),
    ("missing/learn.json", [], "does not exist"),
])
def test_learnability_checks_every_output_name_before_any_work(out, existing, error, tmp_path,
                                                               model_dir, monkeypatch):
    """H05: `-o learn.md` did all the work, then failed after writing JSON into learn.md."""
    monkeypatch.chdir(tmp_path)
    for name in existing:
        (tmp_path / name).write_text("mine")

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output names were checked")

    monkeypatch.setattr(learn_run, "probe_model", no_work)
    with pytest.raises((VideoVAEError, OSError), match=error):
        _learn([model_dir], tmp_path, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(existing)
    assert all((tmp_path / n).read_text() == "mine" for n in existing)


def test_learnability_names_shipped_models_by_their_name(tmp_path, monkeypatch):
    """`--model default` was labelled "cv" (its folder's name); `..` was labelled '..'."""
    (tmp_path / "v1" / "final").mkdir(parents=True)
    (tmp_path / "v2" / "final" / "samples").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "v2" / "final" / "samples")
    shipped = default_model_dir("default")
    assert learn_run._names([str(shipped), "default", str(tmp_path / "v1" / "final"), ".."]) \
        == ["default", "default-2", "final", "final-2"]

"""Outputs that could destroy an input or each other, options out of range, inputs checked before
the model loads, and latent files that must not be decoded wrongly (issue 19: items 2, 6, 7, 8,
18, 23, "Also" and the new user's findings; case ids of reliability_probe_turn3.md in comments).

Refusals that must come before any work run with every command function replaced by one that
fails the test: the refusal then provably comes from the checks before the model loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videovae import cli
from videovae.data.synthetic import load_photo, pan_zoom_clip
from videovae.errors import VideoVAEError
from videovae.io.latent_file import load_latents, read_latent_metadata, weights_hash
from videovae.io.video import VideoReader, write_video

from helpers import tiny_image_vae, tiny_vae, write_media

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny model, the same architecture with other weights, a clip and its latents."""
    d = tmp_path_factory.mktemp("work")
    tiny_vae(seed=5).save_pretrained(d / "m")
    tiny_vae(seed=6).save_pretrained(d / "other")
    write_video(d / "clip.mp4", pan_zoom_clip(load_photo("astronaut"), 9, (32, 32)), fps=10)
    assert cli.main(["encode", str(d / "clip.mp4"), "--model", str(d / "m"), "-o",
                     str(d / "z.safetensors"), "--no-progress"]) == 0
    return d


@pytest.fixture
def no_work(monkeypatch):
    """Every command's work replaced by a failure: what is refused is refused up front."""
    def started(args):
        raise AssertionError(f"{args.command} started its work")

    for name in dir(cli):
        if name.startswith("cmd_"):
            monkeypatch.setattr(cli, name, started)


def snapshot(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def refused(capsys, args, needle, root=None):
    """The command fails with one error line holding `needle`; nothing under `root` changed."""
    before = snapshot(root) if root else None
    assert cli.main([str(a) for a in args]) == 1
    line = one_error(capsys)
    assert needle in line, line
    if root:
        assert snapshot(root) == before
    return line


# ----------------------------------------------------------------------------------------------
# item 2 (B02, B03, B04): no output is an input or another output, for every command


@pytest.fixture
def scene(tmp_path, work):
    """A folder with a model, an image VAE, data (folder and manifest), a clip, its latents,
    a symlink and a hard link to the clip."""
    import shutil

    shutil.copytree(work / "m", tmp_path / "m")
    tiny_image_vae().save_pretrained(tmp_path / "img")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(work / "clip.mp4", data / name)
    (tmp_path / "list.jsonl").write_text('{"path": "data/a.mp4"}\n')
    shutil.copy(work / "clip.mp4", tmp_path / "clip.mp4")
    shutil.copy(work / "clip.mp4", tmp_path / "rec_side_by_side.mp4")
    shutil.copy(work / "z.safetensors", tmp_path / "z.safetensors")
    (tmp_path / "link.mp4").symlink_to(tmp_path / "clip.mp4")
    os.link(tmp_path / "clip.mp4", tmp_path / "hard.mp4")
    (tmp_path / "zlink.mp4").symlink_to("z.safetensors")
    (tmp_path / "out.mp4").write_bytes(b"keep")
    return tmp_path


SAME = "are the same file"
COLLISIONS = [  # (case, arguments (in the scene folder), what the one error line says)
    ("B02 reconstruct -o input", "reconstruct clip.mp4 -o clip.mp4", "-o) is the input video"),
    ("B04 side-by-side = input", "reconstruct rec_side_by_side.mp4 -o rec.mp4 --side-by-side",
     "(the side-by-side video of -o) is the input video rec_side_by_side.mp4"),
    ("B03 -o = --metrics", "reconstruct clip.mp4 -o out.mp4 --metrics out.mp4", SAME),
    ("hard link", "reconstruct clip.mp4 -o hard.mp4", "is the input video clip.mp4 (the same"),
    ("symlink to the input", "reconstruct link.mp4 -o clip.mp4", "is the input video link.mp4"),
    ("decode onto its latents", "decode z.safetensors -o zlink.mp4", "is the latent file"),
    ("encode onto the weights", "encode clip.mp4 -o m/diffusion_pytorch_model.safetensors",
     "is the model file"),
    ("eval onto a data file", "eval --data data -o data/a.mp4", "is the data file data/a.mp4"),
    ("eval onto the manifest", "eval --data list.jsonl -o list.jsonl", "is the --data"),
    ("latent-stats onto the config", "latent-stats --data data -o m/config.json",
     "is the model file"),
    ("latent-stats -o = --write", "latent-stats --data data -o m/config.json --write", SAME),
    ("extract into the data folder", "extract --data data -o data", "is the --data data"),
    ("H05 learnability -o learn.md", "learnability --data data -o learn.md", SAME),
    ("learnability onto the config", "learnability --data data -o m/config.json",
     "is the model file"),
    ("inflate onto its image VAE", "inflate --image-vae img -o img", "is the --image-vae img"),
]


@pytest.mark.parametrize("case, args, needle", COLLISIONS, ids=[c[0] for c in COLLISIONS])
def test_no_output_is_an_input_or_another_output(scene, no_work, capsys, monkeypatch, case,
                                                 args, needle):
    monkeypatch.chdir(scene)
    args = args.split() + ["--overwrite"] * (args.split()[0] != "extract")
    if args[0] not in ("inflate",):
        args += ["--model", "m"]
    refused(capsys, args, needle, root=scene)


def test_the_file_api_refuses_the_same(tmp_path, work):
    """encode_file / decode_file / reconstruct_file / evaluate_files check it themselves."""
    from videovae import load_model
    from videovae.files import decode_file, encode_file, evaluate_files, reconstruct_file

    vae = load_model(work / "m")
    clip = tmp_path / "x_side_by_side.mp4"
    clip.write_bytes((work / "clip.mp4").read_bytes())
    (tmp_path / "z.safetensors").symlink_to(clip)
    (tmp_path / "zlink.mp4").symlink_to(work / "z.safetensors")
    before = snapshot(tmp_path)
    calls = [
        lambda: encode_file(vae, clip, tmp_path / "z.safetensors", overwrite=True),
        lambda: decode_file(vae, work / "z.safetensors", tmp_path / "zlink.mp4", overwrite=True),
        lambda: reconstruct_file(vae, clip, tmp_path / "x.mp4", side_by_side=True,
                                 overwrite=True),
        lambda: reconstruct_file(vae, clip, tmp_path / "r.mp4", metrics_path=tmp_path / "r.mp4"),
        lambda: evaluate_files(vae, tmp_path, clip, overwrite=True),
    ]
    for call in calls:
        with pytest.raises(VideoVAEError, match="is the (input video|latent file|input)|same f"):
            call()
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------------------------
# item 8 (H01) and the new user's output-folder rule: outputs are checked before any work


def test_latent_stats_keeps_an_existing_file_unless_overwrite(scene, no_work, capsys):  # H01
    video = scene / "my_video.mp4"
    video.write_bytes(b"the user's video")
    m = ["--model", scene / "m", "--data", scene / "data", "--clips", 2, "--num-frames", 5,
         "--resolution", 32]
    refused(capsys, ["latent-stats", *m, "-o", video], f"{video} already exists (pass "
            "--overwrite", root=scene)
    refused(capsys, ["latent-stats", *m, "-o", scene / "nope" / "s.json"],
            "output directory does not exist", root=scene)


MISSING_FOLDER = [  # every command refuses an output whose folder does not exist, up front
    "encode clip.mp4 -o nope/z.safetensors", "decode z.safetensors -o nope/x.mp4",
    "reconstruct clip.mp4 -o nope/x.mp4", "reconstruct clip.mp4 -o x.mp4 --metrics nope/m.json",
    "eval --data data -o nope/r.json", "latent-stats --data data -o nope/s.json",
    "extract --data data -o nope/ex", "learnability --data data -o nope/l.json",
    "inflate --image-vae img -o nope/v", "demo -o nope/demo",
]


@pytest.mark.parametrize("args", MISSING_FOLDER, ids=[a.split()[0] + "-" + a.split()[-1]
                                                      for a in MISSING_FOLDER])
def test_a_missing_output_folder_is_refused_before_any_work(scene, no_work, capsys, monkeypatch,
                                                            args):
    monkeypatch.chdir(scene)
    args = args.split()
    if args[0] not in ("inflate", "demo"):
        args += ["--model", "m"]
    refused(capsys, args, "output directory does not exist: nope", root=scene)
    assert not (scene / "nope").exists()


# ----------------------------------------------------------------------------------------------
# "Also" (G05, G07, G08, G12): options out of range are refused in one line naming them


RANGES = [
    ("G07 max-files -1", "eval --data data --max-files -1", "--max-files must be >= 1, got -1"),
    ("G07 max-files 0", "eval --data data --max-files 0", "--max-files must be >= 1, got 0"),
    ("G08 clips 0", "latent-stats --data data --clips 0 -o s.json", "--clips must be >= 1"),
    ("G05 crf 99", "decode z.safetensors -o x.mp4 --crf 99", "--crf must be in 0..51"),
    ("G05 crf -1", "reconstruct clip.mp4 -o x.mp4 --crf -1", "--crf must be in 0..51"),
    ("G05 tile -8", "encode clip.mp4 -o e.safetensors --tile -8", "--tile must be >= 1"),
    ("overlap without tile", "encode clip.mp4 -o e.safetensors --tile-overlap 8",
     "--tile-overlap needs --tile"),
    ("decode-chunk 0", "decode z.safetensors -o x.mp4 --decode-chunk 0",
     "--decode-chunk must be >= 1"),
    ("shard-items 0", "extract --data data -o ex --shard-items 0", "--shard-items must be >= 1"),
    ("learnability clips 0", "learnability --data data -o l.json --clips 0",
     "--clips must be >= 1"),
]


@pytest.mark.parametrize("case, args, needle", RANGES, ids=[c[0] for c in RANGES])
def test_options_out_of_range_are_refused_up_front(scene, no_work, capsys, monkeypatch, case,
                                                   args, needle):
    monkeypatch.chdir(scene)
    refused(capsys, args.split() + ["--model", "m"], needle, root=scene)


def test_evaluate_files_refuses_max_files_below_one(work):
    from videovae.files import evaluate_files

    with pytest.raises(VideoVAEError, match="--max-files must be >= 1, got -1"):
        evaluate_files(tiny_vae(), work, max_files=-1)


def test_tile_sizes_and_the_default_overlap(tmp_path, work, capsys):  # G05, G12
    from videovae.files import default_tile_overlap

    assert [default_tile_overlap(t, 8) for t in (512, 256, 64, 32, 16)] == [64, 64, 16, 8, 0]
    m = ["--model", work / "m", "--no-progress"]
    clip = work / "clip.mp4"
    # a tile of 32 without --tile-overlap works (before: 'tile_sample_overlap must be in ...')
    assert cli.main([str(a) for a in ["encode", clip, *m, "-o", tmp_path / "t.safetensors",
                                      "--tile", 32]]) == 0
    z, _ = load_latents(tmp_path / "t.safetensors")
    plain, _ = load_latents(work / "z.safetensors")
    assert (z - plain).abs().max() < 0.05  # tiles blend; the latents stay those of the clip
    refused(capsys, ["encode", clip, *m, "-o", tmp_path / "u.safetensors", "--tile", 20],
            "--tile must be a positive multiple of 8 pixels (this model's spatial ratio), got 20")
    refused(capsys, ["encode", clip, *m, "-o", tmp_path / "u.safetensors", "--tile", 32,
                     "--tile-overlap", 32],
            "--tile-overlap must be a multiple of 8 pixels in 0..24 (below --tile 32), got 32")


def test_extract_takes_small_tiles_and_a_tile_overlap(tmp_path, work):  # G12
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.mp4").write_bytes((work / "clip.mp4").read_bytes())
    for i, extra in enumerate(([], ["--tile-overlap", "16"])):
        out = tmp_path / f"ex{i}"
        assert cli.main(["extract", "--model", str(work / "m"), "--data", str(data), "-o",
                         str(out), "--tile", "32", "--no-progress", *extra]) == 0
        assert (out / "index.jsonl").read_text().count("\n") == 1


# ----------------------------------------------------------------------------------------------
# the new user's unreadable input: inputs are checked before the model loads


@pytest.fixture
def wheel(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "pkg.whl", "w") as z:
        z.writestr("pkg/__init__.py", "x = 1\n" * 100)
    return tmp_path / "pkg.whl"


@pytest.mark.parametrize("kind, needle", [
    ("wheel renamed", "cannot read {path} as a video: invalid data"),
    ("wheel", "cannot read {path} as a video (.whl is not a known video or image suffix)"),
    ("fifo", "video {path} is a pipe (fifo), not a regular file"),
    ("folder", "video {path} is a directory, not a file"),
    ("text image", "cannot read {path} as a video"),
])
@pytest.mark.parametrize("command", ["encode", "reconstruct"])
def test_unreadable_inputs_are_refused_before_the_model_loads(tmp_path, work, wheel, no_work,
                                                             capsys, kind, needle, command):
    path = {"wheel renamed": tmp_path / "pkg.mp4", "wheel": wheel, "fifo": tmp_path / "p.mp4",
            "folder": tmp_path / "d.mp4", "text image": tmp_path / "t.png"}[kind]
    if kind == "wheel renamed":
        path.write_bytes(wheel.read_bytes())
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "text image":
        path.write_text("not a picture")
    out = tmp_path / ("z.safetensors" if command == "encode" else "r.mp4")
    assert cli.main([command, str(path), "--model", str(work / "m"), "-o", str(out)]) == 1
    line = one_error(capsys)
    assert needle.format(path=path).lower() in line.lower(), line
    assert not out.exists()


def test_a_broken_latent_file_is_refused_before_the_model_loads(tmp_path, work, capsys,
                                                                monkeypatch):
    def no_model(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "_load", no_model)
    bad = tmp_path / "int.safetensors"
    rewrite(work / "z.safetensors", bad, latents=lambda z: z.long())
    refused(capsys, ["decode", bad, "--model", work / "m", "-o", tmp_path / "x.mp4"],
            "latents are 'I64', not floating point")


# ----------------------------------------------------------------------------------------------
# item 7 (D07): `--model default` beside a folder named default


def test_default_beside_a_folder_named_default_is_ambiguous(tmp_path, work, no_work, capsys,
                                                            monkeypatch):
    import shutil

    from videovae.weights import default_model_dir, resolve_model

    shutil.copytree(work / "m", tmp_path / "default")
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, ["encode", work / "clip.mp4", "--model", "default", "-o",
                            "z.safetensors"], "model 'default' is ambiguous: ./default is a "
                   "folder here")
    assert "use ./default for the folder, or default-cv" in line
    with pytest.raises(VideoVAEError, match="ambiguous"):
        resolve_model("default")
    # ./default names the folder; no --model is the shipped model, as it always was
    seen = []
    monkeypatch.setattr(cli, "cmd_encode", lambda args: seen.append(args.model))
    for model in (["--model", "./default"], []):
        assert cli.main(["encode", str(work / "clip.mp4"), *model, "-o", "z.safetensors"]) == 0
    assert seen == ["./default", str(default_model_dir("default"))]


# ----------------------------------------------------------------------------------------------
# item 6 (C06, C02, C09): latents of other weights, integer latents, scaling_factor 0


def rewrite(src, dst, latents=None, drop=(), **meta_changes):
    """Copy a latent file with other latents and/or metadata fields."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, z = dict(f.metadata()), f.get_tensor("latents")
    meta.update(meta_changes)
    for key in drop:
        meta.pop(key)
    save_file({"latents": z if latents is None else latents(z)}, str(dst), metadata=meta)


def test_latents_of_other_weights_are_refused_unless_forced(tmp_path, work, capsys,
                                                            caplog):  # C06
    lat, out = work / "z.safetensors", tmp_path / "x.mp4"
    m = ["decode", lat, "--model", work / "other", "-o", out, "--no-progress"]
    mine = weights_hash(tiny_vae(seed=6))
    theirs = read_latent_metadata(lat)["weights_hash"]
    assert theirs == weights_hash(tiny_vae(seed=5)) != mine
    line = refused(capsys, m, f"was made by other weights of this architecture (weights hash "
                   f"{theirs[:12]}, this model's {mine[:12]}); pass --force")
    assert not out.exists() and str(lat) in line
    assert cli.main([str(a) for a in [*m, "--force"]]) == 0
    assert VideoReader(out).num_frames == 9
    assert "decoding anyway (--force)" in caplog.text
    # a file written before the hash existed decodes, with a warning
    old = tmp_path / "old.safetensors"
    rewrite(lat, old, drop=("weights_hash", "weights_dtype"))
    caplog.clear()
    assert cli.main([str(a) for a in ["decode", old, "--model", work / "m", "-o",
                                      tmp_path / "y.mp4", "--no-progress"]]) == 0
    assert "records no weights hash" in caplog.text


def test_the_weights_hash_follows_the_weights_not_the_dtype():
    vae = tiny_vae(seed=5)
    h = weights_hash(vae)
    assert weights_hash(vae) == h == weights_hash(tiny_vae(seed=5))  # cached, and reproducible
    assert weights_hash(tiny_vae(seed=5).to(torch.bfloat16)) == h  # fp32 or bf16: same weights
    with torch.no_grad():
        vae.decoder.conv_out.bias[0] += 0.5  # a fine-tune in place: the cache notices
    assert weights_hash(vae) != h


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.uint8])
def test_integer_latents_are_refused(tmp_path, work, capsys, dtype):  # C02
    bad = tmp_path / "int.safetensors"
    rewrite(work / "z.safetensors", bad, latents=lambda z: z.to(dtype))
    refused(capsys, ["decode", bad, "--model", work / "m", "-o", tmp_path / "x.mp4"],
            "not floating point")
    assert not (tmp_path / "x.mp4").exists()


# ----------------------------------------------------------------------------------------------
# item 18 (C04, C05) and C09: every metadata field validated, naming the file and the field


METADATA = [
    ("C09 scaling_factor 0", dict(normalized="true", scaling_factor="0"),
     "metadata scaling_factor=0 in a normalized file"),
    ("C04 scaling_factor string", dict(normalized="true", scaling_factor='"abc"'),
     "metadata scaling_factor='\"abc\"' must be a finite number or null"),
    ("C04 latents_mean object", dict(latents_mean='{"a": 1}', latents_std="[1, 1, 1, 1]"),
     "metadata latents_mean='{\"a\": 1}' must be a list of 4 finite numbers"),
    ("C04 latents_mean too short", dict(latents_mean="[0, 0]", latents_std="[1, 1]"),
     "metadata latents_mean='[0, 0]' must be a list of 4 finite numbers"),
    ("latents_std 0", dict(latents_mean="[0, 0, 0, 0]", latents_std="[1, 0, 1, 1]"),
     "metadata latents_std holds 0; a standard deviation must be > 0"),
    ("shift_factor bool", dict(shift_factor="true"), "metadata shift_factor='true' must be"),
    ("absorb", dict(absorb_normalization="3"), "metadata absorb_normalization='3' must be"),
    ("C04 fps 1e9", dict(fps="1e9"), "metadata fps=1e+09 must be a positive number of frames "
                                     "per second in 1e-06..10000"),
    ("C04 sar 1e9:1", dict(sample_aspect_ratio="1000000000:1"),
     "metadata sample_aspect_ratio='1000000000:1' must be N:D with N and D in 1..65535"),
    ("C05 escapes", dict(config_hash="\x1b]0;pwned\x07\x1b[2J\x1b[31mFAKE"),
     "metadata config_hash='\\x1b]0;pwned\\x07\\x1b[2j\\x1b[31mfake' is not a hash"),
    ("weights_hash", dict(weights_hash="abc"), "metadata weights_hash='abc' is not a hash"),
    ("weights_dtype", dict(weights_dtype="\x1b[2J"), "metadata weights_dtype='\\x1b[2j' is not"),
]


@pytest.mark.parametrize("case, changes, needle", METADATA, ids=[c[0] for c in METADATA])
def test_every_metadata_field_is_checked(tmp_path, work, capsys, case, changes, needle):
    bad = tmp_path / "bad.safetensors"
    rewrite(work / "z.safetensors", bad, **changes)
    out = tmp_path / "x.mp4"
    assert cli.main(["decode", str(bad), "--model", str(work / "m"), "-o", str(out)]) == 1
    line = one_error(capsys)
    assert f"{bad}: {needle}".lower() in line.lower(), line
    assert "\x1b" not in line and "\x07" not in line  # no escape sequence reaches the terminal
    assert not out.exists()


def test_a_config_hash_mismatch_is_printed_escaped(tmp_path, work):  # C05
    from videovae.io.latent_file import check_compatible

    meta = read_latent_metadata(work / "z.safetensors")
    meta["config_hash"] = "\x1b[2J" + meta["config_hash"]  # (as a caller could pass it)
    with pytest.raises(VideoVAEError) as e:
        check_compatible(meta, tiny_vae(seed=5), "z")
    assert "\x1b" not in str(e.value) and "\\x1b[2J" in str(e.value)


# ----------------------------------------------------------------------------------------------
# item 23 (G01): equal latents and metadata are equal bytes


def header_keys(path) -> list:
    blob = Path(path).read_bytes()
    n = int.from_bytes(blob[:8], "little")
    assert n % 8 == 0
    return list(json.loads(blob[8:8 + n])["__metadata__"])


def test_latent_files_are_written_with_sorted_metadata(tmp_path, work):
    from videovae.io.latent_file import save_latents

    keys = header_keys(work / "z.safetensors")
    assert keys == sorted(keys) and len(keys) > 15
    z, meta = load_latents(work / "z.safetensors")
    for name in ("a", "b"):
        save_latents(tmp_path / f"{name}.safetensors", z, tiny_vae(seed=5), num_frames=9,
                     fps=10.0, height=32, width=32, normalized=False)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    again, meta_again = load_latents(tmp_path / "a.safetensors")
    assert torch.equal(again, z) and meta_again["weights_hash"] == meta["weights_hash"]


@pytest.mark.slow
def test_two_processes_encode_the_same_bytes(tmp_path, work):
    outs = []
    for seed in ("1", "2"):
        outs.append(tmp_path / f"z{seed}.safetensors")
        subprocess.run([sys.executable, "-m", "videovae", "encode", str(work / "clip.mp4"),
                        "--model", str(work / "m"), "-o", str(outs[-1]), "--no-progress"],
                       cwd=ROOT, check=True, capture_output=True, timeout=300,
                       env={**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"})
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_write_media_data_folders_are_inputs_too(tmp_path, work, no_work, capsys):
    """A data folder's files are inputs whatever their depth (eval, latent-stats, learnability)."""
    write_media(tmp_path / "data", n_videos=1, n_images=1, corrupt=False)
    target = tmp_path / "data" / "images" / "i0.png"
    for command in ("eval", "latent-stats"):
        refused(capsys, [command, "--model", work / "m", "--data", tmp_path / "data", "-o",
                         target, "--overwrite"], f"is the data file {target}", root=tmp_path)

"""Video reading and writing, and the latent file format."""

import numpy as np
import pytest
import torch
from PIL import Image

from videovae.data.synthetic import moving_shapes_clip
from videovae.errors import VideoReadError, VideoVAEError
from videovae.io.latent_file import load_latents, save_latents
from videovae.io.listing import list_files
from videovae.io.video import VideoReader
from videovae.io.video import write_video as write_clip

from helpers import READER_BACKENDS, tiny_vae


@pytest.mark.parametrize("backend", READER_BACKENDS)
def test_reader_and_writer_preserve_count_size_fps(clip, backend):
    path, frames = clip
    r = VideoReader(path, backend)
    assert (r.num_frames, r.height, r.width) == (11, 40, 56)
    assert r.fps == pytest.approx(12.5)
    chunks = list(r.iter_chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    got = np.concatenate(chunks)
    assert got.dtype == np.uint8 and got.shape == frames.shape
    assert np.abs(got.astype(float) - frames).mean() < 6  # H.264 at crf 10


def test_odd_size_gray_and_alpha_become_rgb(tmp_path):
    frames = moving_shapes_clip(5, (33, 47), seed=1)
    write_clip(tmp_path / "odd.mp4", frames)
    r = VideoReader(tmp_path / "odd.mp4")
    assert (r.num_frames, r.height, r.width) == (5, 33, 47)
    import imageio_ffmpeg

    gray = frames.mean(axis=3).astype(np.uint8)
    gen = imageio_ffmpeg.write_frames(str(tmp_path / "gray.mkv"), (47, 33), pix_fmt_in="gray",
                                      pix_fmt_out="gray", codec="ffv1", macro_block_size=1,
                                      ffmpeg_log_level="error")
    gen.send(None)
    for f in gray:
        gen.send(np.ascontiguousarray(f))
    gen.close()
    for backend in ("decord", "pyav"):
        got = VideoReader(tmp_path / "gray.mkv", backend).read_all()
        assert got.shape == (5, 33, 47, 3)
        assert np.array_equal(got[..., 0], gray) and np.array_equal(got[..., 1], gray)
    rgba = np.concatenate([frames[0], np.full((33, 47, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    img = VideoReader(tmp_path / "alpha.png").read_all()
    assert img.shape == (1, 33, 47, 3) and np.array_equal(img[0], frames[0])


def test_reader_errors(tmp_path, clip):
    with pytest.raises(FileNotFoundError, match="not found"):
        VideoReader(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("this is not a video")
    with pytest.raises(VideoReadError, match="cannot read"):
        VideoReader(tmp_path / "text.mp4")
    data = clip[0].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError):
        list(VideoReader(tmp_path / "cut.mp4").iter_chunks())


def test_latent_file_round_trip_and_errors(tmp_path, model_dir):
    vae = tiny_vae(seed=5)
    z = torch.randn(4, 3, 5, 7)
    save_latents(tmp_path / "z.safetensors", z, vae, num_frames=8, fps=30.0,
                 height=37, width=50, normalized=False)
    back, meta = load_latents(tmp_path / "z.safetensors")
    assert torch.equal(back, z)
    assert (meta["num_frames"], meta["height"], meta["width"], meta["fps"]) == (8, 37, 50, 30.0)
    assert (meta["padded_frames"], meta["padded_height"], meta["padded_width"]) == (1, 3, 6)
    from safetensors.torch import save_file

    save_file({"latents": z}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="lacks latent metadata: format, num_frames"):
        load_latents(tmp_path / "bare.safetensors")


@pytest.mark.parametrize("backend", READER_BACKENDS)
def test_read_frames_by_index(clip, backend):
    path, _ = clip
    r = VideoReader(path, backend)
    every = r.read_all()
    got = r.read_frames([0, 3, 4, 10])
    assert np.array_equal(got, every[[0, 3, 4, 10]])


def test_list_files_folder_and_manifests(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.mp4", "a.M4V", "sub/c.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_files(tmp_path)] == ["a.M4V", "b.mp4", "c.png"]
    (tmp_path / "m.csv").write_text("path,caption\nb.mp4,x\nsub/c.png,y\n")
    assert list_files(tmp_path / "m.csv") == [tmp_path / "b.mp4", tmp_path / "sub/c.png"]
    (tmp_path / "m.jsonl").write_text('{"path": "b.mp4"}\n\n{"caption": "no path"}\n')
    with pytest.raises(VideoVAEError, match="m.jsonl:3: manifest entry without 'path'"):
        list_files(tmp_path / "m.jsonl")
    with pytest.raises(VideoVAEError, match="no .* files found"):
        list_files(tmp_path / "sub", {".mp4"})


def test_atomic_output_rechecks_the_target_when_it_publishes(tmp_path):
    from videovae.io.atomic import atomic_output

    def hidden():
        return [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]

    # a file that appears while ours is written wins; ours is discarded, with an error
    target = tmp_path / "out.bin"
    with pytest.raises(FileExistsError, match="out.bin already exists"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"mine")
            target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs" and hidden() == []
    # the same for a folder that appears with contents
    folder = tmp_path / "model"
    with pytest.raises(FileExistsError, match="model already exists"):
        with atomic_output(folder, is_dir=True) as tmp:
            (tmp / "a").write_text("mine")
            folder.mkdir()
            (folder / "b").write_text("theirs")
    assert [p.name for p in folder.iterdir()] == ["b"] and hidden() == []
    # --overwrite replaces a folder whole, leaving nothing of the old one beside it
    with atomic_output(folder, is_dir=True, overwrite=True) as tmp:
        (tmp / "a").write_text("mine")
    assert [p.name for p in folder.iterdir()] == ["a"] and hidden() == []
    # a file never replaces a folder, even with --overwrite
    with pytest.raises(IsADirectoryError, match="is a folder"):
        with atomic_output(folder, overwrite=True):
            pass
    assert (folder / "a").read_text() == "mine" and hidden() == []


def test_json_reports_are_strict(tmp_path):
    import json

    from videovae.io.atomic import to_json, write_json

    data = {"psnr": float("nan"), "per_clip": [1.0, float("inf"), -float("inf")], "n": 3}
    assert json.loads(to_json(data)) == {"psnr": None, "per_clip": [1.0, None, None], "n": 3}
    write_json(tmp_path / "r.json", data)
    assert "NaN" not in (tmp_path / "r.json").read_text()

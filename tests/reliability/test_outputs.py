"""Where outputs go: a folder that is read-only or missing, an output that exists or is a folder,
and the modes of what is written under a umask of 027."""

import os
import re

import pytest

from videovae.io.video import VideoReader

from helpers import tiny_image_vae

pytestmark = pytest.mark.usefixtures("one_thread")


def _names(d):
    return sorted(p.name for p in d.iterdir())


def test_read_only_output_folder_is_refused(tmp_path, model_dir, clip, run_cli, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root ignores mode bits: make access() honour them
        real = os.access
        monkeypatch.setattr(os, "access",
                            lambda p, mode, **kw: False if str(p) == str(ro) and mode & os.W_OK
                            else real(p, mode, **kw))
    try:
        res = run_cli("encode", clip[0], "--model", model_dir, "--no-progress", "-o",
                      ro / "z.safetensors")
    finally:
        monkeypatch.undo()
        ro.chmod(0o700)
    res.fails("not writable", re.escape(str(ro)), outputs=[ro / "z.safetensors"])


def test_missing_output_folder_is_refused_and_not_created(tmp_path, model_dir, clip, run_cli):
    res = run_cli("encode", clip[0], "--model", model_dir, "--no-progress", "-o",
                  tmp_path / "sub" / "z.safetensors")
    res.fails("does not exist", re.escape(str(tmp_path / "sub")))
    assert _names(tmp_path) == []


def test_existing_output_is_kept_without_overwrite(tmp_path, model_dir, latent_file, run_cli):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"my precious video")
    res = run_cli("decode", latent_file, "--model", model_dir, "--no-progress", "-o", out)
    assert out.read_bytes() == b"my precious video"
    assert _names(tmp_path) == ["out.mp4"]
    assert res.rc == 1 and res.error_lines and "already exists" in res.error_lines[0], res.err


def test_existing_output_is_replaced_with_overwrite(tmp_path, model_dir, latent_file, run_cli):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    run_cli("decode", latent_file, "--model", model_dir, "--no-progress", "-o", out,
            "--overwrite").ok()
    r = VideoReader(out)
    assert (r.num_frames, r.height, r.width) == (11, 40, 56)  # the `clip` fixture's
    assert _names(tmp_path) == ["out.mp4"]


def test_output_path_that_is_a_folder_is_refused_and_left_alone(tmp_path, model_dir, clip,
                                                                 run_cli):
    (tmp_path / "z.safetensors").mkdir()
    (tmp_path / "z.safetensors" / "keep.txt").write_text("keep")
    res = run_cli("encode", clip[0], "--model", model_dir, "--no-progress", "-o",
                  tmp_path / "z.safetensors")
    res.fails("is a folder")
    assert (tmp_path / "z.safetensors" / "keep.txt").read_text() == "keep"


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_umask_027_gives_an_encoded_file_mode_0640(tmp_path, model_dir, clip, run_cli,
                                                    umask_027):
    out = tmp_path / "z.safetensors"
    run_cli("encode", clip[0], "--model", model_dir, "--no-progress", "-o", out).ok()
    assert oct(out.stat().st_mode & 0o777) == oct(0o640)


def test_umask_027_gives_an_inflated_folder_0750_and_its_config_0640(tmp_path, run_cli,
                                                                      umask_027):
    tiny_image_vae().save_pretrained(tmp_path / "image_vae")
    out = tmp_path / "video_vae"
    run_cli("inflate", "--image-vae", tmp_path / "image_vae", "-o", out).ok()
    modes = (out.stat().st_mode & 0o777, (out / "config.json").stat().st_mode & 0o777)
    assert tuple(map(oct, modes)) == (oct(0o750), oct(0o640))


# ----------------------------------------------------------------------------------------------
# A full disk while an output is written (issue 19 item 3: safetensors and shards gave a raw
# SafetensorError): one line naming the output, the temporary removed, the old file kept


def _enospc(tmp):
    raise OSError(28, "No space left on device")


def _safetensors_full(tmp):
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                          "message: \"No space left on device\" })")


@pytest.mark.parametrize("fail", [_enospc, _safetensors_full], ids=["oserror", "safetensors"])
@pytest.mark.parametrize("is_dir", [False, True], ids=["file", "folder"])
def test_a_full_disk_is_one_line_naming_the_output_and_keeps_the_old_one(tmp_path, fail,
                                                                         is_dir):
    from videovae.errors import VideoVAEError
    from videovae.io.atomic import atomic_output

    out = tmp_path / ("model" if is_dir else "z.safetensors")
    if is_dir:
        out.mkdir()
        (out / "old.txt").write_text("old")
    else:
        out.write_text("old")
    with pytest.raises(VideoVAEError) as info, atomic_output(out, is_dir=is_dir,
                                                             overwrite=True) as tmp:
        fail(tmp)
    msg = str(info.value)
    assert msg.startswith(f"cannot write {out}: no space left on device") and "\n" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left
    assert (out / "old.txt" if is_dir else out).read_text() == "old"

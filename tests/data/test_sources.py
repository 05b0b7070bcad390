"""Clip sources, manifests, the joint loader and the training configs that describe them."""

from pathlib import Path

import pytest
import torch

from videovae.data import ClipSource, SourceConfig, StepBatches
from videovae.training.config import load_train_config

from helpers import write_media

ROOT = Path(__file__).resolve().parents[2]


def test_sources_corrupt_files_are_skipped_and_counted(tmp_path):
    write_media(tmp_path)
    src = ClipSource(SourceConfig(type="video", path=str(tmp_path / "videos"), resolution=32,
                                  num_frames=9, frame_stride=[1, 2], batch_size=2))
    batches = StepBatches([src], seed=0, rank=0)
    skipped = 0
    for s in range(12):
        b = batches[s]
        assert b["pixels"].shape == (2, 3, 9, 32, 32)
        assert b["pixels"].min() >= -1 and b["pixels"].max() <= 1
        skipped += b["skipped"]
    assert skipped > 0
    again = StepBatches([src], seed=0, rank=0)  # a pure function of (seed, rank, step)
    assert torch.equal(batches[3]["pixels"], again[3]["pixels"])
    assert batches[3]["skipped"] == again[3]["skipped"]
    other_rank = StepBatches([src], seed=0, rank=1)
    assert not torch.equal(batches[3]["pixels"], other_rank[3]["pixels"])


def test_manifests_and_joint_mix(tmp_path):
    write_media(tmp_path, corrupt=False)
    (tmp_path / "m.csv").write_text("path,caption\nvideos/v0.mp4,a\nvideos/v1.mp4,b\n")
    (tmp_path / "m.jsonl").write_text('{"path": "images/i0.png"}\n{"path": "images/i1.png"}\n')
    vid = ClipSource(SourceConfig(type="video", path=str(tmp_path / "m.csv"), resolution=[16, 24],
                                  num_frames=5, batch_size=1, weight=0.3))
    img = ClipSource(SourceConfig(type="image", path=str(tmp_path / "m.jsonl"), resolution=32,
                                  num_frames=1, batch_size=4, weight=0.7))
    assert len(vid) == 2 and len(img) == 2
    batches = StepBatches([vid, img], seed=1, rank=0)
    shapes = {tuple(batches[s]["pixels"].shape) for s in range(20)}
    assert shapes == {(1, 3, 5, 16, 24), (4, 3, 1, 32, 32)}
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        ClipSource(SourceConfig(type="video", path=str(tmp_path / "m.csv"), num_frames=6))


def test_configs_load_and_cvvae_mix_is_expressible():
    import yaml

    for path in sorted((ROOT / "configs" / "train").glob("*.yaml")):
        cfg = load_train_config(str(path))
        written = yaml.safe_load(path.read_text())["data"]["sources"]
        assert [(s.name, s.type, s.num_frames) for s in cfg.data.sources] == [
            (s["name"], s["type"], s["num_frames"]) for s in written], path
    cfg = load_train_config(str(ROOT / "configs" / "train" / "cvvae_sd.yaml"))
    mix = [(s.type, s.num_frames, s.resolution, s.batch_size, s.weight) for s in cfg.data.sources]
    assert mix == [("image", 1, 256, 8, 0.4), ("image", 1, 512, 2, 0.1),
                   ("video", 9, 256, 1, 0.25), ("video", 17, 192, 1, 0.25)]
    with pytest.raises(ValueError, match="unknown key"):
        load_train_config(None, ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="unknown model key"):
        load_train_config(None, ["model.widths=[1]"])



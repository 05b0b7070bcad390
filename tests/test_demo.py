"""`videovae demo` end to end with a handful of steps (the README's first command runs it in
full)."""

import json

import pytest
from PIL import Image

from videovae.cli import main as cli


@pytest.mark.slow
def test_demo_smoke(tmp_path):
    out = tmp_path / "demo"
    assert cli(["demo", "-o", str(out), "--fine-tune-steps", "2", "--long-frames", "13"]) == 0
    s = json.loads((out / "summary.json").read_text())
    for arch in ("cv", "ktc"):  # the shipped image VAE inflates exactly into both families
        assert s["inflation"][arch]["one_frame_max_abs_diff"] < 1e-4
        assert s["inflation"][arch]["still_clip_max_abs_diff"] < 1e-4
    assert s["long"]["decoded_frames"] == 13 and s["long"]["latent_shape"][1] == 4
    assert s["long"]["stream_vs_full_max_abs_diff"] <= 1e-5
    assert set(s["held_out"]) == {"image VAE per frame", "video VAE (shipped)",
                                  "bicubic 8x down-up"}
    assert s["fine_tune"]["steps"] == 2
    # the sheet: 4 rows (input, image VAE, video VAE, bicubic) of 8 frames enlarged 2x
    w, h = Image.open(out / "chelsea_sheet.png").size
    assert w == 4 + 8 * (2 * 128 + 4) and h == 4 * (2 * 96 + 16 + 4) + 4
    assert Image.open(out / "fine_tune_loss.png").size == (720, 440)
    for name in ("chelsea_reconstructed_side_by_side.mp4", "chelsea_metrics.json",
                 "rocket_13_decoded.mp4", "train/final/config.json"):
        assert (out / name).is_file(), name

"""`videovae demo` end to end with a handful of steps (the README's first command runs it in full)."""

import json

import pytest

from videovae.cli import main as cli


@pytest.mark.slow
def test_demo_smoke(tmp_path):
    out = tmp_path / "demo"
    assert cli(["demo", "-o", str(out), "--image-steps", "3", "--video-steps", "2",
                "--long-frames", "13"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["inflation"]["one_frame_max_abs_diff"] < 1e-4
    assert s["inflation"]["still_clip_max_abs_diff"] < 1e-4
    assert s["long"]["decoded_frames"] == 13 and s["long"]["latent_shape"][1] == 4
    assert s["long"]["stream_vs_full_max_abs_diff"] <= 1e-5
    assert set(s["held_out"]) == {"image_vae_per_frame", "video_vae_inflated",
                                  "video_vae_fine_tuned", "bicubic_down_up_8x"}
    for name in ("chelsea_reconstructed_side_by_side.mp4", "chelsea_metrics.json",
                 "rocket_13_decoded.mp4", "image_vae/config.json", "train/final/config.json"):
        assert (out / name).is_file(), name

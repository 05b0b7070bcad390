"""The held-out comparison rows (tools/compare_arch.py, tools/train_default.py, the demo)."""

import torch

from videovae.data.synthetic import HELD_OUT_PHOTOS
from videovae.heldout import bicubic, evaluate, held_out_clips, markdown


def test_colour_error_and_group_positions_are_measured():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 9, 16, 16) - 0.5  # far from the clamp at 1
    clips = {"a": x, "b": x.flip(-1)}

    rest = [2, 3, 4, 6, 7, 8]  # not the first frame of a group (those are 0, 1 and 5)

    def tint(clip):  # red +0.1 everywhere; the other frames also a little noise
        out = clip.clone()
        out[:, 0] += 0.1
        idx = [i for i in rest if i < clip.shape[2]]  # (the warm-up call has 5 frames)
        out[:, :, idx] += 0.05 * torch.randn_like(out[:, :, idx])
        return out

    row = evaluate("tint", tint, clips, params=2_000_000)
    r, g, b = row["color_error"]
    # 0.1 of [-1, 1] is 12.75 of 255; the noise moves channel means by about 0.1 level
    assert abs(r - 12.75) < 0.3 and g < 0.3 and b < 0.3
    assert row["first_vs_rest_gap"] > 1.0
    assert row["psnr_by_position"][0] > row["psnr_by_position"][2]
    assert set(row["psnr_by_clip"]) == {"a", "b"} and row["params_m"] == 2.0
    table = markdown([row, evaluate("bicubic", bicubic(8), clips)])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| tint | 2.00 |")
    assert lines[2].endswith("| 12.7/0.1/0.1 |")


def test_held_out_clips_are_pans_over_the_held_out_photos():
    clips = held_out_clips(5, (16, 24), speeds=(1.0,))
    assert list(clips) == [f"{n}_pan1" for n in HELD_OUT_PHOTOS]
    assert all(c.shape == (1, 3, 5, 16, 24) for c in clips.values())

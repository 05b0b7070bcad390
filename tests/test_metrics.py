"""PSNR/SSIM and the within-group position statistics."""

import pytest
import torch

from videovae.metrics import group_position_stats, psnr_per_frame, ssim_per_frame

from helpers import random_video


def test_group_position_stats():
    # frames: 0 | 1 2 3 4 | 5 6 7 8 ; group firsts are 0, 1, 5
    scores = [30.0, 28.0, 20.0, 21.0, 22.0, 26.0, 23.0, 24.0, 25.0]
    s = group_position_stats([scores], 4)
    assert s["per_position"] == [pytest.approx(28.0), 21.5, 22.5, 23.5]
    assert s["first_vs_rest_gap"] == pytest.approx(28.0 - (20 + 21 + 22 + 23 + 24 + 25) / 6)
    assert group_position_stats([[30.0]], 4) == {"per_position": [30.0, None, None, None],
                                                "first_vs_rest_gap": None}
    # clips are pooled frame by frame: each starts its own frame 0
    pooled = group_position_stats([scores, [10.0, 12.0, 14.0]], 4)
    assert pooled["per_position"][0] == pytest.approx((30 + 28 + 26 + 10 + 12) / 5)
    assert pooled["per_position"][1] == pytest.approx((20 + 23 + 14) / 3)


def test_psnr_and_ssim_of_known_errors():
    x = random_video(t=2, h=16, w=16)
    y = x + 0.02  # squared error on the [0, 1] scale: 0.01**2
    assert torch.allclose(psnr_per_frame(x, y), torch.full((1, 2), 40.0), atol=1e-3)
    assert torch.allclose(ssim_per_frame(x, x), torch.ones(1, 2), atol=1e-6)
    assert (ssim_per_frame(x, -x) < 0.2).all()

"""Tensors given to the Python API: NaN latents and 0..255 frames are refused with a ValueError
that says what is wrong; other float dtypes are cast; the decode output range is documented
and the file API clamps it."""

import numpy as np
import pytest
import torch

from videovae import VideoVAE
from videovae.io.video import tensor_to_frames

from helpers import tiny_vae

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vae():
    return tiny_vae()


def _first_line(fn) -> str:
    with pytest.raises(ValueError) as e:
        fn()
    return str(e.value).splitlines()[0]


def test_decode_refuses_latents_holding_a_nan(vae):
    z = torch.zeros(1, 4, 2, 4, 4)
    z[0, 0, 1, 1, 1] = float("nan")
    msg = _first_line(lambda: vae.decode(z))
    assert "nan" in msg.lower(), msg


def test_frames_in_0_255_are_refused_naming_the_range_and_the_fix(vae):
    x = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    msg = _first_line(lambda: vae.encode(x))
    assert "[-1, 1]" in msg and "127.5" in msg, msg


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16],
                         ids=["float64", "float16", "bfloat16"])
def test_other_float_dtypes_give_the_latents_of_their_fp32_value(vae, dtype):
    x = (torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    x = x.to(dtype)
    got = vae.encode(x).latent_dist.mean
    ref = vae.encode(x.float()).latent_dist.mean
    assert got.dtype == torch.float32
    assert (got - ref).abs().max().item() <= 1e-5
    assert vae.decode(got.to(dtype)).sample.shape == (1, 3, 5, 32, 32)


@torch.no_grad()
def test_decode_output_range_is_documented_and_clamped_by_the_file_api(vae):
    doc = " ".join((VideoVAE.decode.__doc__ or "").split())
    assert "not clamped" in doc and "[-1, 1]" in doc, doc
    z = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 200
    assert tensor_to_frames(vae.decode(z).sample).dtype == np.uint8
    ramp = torch.tensor([-5.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 1, 1, 5).expand(1, 3, 1, 1, 5)
    assert tensor_to_frames(ramp)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]

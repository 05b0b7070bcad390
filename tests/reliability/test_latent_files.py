"""Latent files that `decode` must refuse: one line naming the file and what is wrong with it, no
video written (NaN or Inf latents used to decode to a black video)."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

pytestmark = pytest.mark.usefixtures("one_thread")


def _bare(src, d):
    save_file({"latents": torch.zeros(4, 2, 4, 4)}, str(d / "bare.safetensors"))
    return d / "bare.safetensors"


def _truncated(src, d):
    data = src.read_bytes()
    (d / "cut.safetensors").write_bytes(data[: len(data) // 2])
    return d / "cut.safetensors"


def _poisoned(name, value):
    def make(src, d):
        with safe_open(str(src), framework="pt") as f:
            meta, z = dict(f.metadata()), f.get_tensor("latents")
        z[0, 1, 2, 3] = value
        save_file({"latents": z}, str(d / f"{name}.safetensors"), metadata=meta)
        return d / f"{name}.safetensors"
    return make


@pytest.mark.parametrize("make, patterns", [
    pytest.param(_bare, ["bare.safetensors", "lacks latent metadata"], id="no-metadata"),
    pytest.param(_truncated, ["cut.safetensors", "cannot read"], id="truncated"),
    pytest.param(_poisoned("nan", float("nan")), [r"nan\.safetensors", "1 nan"], id="one-nan"),
    pytest.param(_poisoned("inf", float("inf")), [r"inf\.safetensors", "1 infinite"],
                 id="one-inf"),
])
def test_decode_refuses_a_bad_latent_file(tmp_path, model_dir, latent_file, run_cli, make,
                                          patterns):
    bad = make(latent_file, tmp_path)
    out = tmp_path / "out.mp4"
    res = run_cli("decode", bad, "--model", model_dir, "--no-progress", "-o", out)
    res.fails(*patterns, outputs=[out], keep=[bad.name])

"""Test-side reverse key table: diffusers AutoencoderKL names -> original LDM/CompVis names.

Written independently of the loader (which uses diffusers' `convert_ldm_vae_checkpoint`), and
checked by a round trip through that function in the tests.
"""

import re

RESNET_PARTS = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                "conv_shortcut": "nin_shortcut"}
ATTN_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def diffusers_to_ldm_key(key: str, num_levels: int) -> str:
    m = re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)", key)
    if m:
        return f"{m[1]}.norm_out.{m[2]}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.*)", key)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{RESNET_PARTS[m[3]]}.{m[4]}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.*)", key)
    if m:
        return f"decoder.up.{num_levels - 1 - int(m[1])}.block.{m[2]}.{RESNET_PARTS[m[3]]}.{m[4]}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"decoder.up.{num_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(\w+)\.(.*)", key)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{RESNET_PARTS[m[3]]}.{m[4]}"
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\."
                 r"(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)", key)
    if m:
        return f"{m[1]}.mid.attn_1.{ATTN_PARTS[m[2]]}.{m[3]}"
    return key  # conv_in, conv_out, quant_conv, post_quant_conv keep their names


def to_ldm_state_dict(diffusers_sd: dict, num_levels: int, prefix: str = "") -> dict:
    out = {}
    for k, v in diffusers_sd.items():
        new = diffusers_to_ldm_key(k, num_levels)
        if ".mid.attn_1." in new and new.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]  # LDM attention projections are 1x1 convs
        out[prefix + new] = v.clone()
    return out

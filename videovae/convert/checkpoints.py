"""Reading image VAE checkpoints (SD 1.x/2.x, SDXL, SD3, FLUX) into a diffusers `AutoencoderKL`.

Sources: a diffusers `AutoencoderKL` folder (config.json + weights, or a pipeline folder with a
`vae/` subfolder), or one `.safetensors` / `.ckpt` / `.pt` / `.bin` file with original (LDM) or
diffusers key names, optionally inside a full SD checkpoint (`first_stage_model.` prefix).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..errors import ImageVAEError
from ..latents import KNOWN_IMAGE_VAES

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def sd_vae_config(block_out_channels=(128, 256, 512, 512), layers_per_block: int = 2,
                  latent_channels: int = 4, norm_num_groups: int = 32, **extra) -> dict:
    """An `AutoencoderKL` config in the SD layout (one down/up block per width); `extra` adds
    or replaces keys (scaling_factor, use_quant_conv, ...). The one place such configs are
    written."""
    n = len(block_out_channels)
    return {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n,
            "block_out_channels": list(block_out_channels), "layers_per_block": layers_per_block,
            "latent_channels": latent_channels, "norm_num_groups": norm_num_groups, **extra}


# ----------------------------------------------------------------------------------------------
# Reading checkpoints


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - re-raised with the path
            raise ImageVAEError(f"cannot read {path} as safetensors: {e}") from e
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ImageVAEError(f"cannot read {path} as a torch checkpoint: {e}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        sd = {k: v for k, v in sd.items() if torch.is_tensor(v)} if isinstance(sd, dict) else {}
    return sd


def _guess_type_from_keys(keys) -> str | None:
    """Which model a full checkpoint belongs to, from its non-VAE keys."""
    text = "\n".join(keys)
    if "double_blocks." in text:
        return "flux"
    if "joint_blocks." in text:
        return "sd3"
    if "conditioner.embedders.1." in text:
        return "sdxl"
    if "model.diffusion_model." in text or "cond_stage_model." in text:
        return "sd"
    return None


def _strip_vae_prefix(sd: dict) -> dict:
    for prefix in ("first_stage_model.", "vae."):
        if any(k.startswith(prefix + "encoder.") for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _config_from_weights(sd: dict, ldm: bool, norm_num_groups: int) -> dict:
    """An AutoencoderKL config read off the weight shapes."""
    def conv1(i):
        return (f"encoder.down.{i}.block.0.conv1.weight" if ldm
                else f"encoder.down_blocks.{i}.resnets.0.conv1.weight")

    channels = []
    while conv1(len(channels)) in sd:
        channels.append(int(sd[conv1(len(channels))].shape[0]))
    if not channels:
        raise ImageVAEError("not an image VAE checkpoint: no encoder down blocks "
                            f"(expected a key like {conv1(0)})")
    block = "encoder.down.0.block.{}.conv1.weight" if ldm else \
        "encoder.down_blocks.0.resnets.{}.conv1.weight"
    layers = 0
    while block.format(layers) in sd:
        layers += 1
    attn = "encoder.mid.attn_1.q.weight" if ldm else "encoder.mid_block.attentions.0.to_q.weight"
    return sd_vae_config(
        channels, layers, int(sd["encoder.conv_out.weight"].shape[0]) // 2, norm_num_groups,
        in_channels=int(sd["encoder.conv_in.weight"].shape[1]),
        out_channels=int(sd["decoder.conv_out.weight"].shape[0]),
        use_quant_conv="quant_conv.weight" in sd,
        use_post_quant_conv="post_quant_conv.weight" in sd,
        mid_block_add_attention=attn in sd)


def _load_single_file(path: Path, norm_num_groups: int):
    raw = _read_state_dict(path)
    guessed = _guess_type_from_keys(raw.keys())
    sd = _strip_vae_prefix(raw)
    required = ("encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_out.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        sample = ", ".join(list(raw)[:3]) or "none"
        raise ImageVAEError(f"{path} is not an image VAE checkpoint: missing {', '.join(missing)} "
                            f"(its keys start with: {sample})")
    ldm = not any(k.startswith("encoder.down_blocks.") for k in sd)
    config = _config_from_weights(sd, ldm, norm_num_groups)
    if ldm:
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        sd = convert_ldm_vae_checkpoint(sd, config)
    return sd, config, guessed


def _build_reference(sd: dict, config: dict, where: str) -> AutoencoderKL:
    """An AutoencoderKL holding exactly these weights; every missing or extra key is an error."""
    vae = AutoencoderKL(**config)
    expected = vae.state_dict()
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({', '.join(missing[:4])}...)")
        if extra:
            parts.append(f"{len(extra)} unexpected keys ({', '.join(extra[:4])}...)")
        raise ImageVAEError(f"{where} does not match an AutoencoderKL with "
                            f"block_out_channels={config['block_out_channels']}: "
                            + "; ".join(parts))
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise ImageVAEError(f"{where}: weight shapes disagree with the config: {bad[:3]}")
    vae.load_state_dict({k: v.float() for k, v in sd.items()})
    return vae


def load_image_vae(path, image_vae_type: str | None = None,
                   norm_num_groups: int | None = None) -> tuple[AutoencoderKL, str]:
    """Load an image VAE as a diffusers `AutoencoderKL` (fp32, eval) and name its family.

    `image_vae_type` ("sd", "sdxl", "sd3", "flux") fixes the latent scaling when the source does
    not say (a bare VAE file cannot tell SD from SDXL, or SD3 from FLUX). `"default"` is the
    image VAE shipped with the package.
    """
    from ..weights import default_model_dir

    if str(path) in ("default", "default-image-vae"):
        path = default_model_dir("default-image-vae")
    path = Path(path)
    if image_vae_type is not None and image_vae_type not in KNOWN_IMAGE_VAES:
        raise ImageVAEError(f"image_vae_type must be one of {sorted(KNOWN_IMAGE_VAES)}")
    if not path.exists():
        raise ImageVAEError(f"image VAE not found: {path}")
    if path.is_dir():
        if (path / "vae" / "config.json").is_file():
            path = path / "vae"
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ImageVAEError(f"{path} has no config.json (expected a diffusers AutoencoderKL "
                                "folder, or pass a single checkpoint file)")
        cfg = json.loads(cfg_file.read_text())
        cls_name = cfg.get("_class_name", "AutoencoderKL")
        if cls_name != "AutoencoderKL":
            raise ImageVAEError(f"{path} holds a {cls_name}, not an image VAE (AutoencoderKL)")
        try:
            vae = AutoencoderKL.from_pretrained(str(path), torch_dtype=torch.float32)
        except Exception as e:  # noqa: BLE001 - diffusers' own message, one line
            raise ImageVAEError(f"cannot load the AutoencoderKL in {path}: "
                                f"{str(e).splitlines()[0]}") from e
        family = image_vae_type or _family_from_config(vae.config)
    else:
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ImageVAEError(f"{path}: expected a folder or a {'/'.join(WEIGHT_SUFFIXES)} file")
        sd, config, guessed = _load_single_file(path, norm_num_groups or 32)
        family = image_vae_type or guessed or ("sd" if config["latent_channels"] == 4 else "sd3")
        if image_vae_type is None and guessed is None:
            logger.warning("%s does not say which model it is from; using the %s latent scaling "
                           "%s (pass image_vae_type= to choose)", path.name, family,
                           KNOWN_IMAGE_VAES[family])
        config.update({k: v for k, v in KNOWN_IMAGE_VAES[family].items()})
        vae = _build_reference(sd, config, str(path))
    return vae.eval().requires_grad_(False), family


def _family_from_config(config) -> str:
    """The known image VAE whose latent constants a folder's config carries, else "custom" (a
    folder keeps its own constants either way; this only names it)."""
    for family, known in KNOWN_IMAGE_VAES.items():
        shift = config.get("shift_factor")
        if (abs(config.scaling_factor - known["scaling_factor"]) < 1e-4
                and (shift is None) == (known["shift_factor"] is None)
                and (shift is None or abs(shift - known["shift_factor"]) < 1e-4)):
            return family
    return "custom"



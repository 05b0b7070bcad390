"""Load an image VAE (SD 1.x/2.x, SDXL, SD3, FLUX) and inflate it into a `VideoVAE`.

Sources: a diffusers `AutoencoderKL` folder (config.json + weights, or a pipeline folder with a
`vae/` subfolder), or one `.safetensors` / `.ckpt` / `.pt` / `.bin` file with original (LDM) or
diffusers key names, optionally inside a full SD checkpoint (`first_stage_model.` prefix).

Inflation puts each 2D kernel in the temporal tap that sees the current frame (the last tap of a
causal conv, the middle tap of a non-causal one) and zeros elsewhere, so a one-frame video and
every frame of a still clip give exactly the image VAE's latents and reconstructions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL

logger = logging.getLogger(__name__)

# Latent normalization of the known image VAEs (diffusers configs of each release).
KNOWN_VAES = {
    "sd": {"scaling_factor": 0.18215, "shift_factor": None},
    "sdxl": {"scaling_factor": 0.13025, "shift_factor": None},
    "sd3": {"scaling_factor": 1.5305, "shift_factor": 0.0609},
    "flux": {"scaling_factor": 0.3611, "shift_factor": 0.1159},
}
# Config keys the video VAE takes over from the image VAE; overrides must agree with them.
ARCH_KEYS = ("in_channels", "out_channels", "block_out_channels", "layers_per_block",
             "latent_channels", "norm_num_groups", "mid_block_add_attention", "use_quant_conv",
             "use_post_quant_conv")
LATENT_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast")
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class ImageVAEError(ValueError):
    """The path is not a usable image VAE, or it disagrees with the requested config."""


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
    n = len(channels)
    return {
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "latent_channels": int(sd["encoder.conv_out.weight"].shape[0]) // 2,
        "norm_num_groups": norm_num_groups,
        "use_quant_conv": "quant_conv.weight" in sd,
        "use_post_quant_conv": "post_quant_conv.weight" in sd,
        "mid_block_add_attention": attn in sd,
    }


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
    not say (a bare VAE file cannot tell SD from SDXL, or SD3 from FLUX).
    """
    path = Path(path)
    if image_vae_type is not None and image_vae_type not in KNOWN_VAES:
        raise ImageVAEError(f"image_vae_type must be one of {sorted(KNOWN_VAES)}")
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
                           KNOWN_VAES[family])
        config.update({k: v for k, v in KNOWN_VAES[family].items()})
        vae = _build_reference(sd, config, str(path))
    return vae.eval().requires_grad_(False), family


def _family_from_config(config) -> str:
    if config.latent_channels == 16:
        return "flux" if abs(config.scaling_factor - 0.3611) < 1e-3 else "sd3"
    return "sdxl" if abs(config.scaling_factor - 0.13025) < 1e-4 else "sd"


# ----------------------------------------------------------------------------------------------
# Inflation


def video_config_from_image(image_config) -> dict:
    """The VideoVAE config keys that must equal the image VAE's."""
    cfg = {k: image_config[k] for k in ARCH_KEYS}
    cfg["block_out_channels"] = list(cfg["block_out_channels"])
    for k in LATENT_KEYS:
        if image_config.get(k) is not None:
            cfg[k] = image_config[k]
    return cfg


def inflate_state_dict(video_vae, image_state: dict) -> None:
    """Copy 2D weights into the video VAE: kernels into the current-frame tap, zeros elsewhere."""
    own = video_vae.state_dict()
    missing = [k for k in own if k not in image_state]
    if missing:
        raise ImageVAEError(f"the image VAE lacks {len(missing)} weights the video VAE needs: "
                            f"{', '.join(missing[:4])}")
    new = {}
    for name, param in own.items():
        src = image_state[name].to(param.dtype)
        if param.ndim == 5 and src.ndim == 4:
            conv = video_vae.get_submodule(name.rsplit(".", 1)[0])
            kt = param.shape[2]
            tap = kt - 1 if conv.causal else kt // 2
            w = torch.zeros_like(param)
            w[:, :, tap] = src
            new[name] = w
        elif tuple(param.shape) == tuple(src.shape):
            new[name] = src.clone()
        else:
            raise ImageVAEError(f"{name}: image VAE shape {tuple(src.shape)} does not fit the "
                                f"video VAE's {tuple(param.shape)}")
    video_vae.load_state_dict(new)


def inflate_from_model(image_vae: AutoencoderKL, arch: str = "cv", where: str = "the image VAE",
                       **overrides):
    """Build a `VideoVAE` from an in-memory diffusers `AutoencoderKL`."""
    from .model import VideoVAE

    cfg = video_config_from_image(image_vae.config)
    for key, value in overrides.items():
        if key in ARCH_KEYS:
            have = cfg[key]
            if (list(value) if isinstance(value, (list, tuple)) else value) != have:
                raise ImageVAEError(f"{key}={value} disagrees with {where}, which has "
                                    f"{key}={have}")
        cfg[key] = value
    video = VideoVAE(arch=arch, **cfg)
    inflate_state_dict(video, image_vae.state_dict())
    return video


def inflate_image_vae(path, arch: str = "cv", image_vae_type: str | None = None, **overrides):
    """Build a `VideoVAE` from an image VAE checkpoint; see the module docstring."""
    image_vae, family = load_image_vae(path, image_vae_type, overrides.get("norm_num_groups"))
    video = inflate_from_model(image_vae, arch, f"the image VAE at {path}", **overrides)
    logger.info("inflated a %s image VAE (%s, %d latent channels) into arch %s", family, path,
                video.config.latent_channels, arch)
    return video

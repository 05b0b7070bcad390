"""Test and demo clips made from real photographs, with nothing downloaded.

Photos come from scikit-image's bundled data (astronaut, coffee, chelsea, rocket, ...; a
dependency of the package, so the demo and the default model's data are always real photos).
Clips are smooth camera pans and zooms over a photo (`pan_zoom_clip`) or shapes moving over a
photo (`moving_shapes_clip`, over a `procedural_image` background when no photo is given).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# training photos first; chelsea and rocket are held out for validation and demos
PHOTOS = ("astronaut", "coffee", "motorcycle_left", "hubble_deep_field", "immunohistochemistry",
          "retina", "chelsea", "rocket")
TRAIN_PHOTOS, HELD_OUT_PHOTOS = PHOTOS[:6], PHOTOS[6:]


def load_photo(name: str = "astronaut") -> np.ndarray:
    """A real RGB photo (uint8 H, W, 3) from scikit-image's bundled data."""
    import skimage.data as data

    if name in ("motorcycle_left", "motorcycle_right"):
        img = data.stereo_motorcycle()[0 if name.endswith("left") else 1]
    else:
        img = getattr(data, name)()
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def procedural_image(h: int = 512, w: int = 512, seed: int = 0) -> np.ndarray:
    """Smooth colour fields plus edges: a synthetic image of photo-like statistics."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 8, 8, generator=g)
    img = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    for _ in range(6):
        cx, cy, r = torch.rand(3, generator=g).tolist()
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < (0.05 + 0.2 * r) ** 2).float()
        img = img * (1 - mask) + torch.rand(3, 1, 1, generator=g) * mask
    return (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def _warp(photo: torch.Tensor, centers, scales, size) -> torch.Tensor:
    """Crops of `photo` (1, 3, H, W) at normalized centers/scales -> (T, 3, h, w)."""
    h, w = size
    _, _, ph, pw = photo.shape
    theta = torch.zeros(len(centers), 2, 3)
    for i, ((cx, cy), s) in enumerate(zip(centers, scales, strict=True)):
        # the crop spans s * (w/pw, h/ph) of the photo in normalized coordinates
        theta[i, 0, 0] = s * w / pw
        theta[i, 1, 1] = s * h / ph
        theta[i, 0, 2], theta[i, 1, 2] = cx, cy
    grid = F.affine_grid(theta, (len(centers), 3, h, w), align_corners=False)
    return F.grid_sample(photo.expand(len(centers), -1, -1, -1), grid, mode="bilinear",
                         padding_mode="reflection", align_corners=False)


def pan_zoom_clip(photo: np.ndarray, num_frames: int, size=(64, 64), speed: float = 1.5,
                  zoom: float = 0.01, angle: float = 0.6, scale: float = 1.0) -> np.ndarray:
    """A camera panning over `photo` at `speed` output pixels per frame in direction `angle`
    (radians) while zooming by `zoom` (log scale) per frame. Returns uint8 (T, h, w, 3)."""
    img = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    h, w = size
    _, _, ph, pw = img.shape
    base = scale * min(pw / w, ph / h) * 0.5  # crop of half the photo's short side
    centers, scales = [], []
    for t in range(num_frames):
        s = base * math.exp(zoom * t)
        dx = speed * t * math.cos(angle) * 2 * s / pw
        dy = speed * t * math.sin(angle) * 2 * s / ph
        # bounce inside the photo so long clips stay on it
        cx = ((dx + 1.5) % 2.0 - 1.0) * (1 - s * w / pw)
        cy = ((dy + 1.5) % 2.0 - 1.0) * (1 - s * h / ph)
        centers.append((cx, cy))
        scales.append(s)
    out = torch.cat([_warp(img, centers[i:i + 64], scales[i:i + 64], size)
                     for i in range(0, num_frames, 64)])
    return (out.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def moving_shapes_clip(num_frames: int, size=(64, 64), photo: np.ndarray | None = None,
                       seed: int = 0, num_shapes: int = 3) -> np.ndarray:
    """Coloured discs and squares moving in straight lines over a still photo background."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    if photo is None:
        photo = procedural_image(h, w, seed)
    bg = torch.from_numpy(pan_zoom_clip(photo, 1, size, speed=0, zoom=0)[0]).float() / 255
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    shapes = []
    for _ in range(num_shapes):
        pos = torch.rand(2, generator=g) * torch.tensor([w, h])
        vel = (torch.rand(2, generator=g) - 0.5) * 4
        shapes.append((pos, vel, 3 + 0.15 * min(h, w) * torch.rand(1, generator=g).item(),
                       torch.rand(3, generator=g), bool(torch.rand(1, generator=g) < 0.5)))
    frames = []
    for t in range(num_frames):
        f = bg.clone()
        for pos, vel, r, color, disc in shapes:
            cx, cy = ((pos + vel * t) % torch.tensor([w, h])).tolist()
            if disc:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            else:
                mask = ((xx - cx).abs() < r) & ((yy - cy).abs() < r)
            f[mask] = color
        frames.append(f)
    return (torch.stack(frames).clamp(0, 1) * 255).round().byte().numpy()

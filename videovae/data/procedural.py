"""Procedurally generated training images and the list of every photo installed packages ship.

The default models are trained on these (`tools/train_default.py`): real photos alone are few
and their palette is narrow (a model trained on them paints everything orange), so colour
gradients, shapes, textures and noise of random colours fill in the rest of the colour space.
Every image is a function of its seed.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .synthetic import HELD_OUT_PHOTOS

KINDS = ("gradient", "shapes", "texture", "noise")

# every image scikit-image ships without a download; grayscale ones are copied to 3 channels
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "motorcycle_right",
                  "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "logo",
                  "camera", "brick", "grass", "gravel", "moon", "clock", "coins", "page", "text",
                  "cell", "horse")


def training_photos() -> list[str]:
    """The bundled photos a default model may train on: all of them but the held-out ones."""
    return [n for n in SKIMAGE_PHOTOS if n not in HELD_OUT_PHOTOS]


def _colors(rng: np.random.Generator, n: int) -> np.ndarray:
    """n colours spread over the RGB cube, some saturated, some dull (float, 0..1)."""
    c = rng.random((n, 3))
    dull = rng.random(n) < 0.3
    grey = c.mean(axis=1, keepdims=True)
    c[dull] = grey[dull] + (c[dull] - grey[dull]) * rng.uniform(0.1, 0.5, (int(dull.sum()), 1))
    return c


def _gradient(rng, h, w) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:  # linear, through 2-3 colours
        a = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(a) + yy * math.sin(a)
    else:  # radial from a random centre
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        t = np.hypot(yy - cy, xx - cx)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    stops = _colors(rng, int(rng.integers(2, 4)))
    pos = np.linspace(0, 1, len(stops))
    return np.stack([np.interp(t, pos, stops[:, c]) for c in range(3)], axis=-1)


def _draw_shapes(rng, img: np.ndarray) -> np.ndarray:
    """Discs, rotated boxes and triangles of random colours, filled or outlined, on `img`."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(4, 30))):
        color = tuple(float(v) for v in _colors(rng, 1)[0])
        kind = rng.integers(3)
        size = rng.uniform(0.03, 0.3) * min(h, w)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        thick = -1 if rng.random() < 0.8 else int(rng.integers(1, 4))
        if kind == 0:
            cv2.circle(img, (int(cx), int(cy)), int(size), color, thick, cv2.LINE_AA)
        elif kind == 1:
            box = ((cx, cy), (size * rng.uniform(0.5, 2), size * rng.uniform(0.5, 2)),
                   rng.uniform(0, 180))
            pts = cv2.boxPoints(box).astype(np.int32)
            cv2.drawContours(img, [pts], 0, color, thick, cv2.LINE_AA)
        else:
            pts = np.stack([cx + size * rng.uniform(-1, 1, 3),
                            cy + size * rng.uniform(-1, 1, 3)], axis=1).astype(np.int32)
            if thick < 0:
                cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
            else:
                cv2.polylines(img, [pts], True, color, thick, cv2.LINE_AA)
    return img


def _shapes(rng, h, w) -> np.ndarray:
    bg = _gradient(rng, h, w) if rng.random() < 0.7 else np.broadcast_to(
        _colors(rng, 1)[0], (h, w, 3))
    return _draw_shapes(rng, np.ascontiguousarray(bg, dtype=np.float32))


def _texture(rng, h, w) -> np.ndarray:
    """Sums of oriented gratings (stripes, checks, ripples) between two or three colours."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        a = rng.uniform(0, math.pi)
        freq = 2 * math.pi / rng.uniform(3, 40)
        phase = xx * math.cos(a) + yy * math.sin(a)
        if rng.random() < 0.3:  # wavy
            phase = phase + rng.uniform(2, 10) * np.sin(yy * 2 * math.pi / rng.uniform(20, 80))
        field += np.sin(freq * phase + rng.uniform(0, 2 * math.pi))
    if rng.random() < 0.4:  # hard edges (stripes, checks)
        field = np.sign(field)
    t = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    stops = _colors(rng, int(rng.integers(2, 4)))
    pos = np.linspace(0, 1, len(stops))
    return np.stack([np.interp(t, pos, stops[:, c]) for c in range(3)], axis=-1)


def _noise(rng, h, w) -> np.ndarray:
    """Colour noise with a 1/f-like spectrum: blurred noise summed over octaves."""
    img = np.zeros((h, w, 3), np.float32)
    total = 0.0
    for octave in range(int(rng.integers(1, 6))):
        sigma = rng.uniform(1.5, 4) * 2 ** octave
        n = rng.standard_normal((h, w, 3)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), sigma) * sigma
        amp = 2.0 ** octave / (octave + 1)
        img += amp * n
        total += amp
    img = img / (3 * img.std() + 1e-6)
    base = _colors(rng, 1)[0]
    mix = rng.uniform(0.3, 1.0)  # how much the colour channels vary apart from luminance
    lum = img.mean(axis=-1, keepdims=True)
    return base + lum + mix * (img - lum)


def procedural_image(seed: int, size: int | tuple[int, int] = 256, kind: str | None = None
                     ) -> np.ndarray:
    """A uint8 (H, W, 3) image of `kind` (gradient, shapes, texture, noise; drawn from the seed
    when None), optionally blurred or overlaid with shapes so kinds mix."""
    rng = np.random.default_rng(seed)
    h, w = (size, size) if isinstance(size, int) else size
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    img = {"gradient": _gradient, "shapes": _shapes, "texture": _texture,
           "noise": _noise}[kind](rng, h, w)
    if kind != "shapes" and rng.random() < 0.3:  # a few shapes on top
        img = _draw_shapes(rng, np.ascontiguousarray(img, dtype=np.float32))
    if rng.random() < 0.2:
        img = cv2.GaussianBlur(np.ascontiguousarray(img, np.float32), (0, 0),
                               float(rng.uniform(0.5, 2)))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)

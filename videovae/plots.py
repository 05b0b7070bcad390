"""PNG figures drawn with PIL (no plotting library needed): line plots of curves and contact
sheets of frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def plot_curves(curves: dict[str, list[list[float]]], path, title: str = "validation "
                "flow-matching loss", xlabel: str = "step") -> None:
    """Line plot of [step, loss] curves, one colour per model, with axes and a legend."""
    from PIL import Image, ImageDraw

    w, h, m = 720, 440, 60
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    points = [p for c in curves.values() for p in c]
    if not points:
        raise ValueError("no curves to plot")
    x_max = max(p[0] for p in points) or 1
    y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
    y_hi = y_hi if y_hi > y_lo else y_lo + 1

    def xy(step, loss):
        return (m + (w - 2 * m) * step / x_max,
                h - m - (h - 2 * m) * (loss - y_lo) / (y_hi - y_lo))

    draw.rectangle([m, m, w - m, h - m], outline="black")
    for k in range(5):  # ticks
        v = y_lo + (y_hi - y_lo) * k / 4
        y = xy(0, v)[1]
        draw.line([m - 4, y, m, y], fill="black")
        draw.text((4, y - 6), f"{v:.3f}", fill="black")
        s = x_max * k / 4
        x = xy(s, y_lo)[0]
        draw.line([x, h - m, x, h - m + 4], fill="black")
        draw.text((x - 10, h - m + 8), f"{s:.0f}", fill="black")
    draw.text((w // 2 - 20, h - 20), xlabel, fill="black")
    draw.text((m, 20), title, fill="black")
    for i, (name, curve) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        draw.line([xy(s, v) for s, v in curve], fill=color, width=2)
        y = m + 14 + 16 * i
        draw.line([w - m - 190, y, w - m - 170, y], fill=color, width=3)
        draw.text((w - m - 164, y - 6), name, fill=color)
    img.save(Path(path))


def contact_sheet(rows: list[tuple[str, np.ndarray]], frames: list[int], path,
                  scale: int = 2) -> None:
    """A grid of frames: one row per (label, uint8 (T, H, W, 3) video), the columns the frame
    indices `frames`, each enlarged `scale` times (nearest), the label above each row."""
    from PIL import Image, ImageDraw

    h, w = rows[0][1].shape[1:3]
    cw, ch, pad, label_h = w * scale, h * scale, 4, 16
    sheet = Image.new("RGB", (pad + len(frames) * (cw + pad), len(rows) * (ch + label_h + pad)
                              + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, video) in enumerate(rows):
        if video.shape[1:3] != (h, w):
            raise ValueError(f"row {label!r} has frames of {video.shape[1:3]}, not {(h, w)}")
        y = pad + r * (ch + label_h + pad)
        draw.text((pad, y + 2), label, fill="black")
        for c, t in enumerate(frames):
            tile = Image.fromarray(video[t]).resize((cw, ch), Image.NEAREST)
            sheet.paste(tile, (pad + c * (cw + pad), y + label_h))
            draw.text((pad + c * (cw + pad) + 2, y + label_h + 2), f"t={t}", fill="white")
    sheet.save(Path(path))

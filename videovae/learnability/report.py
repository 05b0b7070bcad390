"""The learnability report as a Markdown table and a PNG of the validation-loss curves (drawn
with PIL, so no plotting library is needed)."""

from __future__ import annotations

from pathlib import Path

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def markdown_table(results: dict[str, dict]) -> str:
    """One row per model: reconstruction and learnability side by side."""
    levels = []
    for r in results.values():
        levels = [p["t"] for p in r.get("one_step_psnr", [])] or levels
    head = ["model", "arch", "latent (Z, T, h, w)", "recon PSNR dB", "val FM loss (final)",
            "curve area", *[f"1-step PSNR t={t}" for t in levels]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        row = [name, r.get("arch", "?"), str(tuple(r["latent_shape"])),
               f"{r['recon_psnr']:.2f}" if "recon_psnr" in r else "-",
               f"{r['final_val_loss']:.4f}", f"{r['curve_area']:.4f}",
               *[f"{p['psnr']:.2f}" for p in r.get("one_step_psnr", [])]]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict[str, list[list[float]]], path, title: str = "validation "
                "flow-matching loss") -> None:
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
    draw.text((w // 2 - 20, h - 20), "step", fill="black")
    draw.text((m, 20), title, fill="black")
    for i, (name, curve) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        draw.line([xy(s, v) for s, v in curve], fill=color, width=2)
        y = m + 14 + 16 * i
        draw.line([w - m - 190, y, w - m - 170, y], fill=color, width=3)
        draw.text((w - m - 164, y - 6), name, fill=color)
    img.save(Path(path))

"""The learnability report as a Markdown table (its PNG of the validation-loss curves is
`videovae.plots.plot_curves`)."""

from __future__ import annotations


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
    return "\n".join(lines + _notes(results)) + "\n"


def _notes(results: dict[str, dict]) -> list[str]:
    """A line under the table for each model that had fewer clips than asked."""
    notes = [f"- {name}: {r['clips_used']} clips used of the {r['clips_asked']} asked (the data "
             "gives no more)" for name, r in results.items()
             if r.get("clips_used", 0) < r.get("clips_asked", 0)]
    return ["", *notes] if notes else []

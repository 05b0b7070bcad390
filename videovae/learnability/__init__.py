"""How learnable a VAE's latents are for a diffusion model: a small flow-matching probe
(`probe.py`), the command that runs it on models and data (`run.py`), its table and plot
(`report.py`)."""

from .probe import ProbeConfig, run_probe, standardize, time_shift

__all__ = ["ProbeConfig", "run_probe", "standardize", "time_shift"]

"""Imports flow downward, as the README's layout section says: checked in a fresh interpreter
for each module, by what importing it loads (`sys.modules`)."""

import json
import subprocess
import sys

import pytest

# module -> packages it must not load (directly or through anything it imports)
RULES = {
    "videovae": ["videovae.models", "videovae.convert", "videovae.io", "videovae.data",
                 "videovae.training", "torch"],
    "videovae.cli": ["torch", "videovae.models", "videovae.convert", "videovae.training"],
    "videovae.config": ["torch", "videovae.models", "videovae.io", "videovae.data"],
    "videovae.frames": ["videovae.models", "videovae.io", "videovae.data", "videovae.convert"],
    "videovae.latents": ["videovae.models", "videovae.io", "videovae.data", "videovae.convert"],
    "videovae.models": ["videovae.convert", "videovae.io", "videovae.data", "videovae.training",
                        "videovae.integrations", "videovae.files"],
    "videovae.io.video": ["videovae.models", "videovae.convert", "videovae.data",
                          "videovae.io.latent_file"],
    "videovae.io.listing": ["videovae.models", "videovae.convert", "videovae.data", "torch"],
    "videovae.io.atomic": ["videovae.models", "videovae.convert", "videovae.data"],
    "videovae.io.latent_file": ["videovae.models", "videovae.convert", "videovae.data"],
    "videovae.convert": ["videovae.io", "videovae.data", "videovae.training"],
    "videovae.data": ["videovae.models", "videovae.convert", "videovae.training"],
}


@pytest.mark.parametrize("module", sorted(RULES))
def test_module_loads_nothing_above_it(module):
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = json.loads(out.splitlines()[-1])
    bad = sorted({m for m in loaded for p in RULES[module] if m == p or m.startswith(p + ".")})
    assert not bad, f"importing {module} loads {bad}"
